package pmem

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// DefaultSize is the size of a new log file when Options.Size is zero.
const DefaultSize = 64 << 20

// Options configure Open.
type Options struct {
	// Size is the size in bytes of a new log file, rounded up to 4 KiB; zero
	// means DefaultSize. An existing file keeps its size.
	Size int64
	// RequireDAX makes Open fail with ErrNotDAX unless the mapping is DAX
	// with MAP_SYNC in force.
	RequireDAX bool
	// Flush overrides how stores are made durable; FlushAuto picks the best.
	// A CPU flush on a page-cache mapping is refused: it would not persist.
	Flush FlushMethod
	// Prefault maps every page of the file writable at Open
	// (madvise MADV_POPULATE_WRITE), in the spirit of PMDK's
	// prefault.at_open, so that appends never take a page fault. On tmpfs
	// with 4 KiB pages a fault costs about a microsecond and an append of
	// 64 B commands takes one every ~40 commands, which measurably slows a
	// busy replica; prefaulting costs open time instead (about 0.2 s per
	// GiB on tmpfs here) and page tables (2 MiB per GiB with 4 KiB pages).
	// A kernel without MADV_POPULATE_WRITE (before 5.14) leaves the log
	// faulting on demand, and Status says so.
	Prefault bool
}

// Open opens the log file at path, creating and formatting it when it does
// not exist (or is empty), maps it shared, recovers the committed state and
// returns the log. Creation writes a complete file under a temporary name and
// links it into place, so a crash never leaves a half-formatted log at path.
//
// The mapping is MAP_SHARED_VALIDATE|MAP_SYNC where the kernel accepts it
// (a DAX file system): flushed stores are then durable without system calls.
// Elsewhere it falls back to MAP_SHARED and says so in Status: on tmpfs the
// log survives process crashes only; on an ordinary file system every fence
// is an msync. The file is locked (flock) while open.
func Open(path string, opts Options) (*Log, error) {
	size := opts.Size
	if size == 0 {
		size = DefaultSize
	}
	size = (size + pageSize - 1) &^ (pageSize - 1)
	if size < MinSize {
		return nil, fmt.Errorf("pmem: %s: size %d is below the minimum of %d", path, opts.Size, MinSize)
	}
	if fi, err := os.Stat(path); errors.Is(err, os.ErrNotExist) || (err == nil && fi.Mode().IsRegular() && fi.Size() == 0) {
		if err := create(path, size, err == nil); err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, fmt.Errorf("pmem: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("pmem: %w", err)
	}
	fd := int(f.Fd())
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s", ErrLocked, path)
		}
		return nil, fmt.Errorf("pmem: %s: flock: %w", path, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("pmem: %w", err)
	}
	if fi.Size() < MinSize || fi.Size()%pageSize != 0 || fi.Size() > 1<<46 {
		f.Close()
		return nil, &CorruptError{Path: path, Offset: 0, Reason: fmt.Sprintf("file size %d is not a log's", fi.Size())}
	}
	buf, dur, why, err := mapFile(fd, int(fi.Size()))
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("pmem: %s: mmap: %w", path, err)
	}
	closeAll := func() error {
		err := unix.Munmap(buf)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		return err
	}
	if opts.RequireDAX && dur != DurabilityDAX {
		closeAll()
		return nil, fmt.Errorf("%w: %s: %s", ErrNotDAX, path, why)
	}
	method, err := chooseFlush(opts.Flush, dur)
	if err != nil {
		closeAll()
		return nil, fmt.Errorf("pmem: %s: %w", path, err)
	}
	m := media{buf: buf, method: method}
	if method == FlushMsync {
		m.msync = func(b []byte) error { return unix.Msync(b, unix.MS_SYNC) }
	}
	l, err := openOn(m, path, dur)
	if err != nil {
		closeAll()
		return nil, err
	}
	if opts.Prefault {
		if err := unix.Madvise(buf, unix.MADV_POPULATE_WRITE); err != nil {
			if why != "" {
				why += "; "
			}
			why += "prefault refused (" + err.Error() + "): pages fault on first use"
		}
	}
	l.why = why
	l.close = closeAll
	return l, nil
}

// mapFile maps the file shared, with MAP_SYNC when the file system allows.
func mapFile(fd, size int) ([]byte, Durability, string, error) {
	const prot = unix.PROT_READ | unix.PROT_WRITE
	buf, err := unix.Mmap(fd, 0, size, prot, unix.MAP_SHARED_VALIDATE|unix.MAP_SYNC)
	if err == nil {
		return buf, DurabilityDAX, "", nil
	}
	why := "MAP_SYNC refused (" + err.Error() + ")"
	buf, err = unix.Mmap(fd, 0, size, prot, unix.MAP_SHARED)
	if err != nil {
		return nil, 0, "", err
	}
	var fs unix.Statfs_t
	if err := unix.Fstatfs(fd, &fs); err == nil && (fs.Type == unix.TMPFS_MAGIC || fs.Type == unix.RAMFS_MAGIC) {
		return buf, DurabilityProcessCrashOnly, why + "; file is on tmpfs: durable across process crashes only", nil
	}
	return buf, DurabilityPageCacheSync, why + "; page-cache mapping: fences msync the flushed pages", nil
}

// chooseFlush picks the flush method for a durability mode. On tmpfs the CPU
// flushes buy nothing, but keep the instruction path DAX takes, so that
// measurements there predict DAX costs.
func chooseFlush(want FlushMethod, d Durability) (FlushMethod, error) {
	switch want {
	case FlushAuto:
		if d == DurabilityPageCacheSync {
			return FlushMsync, nil
		}
		if m := bestCPUFlush(); m != flushNone {
			return m, nil
		}
		return FlushMsync, nil
	case FlushMsync:
		return FlushMsync, nil
	case FlushCLWB, FlushCLFLUSHOPT, FlushCLFLUSH:
		if !cpuHas(want) {
			return 0, fmt.Errorf("this CPU has no %v", want)
		}
		if d == DurabilityPageCacheSync {
			return 0, fmt.Errorf("%v cannot persist a page-cache mapping; use msync", want)
		}
		return want, nil
	}
	return 0, fmt.Errorf("unknown flush method %v", want)
}

// create formats a new log file of size bytes at path. The file is written
// complete under a temporary name, synced, and then linked at path (or
// renamed over an empty file there), and the directory is synced.
func create(path string, size int64, replaceEmpty bool) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".new-*")
	if err != nil {
		return fmt.Errorf("pmem: create: %w", err)
	}
	defer func() {
		tmp.Close()
		os.Remove(tmp.Name())
		if err != nil {
			err = fmt.Errorf("pmem: create %s: %w", path, err)
		}
	}()
	if err := unix.Fallocate(int(tmp.Fd()), 0, 0, size); err != nil {
		// Not every file system preallocates; a sparse file still works.
		if err := tmp.Truncate(size); err != nil {
			return err
		}
	}
	var id [8]byte
	rand.Read(id[:])
	hdr := initialHeader(superblock{
		fileSize: uint64(size), dataOff: headerSize, dataSize: uint64(size - headerSize),
		logID: binary.LittleEndian.Uint64(id[:]),
	})
	if _, err := tmp.WriteAt(hdr, 0); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if replaceEmpty {
		err = os.Rename(tmp.Name(), path)
	} else if err = os.Link(tmp.Name(), path); errors.Is(err, os.ErrExist) {
		err = nil // another opener created it first; use theirs
	}
	if err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
