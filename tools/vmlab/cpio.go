package main

import (
	"bufio"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
)

// The initramfs is written by this program, in the kernel's "newc" cpio
// format, straight from Go: no staging tree on the host, so nothing can be
// copied through a busybox applet symlink onto the host's own /bin/busybox
// (the pitfall the lab notes warn about), and no cpio(1) is needed.

const (
	cpioModeDir     = 0o040000
	cpioModeFile    = 0o100000
	cpioModeSymlink = 0o120000
)

// cpioEntry is one member of an archive: a directory, a regular file or a
// symbolic link (Target set).
type cpioEntry struct {
	Name   string // path inside the archive, without a leading slash
	Mode   uint32 // type bits and permissions
	Data   []byte // a regular file's contents
	Target string // a symlink's target
}

// cpioTree collects entries by path; later additions of the same path
// replace earlier ones, and every parent directory is created implicitly.
type cpioTree struct {
	entries map[string]cpioEntry
}

func newCpioTree() *cpioTree { return &cpioTree{entries: map[string]cpioEntry{}} }

func cleanArchivePath(p string) string {
	p = path.Clean("/" + p)
	return strings.TrimPrefix(p, "/")
}

func (t *cpioTree) mkdirAll(dir string) {
	dir = cleanArchivePath(dir)
	for dir != "" && dir != "." {
		if e, ok := t.entries[dir]; ok && e.Mode&cpioModeDir != 0 {
			return
		}
		t.entries[dir] = cpioEntry{Name: dir, Mode: cpioModeDir | 0o755}
		dir = path.Dir(dir)
		if dir == "." {
			return
		}
	}
}

// Dir adds a directory (and its parents).
func (t *cpioTree) Dir(name string) { t.mkdirAll(name) }

// File adds a regular file with the given permissions.
func (t *cpioTree) File(name string, perm uint32, data []byte) {
	name = cleanArchivePath(name)
	t.mkdirAll(path.Dir(name))
	t.entries[name] = cpioEntry{Name: name, Mode: cpioModeFile | perm&0o7777, Data: data}
}

// Symlink adds a symbolic link name -> target.
func (t *cpioTree) Symlink(name, target string) {
	name = cleanArchivePath(name)
	t.mkdirAll(path.Dir(name))
	t.entries[name] = cpioEntry{Name: name, Mode: cpioModeSymlink | 0o777, Target: target}
}

// Has reports whether the tree holds path name.
func (t *cpioTree) Has(name string) bool {
	_, ok := t.entries[cleanArchivePath(name)]
	return ok
}

// WriteTo writes the tree as a newc archive, parents before children, with
// the trailer. Inode numbers start at ino0, so that several archives
// concatenated into one initrd never share an inode number.
func (t *cpioTree) WriteTo(w io.Writer, ino0 uint32) error {
	names := make([]string, 0, len(t.entries))
	for n := range t.entries {
		names = append(names, n)
	}
	sort.Strings(names) // a parent sorts before its children
	bw := bufio.NewWriterSize(w, 1<<20)
	cw := &cpioWriter{w: bw, ino: ino0}
	for _, n := range names {
		if err := cw.write(t.entries[n]); err != nil {
			return err
		}
	}
	if err := cw.trailer(); err != nil {
		return err
	}
	return bw.Flush()
}

type cpioWriter struct {
	w   io.Writer
	ino uint32
	off int64
}

func (c *cpioWriter) put(b []byte) error {
	n, err := c.w.Write(b)
	c.off += int64(n)
	return err
}

func (c *cpioWriter) pad() error {
	if r := c.off % 4; r != 0 {
		return c.put(make([]byte, 4-r))
	}
	return nil
}

func (c *cpioWriter) header(name string, mode, nlink uint32, size int) error {
	c.ino++
	h := fmt.Sprintf("070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		c.ino, mode, 0, 0, nlink, 0, size, 0, 0, 0, 0, len(name)+1, 0)
	if err := c.put([]byte(h)); err != nil {
		return err
	}
	if err := c.put(append([]byte(name), 0)); err != nil {
		return err
	}
	return c.pad()
}

func (c *cpioWriter) write(e cpioEntry) error {
	data := e.Data
	nlink := uint32(1)
	switch {
	case e.Mode&0o170000 == cpioModeSymlink:
		data = []byte(e.Target)
	case e.Mode&0o170000 == cpioModeDir:
		data, nlink = nil, 2
	}
	if err := c.header(e.Name, e.Mode, nlink, len(data)); err != nil {
		return err
	}
	if err := c.put(data); err != nil {
		return err
	}
	return c.pad()
}

func (c *cpioWriter) trailer() error {
	if err := c.header("TRAILER!!!", 0, 1, 0); err != nil {
		return err
	}
	// The kernel reads archives in 512-byte blocks' worth of padding happily,
	// but concatenated archives must each start 4-byte aligned; pad to 512
	// like cpio(1) does.
	if r := c.off % 512; r != 0 {
		return c.put(make([]byte, 512-r))
	}
	return nil
}
