//go:build linux

// Command guestcheck runs inside the vmlab guest. It checks, independently
// of package pmem, that a directory really gives DAX with MAP_SYNC: it maps
// a file there with MAP_SHARED_VALIDATE|MAP_SYNC, writes and reads back
// through the mapping, and reports the file's STATX_ATTR_DAX attribute and
// the mount's options. As a control it expects MAP_SYNC to be refused
// (EOPNOTSUPP) in a directory on tmpfs, which shows that the check can fail.
//
// It prints one marker line per directory for the host:
//
//	@@VMLAB check mapsync=ok dir=/mnt/pmem0 fs=0xef53 statx_dax=1 mount_dax=1
//	@@VMLAB check mapsync=refused dir=/tmp fs=0x1021994 err=EOPNOTSUPP control=ok
//
// and exits 1 when the DAX directory fails or the control succeeds.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

const size = 2 << 20

func main() {
	dax := flag.String("dax", "", "directory where MAP_SYNC must succeed")
	control := flag.String("control", "", "directory where MAP_SYNC must be refused (tmpfs)")
	flag.Parse()
	if *dax == "" {
		fmt.Fprintln(os.Stderr, "guestcheck: -dax is required")
		os.Exit(2)
	}
	ok := true
	r := probe(*dax)
	r.print("")
	if r.err != nil {
		fmt.Printf("MAP_SYNC FAILED on %s: %v\n", *dax, r.err)
		ok = false
	} else {
		fmt.Printf("MAP_SYNC works on %s (statx DAX attribute %v, mount option dax %v)\n", *dax, r.statxDAX, r.mountDAX)
		if !r.statxDAX {
			fmt.Printf("but the file is not DAX by statx\n")
			ok = false
		}
	}
	if *control != "" {
		c := probe(*control)
		if c.err == nil {
			c.print("control=FAIL")
			fmt.Printf("MAP_SYNC unexpectedly works on %s: the check proves nothing\n", *control)
			ok = false
		} else {
			good := errors.Is(c.err, unix.EOPNOTSUPP)
			tag := "control=ok"
			if !good {
				tag = "control=FAIL"
				ok = false
			}
			c.print(tag)
			fmt.Printf("MAP_SYNC refused on %s as it should be: %v\n", *control, c.err)
		}
	}
	if !ok {
		os.Exit(1)
	}
}

type result struct {
	dir      string
	fsType   int64
	statxDAX bool
	mountDAX bool
	err      error
	stage    string
}

func (r result) print(extra string) {
	state := "ok"
	if r.err != nil {
		state = "refused"
	}
	line := fmt.Sprintf("@@VMLAB check mapsync=%s dir=%s fs=%#x statx_dax=%d mount_dax=%d", state, r.dir, r.fsType, b2i(r.statxDAX), b2i(r.mountDAX))
	if r.err != nil {
		line += " stage=" + r.stage + " err=" + errName(r.err)
	}
	if extra != "" {
		line += " " + extra
	}
	fmt.Println(line)
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func errName(err error) string {
	var en unix.Errno
	if errors.As(err, &en) {
		if en == unix.EOPNOTSUPP {
			return "EOPNOTSUPP" // ErrnoName says ENOTSUP, the same number
		}
		if n := unix.ErrnoName(en); n != "" {
			return n
		}
	}
	return strings.ReplaceAll(err.Error(), " ", "_")
}

func probe(dir string) (r result) {
	r.dir = dir
	r.mountDAX = mountHasDAX(dir)
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err == nil {
		r.fsType = int64(fs.Type)
	}
	path := filepath.Join(dir, ".vmlab-mapsync-check")
	defer os.Remove(path)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR|os.O_TRUNC, 0o600)
	if err != nil {
		r.err, r.stage = err, "open"
		return r
	}
	defer f.Close()
	if err := unix.Fallocate(int(f.Fd()), 0, 0, size); err != nil {
		if err := f.Truncate(size); err != nil {
			r.err, r.stage = err, "size"
			return r
		}
	}
	var st unix.Statx_t
	if err := unix.Statx(int(f.Fd()), "", unix.AT_EMPTY_PATH, unix.STATX_BASIC_STATS, &st); err == nil {
		r.statxDAX = st.Attributes_mask&unix.STATX_ATTR_DAX != 0 && st.Attributes&unix.STATX_ATTR_DAX != 0
	}
	buf, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED_VALIDATE|unix.MAP_SYNC)
	if err != nil {
		r.err, r.stage = err, "mmap"
		return r
	}
	pattern := []byte("vmlab MAP_SYNC probe ")
	for i := 0; i+len(pattern) <= len(buf); i += 4096 {
		copy(buf[i:], pattern)
	}
	if err := unix.Munmap(buf); err != nil {
		r.err, r.stage = err, "munmap"
		return r
	}
	got := make([]byte, len(pattern))
	if _, err := f.ReadAt(got, size-4096); err != nil || !bytes.Equal(got, pattern) {
		r.err, r.stage = fmt.Errorf("read back %q (%v)", got, err), "readback"
	}
	return r
}

// mountHasDAX reports whether the mount holding dir lists the dax option.
func mountHasDAX(dir string) bool {
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return false
	}
	best, dax := "", false
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 4 {
			continue
		}
		mp := f[1]
		if (dir == mp || strings.HasPrefix(dir, strings.TrimSuffix(mp, "/")+"/")) && len(mp) >= len(best) {
			best = mp
			dax = false
			for _, o := range strings.Split(f[3], ",") {
				if o == "dax" || o == "dax=always" {
					dax = true
				}
			}
		}
	}
	return dax
}
