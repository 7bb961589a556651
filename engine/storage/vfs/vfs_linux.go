//go:build linux

package vfs

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// Sync is fdatasync: it flushes the data and the metadata needed to read it
// back (the size), not the modification time.
func (f *osFile) Sync() error {
	for {
		err := unix.Fdatasync(int(f.fd))
		if err != unix.EINTR {
			if err != nil {
				return &os.PathError{Op: "fdatasync", Path: f.f.Name(), Err: err}
			}
			return nil
		}
	}
}

// Preallocate uses fallocate(2) in its default mode, which reserves the
// blocks and extends the file size, so that later writes inside the file do
// not allocate blocks and change no size (cheaper fdatasync). File systems
// without fallocate get a sparse extension by ftruncate instead.
func (f *osFile) Preallocate(size int64) error {
	cur, err := f.Size()
	if err != nil {
		return err
	}
	if cur >= size {
		return nil
	}
	for {
		err = unix.Fallocate(int(f.fd), 0, 0, size)
		if err != unix.EINTR {
			break
		}
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.ENOSYS), errors.Is(err, unix.EINVAL):
		return f.f.Truncate(size)
	default:
		return &os.PathError{Op: "fallocate", Path: f.f.Name(), Err: err}
	}
}

type osLock struct{ f *os.File }

func (l osLock) Close() error { return l.f.Close() } // closing the descriptor drops the flock

// lockOS takes flock(LOCK_EX|LOCK_NB). flock locks belong to the open file
// description, so a second Lock in the same process fails too.
func lockOS(name string) (io.Closer, error) {
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("vfs: %s is locked by another user", name)
		}
		return nil, &os.PathError{Op: "flock", Path: name, Err: err}
	}
	return osLock{f}, nil
}
