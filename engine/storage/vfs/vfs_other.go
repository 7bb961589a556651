//go:build !linux

package vfs

import (
	"io"
	"os"
)

// Sync is fsync where the system offers no fdatasync.
func (f *osFile) Sync() error { return f.f.Sync() }

// Preallocate extends the file sparsely: this build knows no fallocate.
func (f *osFile) Preallocate(size int64) error {
	cur, err := f.Size()
	if err != nil {
		return err
	}
	if cur >= size {
		return nil
	}
	return f.f.Truncate(size)
}

// lockOS only creates the file: this build takes no advisory lock, so two
// users of one directory are not detected.
func lockOS(name string) (io.Closer, error) {
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	return f, nil
}
