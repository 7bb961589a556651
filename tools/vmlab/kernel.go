package main

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"
)

// kernel is Debian's stock kernel, unpacked in the cache.
type kernel struct {
	Version string // e.g. 6.1.0-48-amd64
	Dir     string // the unpacked package
	Vmlinuz string // the bzImage
	Vmlinux string // the ELF inside it, booted through PVH; "" if unusable
	ModDir  string // lib/modules/<version>
}

// bootImage is what QEMU's -kernel gets: the ELF (init in about 4 s under
// TCG, against about 10 s for the bzImage, which decompresses itself under
// emulation) when there is one.
func (k *kernel) bootImage() string {
	if k.Vmlinux != "" {
		return k.Vmlinux
	}
	return k.Vmlinuz
}

var kernelDepRE = regexp.MustCompile(`(?m)^\s*Depends:\s*<?(linux-image-([0-9][^\s>]*-amd64))>?\s*$`)

// parseKernelDepends returns the version that `apt-cache depends
// linux-image-amd64` names (the kernel Debian currently ships), or "".
func parseKernelDepends(out string) string {
	m := kernelDepRE.FindStringSubmatch(out)
	if m == nil {
		return ""
	}
	return m[2]
}

// resolveKernelVersion asks apt which stock kernel to use, updating the
// package lists once if apt knows none.
func resolveKernelVersion(h *host) (string, error) {
	out, err := h.apt("apt-cache", "depends", "linux-image-amd64")
	if v := parseKernelDepends(out); err == nil && v != "" {
		return v, nil
	}
	if uerr := h.aptUpdate(); uerr != nil {
		return "", fmt.Errorf("apt-cache knows no linux-image-amd64 and apt-get update is not possible: %v", uerr)
	}
	out, err = h.apt("apt-cache", "depends", "linux-image-amd64")
	if v := parseKernelDepends(out); err == nil && v != "" {
		return v, nil
	}
	return "", fmt.Errorf("apt-cache depends linux-image-amd64 names no kernel: %v", err)
}

// cachedKernels lists the complete kernels in the cache, newest name last.
func cachedKernels(cache string) []string {
	ents, _ := os.ReadDir(filepath.Join(cache, "kernel"))
	var vs []string
	for _, e := range ents {
		if e.IsDir() && fileExists(filepath.Join(cache, "kernel", e.Name(), "complete")) {
			vs = append(vs, e.Name())
		}
	}
	sort.Strings(vs)
	return vs
}

func openKernel(cache, ver string) (*kernel, bool) {
	dir := filepath.Join(cache, "kernel", ver)
	if !fileExists(filepath.Join(dir, "complete")) {
		return nil, false
	}
	k := &kernel{Version: ver, Dir: dir, Vmlinuz: filepath.Join(dir, "boot", "vmlinuz-"+ver), ModDir: filepath.Join(dir, "lib", "modules", ver)}
	if v := filepath.Join(dir, "vmlinux"); fileExists(v) {
		k.Vmlinux = v
	}
	return k, true
}

// ensureKernel returns the kernel version want (or apt's current stock
// kernel when want is ""), downloading and unpacking it into the cache the
// first time.
func ensureKernel(h *host, cache, want string) (*kernel, error) {
	ver := want
	if ver == "" {
		v, err := resolveKernelVersion(h)
		if err != nil {
			if vs := cachedKernels(cache); len(vs) > 0 {
				ver = vs[len(vs)-1]
				h.p.stepf("apt names no kernel (%v); using the cached %s", firstLine(err.Error()), ver)
			} else {
				return nil, skipf("no kernel: %v", err)
			}
		} else {
			ver = v
		}
	}
	if k, ok := openKernel(cache, ver); ok {
		h.p.stepf("kernel %s: cached", ver)
		return k, nil
	}
	if _, ok := lookTool("dpkg-deb"); !ok {
		return nil, skipf("kernel %s is not cached and there is no dpkg-deb to unpack it", ver)
	}
	kdir := filepath.Join(cache, "kernel")
	dl := filepath.Join(kdir, "download")
	os.RemoveAll(dl)
	if err := os.MkdirAll(dl, 0o755); err != nil {
		return nil, err
	}
	defer os.RemoveAll(dl)
	t0 := time.Now()
	pkg := "linux-image-" + ver
	h.p.stepf("downloading %s (apt-get download)", pkg)
	args := []string{"download", pkg}
	if h.root {
		// apt's _apt user cannot write into root's cache; don't try.
		args = append([]string{"-o", "APT::Sandbox::User=root"}, args...)
	}
	if _, err := aptIn(h, dl, args...); err != nil {
		if uerr := h.aptUpdate(); uerr != nil {
			return nil, skipf("cannot download %s: %v (and no apt-get update: %v)", pkg, err, uerr)
		}
		if _, err := aptIn(h, dl, args...); err != nil {
			return nil, skipf("cannot download %s: %v", pkg, err)
		}
	}
	debs, _ := filepath.Glob(filepath.Join(dl, "*.deb"))
	if len(debs) != 1 {
		return nil, fmt.Errorf("apt-get download %s left %d .deb files", pkg, len(debs))
	}
	h.p.stepf("downloaded %s in %.1fs; unpacking", filepath.Base(debs[0]), time.Since(t0).Seconds())
	t0 = time.Now()
	tmp := filepath.Join(kdir, ver+".tmp")
	os.RemoveAll(tmp)
	if err := run("", "dpkg-deb", "-x", debs[0], tmp); err != nil {
		return nil, err
	}
	os.RemoveAll(filepath.Join(tmp, "usr")) // documentation only
	k := &kernel{Version: ver, Vmlinuz: filepath.Join(tmp, "boot", "vmlinuz-"+ver)}
	bz, err := os.ReadFile(k.Vmlinuz)
	if err != nil {
		return nil, fmt.Errorf("the package has no kernel image: %w", err)
	}
	if err := writeVmlinux(bz, filepath.Join(tmp, "vmlinux")); err != nil {
		h.p.stepf("cannot use the ELF vmlinux (%v); booting the bzImage (slower)", err)
	}
	if err := os.WriteFile(filepath.Join(tmp, "complete"), []byte(time.Now().UTC().Format(time.RFC3339)+"\n"), 0o644); err != nil {
		return nil, err
	}
	dir := filepath.Join(kdir, ver)
	os.RemoveAll(dir)
	if err := os.Rename(tmp, dir); err != nil {
		return nil, err
	}
	// Older kernels are dead weight (about 400 MB each).
	for _, v := range cachedKernels(cache) {
		if v != ver {
			os.RemoveAll(filepath.Join(kdir, v))
		}
	}
	h.p.stepf("kernel %s unpacked in %.1fs", ver, time.Since(t0).Seconds())
	k, _ = openKernel(cache, ver)
	return k, nil
}

func aptIn(h *host, dir string, args ...string) (string, error) {
	path, ok := lookTool("apt-get")
	if !ok {
		return "", errors.New("no apt-get")
	}
	cmd := exec.Command(path, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("apt-get %s: %w\n%s", strings.Join(args, " "), err, tail(out.String(), 8))
	}
	return out.String(), nil
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

// bzImagePayload locates the compressed kernel in a bzImage (boot protocol
// 2.08+: payload_offset and payload_length in the setup header, relative to
// the protected-mode code after the setup sectors) and names its format.
// olen is the uncompressed size, which the build appends as the payload's
// last four bytes (gzip's own trailer holds it already).
func bzImagePayload(bz []byte) (payload []byte, format string, olen uint32, err error) {
	if len(bz) < 0x250 || string(bz[0x202:0x206]) != "HdrS" {
		return nil, "", 0, errors.New("not a bzImage (no HdrS header)")
	}
	if v := binary.LittleEndian.Uint16(bz[0x206:]); v < 0x208 {
		return nil, "", 0, fmt.Errorf("boot protocol %#x has no payload fields", v)
	}
	setup := int(bz[0x1f1])
	if setup == 0 {
		setup = 4
	}
	off := (setup+1)*512 + int(binary.LittleEndian.Uint32(bz[0x248:]))
	n := int(binary.LittleEndian.Uint32(bz[0x24c:]))
	if n < 8 || off < 0 || off+n > len(bz) {
		return nil, "", 0, fmt.Errorf("payload [%d, +%d) outside the %d-byte image", off, n, len(bz))
	}
	payload = bz[off : off+n]
	olen = binary.LittleEndian.Uint32(payload[n-4:])
	switch {
	case bytes.HasPrefix(payload, []byte{0x1f, 0x8b}):
		format = "gzip"
	case bytes.HasPrefix(payload, []byte("\xfd7zXZ\x00")):
		format = "xz"
	case bytes.HasPrefix(payload, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		format = "zstd"
	case bytes.HasPrefix(payload, []byte{0x02, 0x21, 0x4c, 0x18}):
		format = "lz4"
	case bytes.HasPrefix(payload, []byte{0x5d, 0x00, 0x00}):
		format = "lzma"
	default:
		return nil, "", 0, fmt.Errorf("unknown payload format % x", payload[:6])
	}
	return payload, format, olen, nil
}

// writeVmlinux extracts the ELF kernel from a bzImage into dst and checks
// that it has a PVH entry point (what lets QEMU boot an ELF directly).
func writeVmlinux(bz []byte, dst string) error {
	payload, format, olen, err := bzImagePayload(bz)
	if err != nil {
		return err
	}
	var out []byte
	switch format {
	case "gzip":
		zr, err := gzip.NewReader(bytes.NewReader(payload))
		if err != nil {
			return err
		}
		out, err = io.ReadAll(zr)
		if err != nil {
			return err
		}
	case "xz", "zstd", "lz4", "lzma":
		tool := map[string][]string{
			"xz": {"xz", "-dc", "--single-stream"}, "zstd": {"zstd", "-dcq"},
			"lz4": {"lz4", "-dc"}, "lzma": {"xz", "-dc", "--format=lzma"},
		}[format]
		path, ok := lookTool(tool[0])
		if !ok {
			return fmt.Errorf("the kernel is %s-compressed and there is no %s", format, tool[0])
		}
		cmd := exec.Command(path, tool[1:]...)
		cmd.Stdin = bytes.NewReader(payload[:len(payload)-4])
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err = cmd.Output()
		if err != nil {
			return fmt.Errorf("%s: %v: %s", tool[0], err, strings.TrimSpace(stderr.String()))
		}
	}
	if uint32(len(out)) != olen {
		return fmt.Errorf("decompressed %d bytes, the image says %d", len(out), olen)
	}
	if err := checkPVH(out); err != nil {
		return err
	}
	return os.WriteFile(dst, out, 0o644)
}

// checkPVH checks that an ELF kernel carries XEN_ELFNOTE_PHYS32_ENTRY, the
// note QEMU's PVH loader needs.
func checkPVH(image []byte) error {
	f, err := elf.NewFile(bytes.NewReader(image))
	if err != nil {
		return fmt.Errorf("not an ELF: %w", err)
	}
	const phys32Entry = 18
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE {
			continue
		}
		b, err := io.ReadAll(p.Open())
		if err != nil {
			return err
		}
		for len(b) >= 12 {
			nsz, dsz, typ := binary.LittleEndian.Uint32(b), binary.LittleEndian.Uint32(b[4:]), binary.LittleEndian.Uint32(b[8:])
			name := b[12:min(len(b), 12+int(nsz))]
			if typ == phys32Entry && bytes.HasPrefix(name, []byte("Xen")) {
				return nil
			}
			adv := 12 + int((nsz+3)&^3) + int((dsz+3)&^3)
			if adv > len(b) {
				break
			}
			b = b[adv:]
		}
	}
	return errors.New("no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY)")
}
