// Package vfs is the small file-system interface the storage layer writes
// through, in the spirit of Pebble's vfs: an implementation on the operating
// system (Default) and a crashable one in memory (MemFS) that tests and the
// simulator use to lose exactly what a power failure may lose.
//
// Durability vocabulary, shared by every implementation:
//
//   - File.WriteAt, Truncate and Preallocate change a file's contents at once
//     for every reader, but they are durable only after File.Sync returns nil.
//   - A name created, renamed or removed in a directory is durable only after
//     SyncDir of that directory returns nil. Syncing a file does not make its
//     name durable.
//
// Paths are slash- or OS-separated as filepath understands them.
package vfs

import (
	"io"
	"os"
)

// FS is what the storage layer needs from a file system.
type FS interface {
	// Create creates name for reading and writing, truncating any file of that name.
	Create(name string) (File, error)
	// OpenReadWrite opens the existing file name for reading and writing.
	OpenReadWrite(name string) (File, error)
	// Open opens the existing file name for reading only.
	Open(name string) (File, error)
	// Remove removes the file name.
	Remove(name string) error
	// Rename renames oldname to newname, replacing newname if it exists. Both
	// must be in the same directory.
	Rename(oldname, newname string) error
	// MkdirAll creates dir and its parents where missing.
	MkdirAll(dir string) error
	// List returns the names (not paths) of the entries in dir, sorted.
	List(dir string) ([]string, error)
	// SyncDir makes the directory entries of dir durable.
	SyncDir(dir string) error
	// Lock takes an exclusive lock on the file name (created if missing) and
	// returns what releases it. A second Lock of the same file fails while the
	// first is held, in this process or another.
	Lock(name string) (io.Closer, error)
}

// File is an open file. Offsets are explicit: a File has no file position.
type File interface {
	io.ReaderAt
	io.WriterAt
	// Size returns the file's current size in bytes.
	Size() (int64, error)
	// Sync makes the file's contents and size durable (fdatasync where the
	// system has it).
	Sync() error
	// Truncate sets the file's size; bytes beyond the old end read as zero.
	Truncate(size int64) error
	// Preallocate reserves space so the file holds at least size bytes, which
	// read as zero beyond the old end; it never shrinks the file. Where the
	// system cannot reserve space it extends the file sparsely instead.
	Preallocate(size int64) error
	// Close closes the file.
	Close() error
}

// Default is the operating system's file system.
var Default FS = osFS{}

type osFS struct{}

func (osFS) Create(name string) (File, error) {
	return openOS(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC)
}

func (osFS) OpenReadWrite(name string) (File, error) { return openOS(name, os.O_RDWR) }

func (osFS) Open(name string) (File, error) { return openOS(name, os.O_RDONLY) }

func (osFS) Remove(name string) error { return os.Remove(name) }

func (osFS) Rename(oldname, newname string) error { return os.Rename(oldname, newname) }

func (osFS) MkdirAll(dir string) error { return os.MkdirAll(dir, 0o755) }

func (osFS) List(dir string) ([]string, error) {
	des, err := os.ReadDir(dir) // sorted by name
	if err != nil {
		return nil, err
	}
	names := make([]string, len(des))
	for i, de := range des {
		names[i] = de.Name()
	}
	return names, nil
}

func (osFS) SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	if err := d.Sync(); err != nil { // fsync: directories have no fdatasync
		d.Close()
		return err
	}
	return d.Close()
}

func (osFS) Lock(name string) (io.Closer, error) { return lockOS(name) }

func openOS(name string, flag int) (File, error) {
	f, err := os.OpenFile(name, flag, 0o644)
	if err != nil {
		return nil, err
	}
	return &osFile{f: f, fd: f.Fd()}, nil
}

// osFile is a File on the operating system. fd is taken once so that the
// hot path (WriteAt, Sync) makes no allocation.
type osFile struct {
	f  *os.File
	fd uintptr
}

func (f *osFile) ReadAt(p []byte, off int64) (int, error)  { return f.f.ReadAt(p, off) }
func (f *osFile) WriteAt(p []byte, off int64) (int, error) { return f.f.WriteAt(p, off) }
func (f *osFile) Truncate(size int64) error                { return f.f.Truncate(size) }
func (f *osFile) Close() error                             { return f.f.Close() }

func (f *osFile) Size() (int64, error) {
	fi, err := f.f.Stat()
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}
