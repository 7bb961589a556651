package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// The guest's initramfs is two newc archives concatenated into one file
// (the kernel unpacks them in turn):
//
//   - the base: busybox, the host programs a scenario needs with their
//     shared libraries, and the kernel modules. It depends only on the
//     kernel and on installed packages, so it is cached, keyed by a hash of
//     every input's path, size and modification time;
//   - the run archive: /init and the freshly built Go programs, written for
//     every run (small, and always current).
//
// Files land in the guest under the paths they have on the host, so a
// dynamic program finds its loader and libraries where ldd found them.

// lddDeps parses ldd's output into the absolute paths of the libraries and
// loader a program needs. A static program yields none.
func lddDeps(out string) []string {
	var deps []string
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.Contains(l, "not a dynamic executable") || strings.Contains(l, "statically linked") {
			continue
		}
		// "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)"
		// "/lib64/ld-linux-x86-64.so.2 (0x...)"
		// "linux-vdso.so.1 (0x...)"
		if _, after, ok := strings.Cut(l, "=>"); ok {
			f := strings.Fields(after)
			if len(f) > 0 && strings.HasPrefix(f[0], "/") {
				deps = append(deps, f[0])
			}
			continue
		}
		f := strings.Fields(l)
		if len(f) > 0 && strings.HasPrefix(f[0], "/") {
			deps = append(deps, f[0])
		}
	}
	return deps
}

// hostClosure returns a program and every file it needs at run time: the
// ldd closure, plus libgcc_s.so.1, which glibc dlopens (for thread exit and
// cancellation) without ldd listing it.
func hostClosure(prog string) ([]string, error) {
	out, err := exec.Command("ldd", prog).CombinedOutput()
	files := []string{prog}
	if err != nil {
		// ldd exits non-zero for static programs.
		if strings.Contains(string(out), "not a dynamic executable") {
			return files, nil
		}
		return nil, fmt.Errorf("ldd %s: %v: %s", prog, err, strings.TrimSpace(string(out)))
	}
	deps := lddDeps(string(out))
	if len(deps) == 0 {
		return files, nil
	}
	files = append(files, deps...)
	for _, d := range []string{"/lib/x86_64-linux-gnu/libgcc_s.so.1", "/usr/lib/x86_64-linux-gnu/libgcc_s.so.1"} {
		if fileExists(d) {
			files = append(files, d)
			break
		}
	}
	return files, nil
}

// baseSpec is what goes into the cached base archive.
type baseSpec struct {
	Kernel   *kernel
	Modules  []*modInfo
	Busybox  string   // host path; lands at /bin/busybox, with /bin/sh
	Programs []string // absolute host paths; closures are added
	Files    []string // extra host files (configuration), copied if present
	Links    map[string]string
}

// fileSet is a set of host files, each copied to the same path in the
// guest.
type fileSet []string

// manifest lists every input of the base archive with its size and time:
// its hash names the cached archive.
func (b *baseSpec) manifest() (files fileSet, key string, err error) {
	seen := map[string]bool{}
	add := func(p string) {
		if !seen[p] {
			seen[p] = true
			files = append(files, p)
		}
	}
	for _, p := range append([]string{b.Busybox}, b.Programs...) {
		c, err := hostClosure(p)
		if err != nil {
			return nil, "", err
		}
		for _, f := range c {
			add(f)
		}
	}
	for _, f := range b.Files {
		if fileExists(f) {
			add(f)
		}
	}
	sort.Strings(files)
	h := sha256.New()
	fmt.Fprintf(h, "vmlab base v1\nkernel %s\nbusybox %s\n", b.Kernel.Version, b.Busybox)
	for _, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			return nil, "", err
		}
		fmt.Fprintf(h, "file %s %d %d\n", f, fi.Size(), fi.ModTime().UnixNano())
	}
	for _, m := range b.Modules {
		fmt.Fprintf(h, "module %s\n", m.Path)
	}
	links := make([]string, 0, len(b.Links))
	for l := range b.Links {
		links = append(links, l)
	}
	sort.Strings(links)
	for _, l := range links {
		fmt.Fprintf(h, "link %s %s\n", l, b.Links[l])
	}
	return files, hex.EncodeToString(h.Sum(nil))[:16], nil
}

// ensureBase returns the path of the cached base archive, building it when
// its inputs changed.
func ensureBase(p *progress, cache string, b *baseSpec) (string, error) {
	files, key, err := b.manifest()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(cache, "initramfs")
	path := filepath.Join(dir, "base-"+key+".cpio")
	if fileExists(path) {
		p.stepf("initramfs base %s: cached", filepath.Base(path))
		return path, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	t := newCpioTree()
	for _, d := range []string{"bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp", "run", "mnt", "vmlab", "lib/modules/" + b.Kernel.Version} {
		t.Dir(d)
	}
	for _, f := range files {
		data, err := os.ReadFile(f) // follows links: the guest gets the content
		if err != nil {
			return "", err
		}
		fi, err := os.Stat(f)
		if err != nil {
			return "", err
		}
		t.File(f, uint32(fi.Mode().Perm()), data)
	}
	for _, m := range b.Modules {
		data, err := os.ReadFile(filepath.Join(b.Kernel.ModDir, m.Path))
		if err != nil {
			return "", err
		}
		t.File("lib/modules/"+b.Kernel.Version+"/"+m.Path, 0o644, data)
	}
	bb, err := os.ReadFile(b.Busybox)
	if err != nil {
		return "", err
	}
	t.File("bin/busybox", 0o755, bb)
	t.Symlink("bin/sh", "busybox")
	for l, target := range b.Links {
		if !t.Has(l) {
			t.Symlink(l, target)
		}
	}
	var buf bytes.Buffer
	if err := t.WriteTo(&buf, 0); err != nil {
		return "", err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, buf.Bytes(), 0o644); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", err
	}
	old, _ := filepath.Glob(filepath.Join(dir, "base-*.cpio"))
	for _, o := range old {
		if o != path {
			os.Remove(o)
		}
	}
	p.stepf("initramfs base built: %d files, %d modules, %.1f MiB", len(files), len(b.Modules), float64(buf.Len())/(1<<20))
	return path, nil
}
