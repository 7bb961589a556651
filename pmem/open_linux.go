package pmem

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/vestalabs/vesta/engine/storage"
	"golang.org/x/sys/unix"
)

// DefaultSize is the size of a new log file when Options.Size is zero.
const DefaultSize = 64 << 20

// maxFileSize bounds the log files Open maps (64 TiB).
const maxFileSize = 1 << 46

// Options configure Open.
type Options struct {
	// Identity is whose the log is: written into the file when Open
	// creates it, and compared with the file's at every Open (a mismatch
	// is a *storage.IdentityError naming the field). Required: it must
	// pass storage.Identity.Validate.
	Identity storage.Identity
	// Create says what Open does where there is no log: no file, an empty
	// one, or one whose header page is all zeros (never formatted). The
	// zero value, storage.MustExist, refuses with storage.ErrNoLog;
	// storage.MustCreate creates the log and refuses a file that is there
	// (storage.ErrAlreadyBootstrapped); storage.CreateIfMissing does
	// either.
	Create storage.CreateMode
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
	// faulting on demand, and Status says so; a prefault that fails because
	// the memory cannot be had (ENOMEM, or EFAULT: a store there would
	// raise SIGBUS) fails Open.
	Prefault bool
}

// Open opens the log file at path, maps it shared, recovers the committed
// state, checks that the log is opts.Identity's, and returns the log. Where
// there is no log, opts.Create says whether to create one (see Options).
//
// Creation formats a complete file under a temporary name, with every block
// allocated, syncs it and links it into place, so a crash never leaves a
// half-formatted log at path (layout.go, "Creation"). An existing file with
// unallocated blocks (sparse) gets them allocated at Open. Either way a file
// system that cannot provide the space fails Open with a *SpaceError naming
// the sizes, instead of the process dying of SIGBUS on a later store.
//
// The mapping is MAP_SHARED_VALIDATE|MAP_SYNC where the kernel accepts it
// (a DAX file system): flushed stores are then durable without system calls.
// Elsewhere it falls back to MAP_SHARED and says so in Status: on tmpfs the
// log survives process crashes only; on an ordinary file system every fence
// is an msync. The file is locked (flock) while open.
//
// Errors: storage.ErrNoLog and storage.ErrAlreadyBootstrapped (wrapped, with
// the path), *storage.IdentityError, *SpaceError, *CorruptError,
// *VersionError, ErrLocked, ErrNotDAX.
func Open(path string, opts Options) (*Log, error) {
	if err := checkIdentity(opts.Identity); err != nil {
		return nil, fmt.Errorf("pmem: %s: Options.Identity: %w", path, err)
	}
	if opts.Create > storage.CreateIfMissing {
		return nil, fmt.Errorf("pmem: %s: Options.Create: unknown mode %v", path, opts.Create)
	}
	size := opts.Size
	if size == 0 {
		size = DefaultSize
	}
	size = (size + pageSize - 1) &^ (pageSize - 1)
	if size < MinSize || size > maxFileSize {
		return nil, fmt.Errorf("pmem: %s: size %d is outside [%d, %d]", path, opts.Size, MinSize, int64(maxFileSize))
	}
	f, err := openOrCreate(path, size, opts)
	if err != nil {
		return nil, err
	}
	fd := int(f.Fd())
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("pmem: %w", err)
	}
	if fi.Size() < MinSize || fi.Size()%pageSize != 0 || fi.Size() > maxFileSize {
		f.Close()
		return nil, &CorruptError{Path: path, Offset: 0, Reason: fmt.Sprintf("file size %d is not a log's", fi.Size())}
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Blocks*512 < fi.Size() {
		// Sparse (a copy made without preallocation, or a file system that
		// gave blocks back): stores to its holes could fault for want of
		// space once mapped.
		if err := reserve(f, path, fi.Size(), st.Blocks*512); err != nil {
			f.Close()
			return nil, err
		}
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
	l, err := openChecked(m, path, dur, &opts.Identity)
	if err != nil {
		closeAll()
		return nil, err
	}
	if opts.Prefault {
		note, err := prefault(buf)
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("pmem: %s: prefault of %s: %w; the memory for the log cannot be had (free memory, "+
				"raise the memory limit, or ask for a smaller log: Options.Size; vestad -pmem-size)", path, sizeString(int64(len(buf))), err)
		}
		if note != "" {
			if why != "" {
				why += "; "
			}
			why += note
		}
	}
	l.why = why
	l.close = closeAll
	return l, nil
}

// prefault populates every page of the mapping writable. It returns a note
// for Status where the kernel cannot prefault (the log then faults on
// demand, which is only slower), and an error where populating failed
// because the memory cannot be had: ENOMEM, or EFAULT, which the kernel
// returns where a store to the page would raise SIGBUS.
func prefault(buf []byte) (string, error) {
	for range 100 {
		err := unix.Madvise(buf, unix.MADV_POPULATE_WRITE)
		switch {
		case err == nil:
			return "", nil
		case errors.Is(err, unix.EINTR):
			continue // populating again keeps what was populated
		case errors.Is(err, unix.EINVAL):
			// A kernel before 5.14 does not know the advice.
			return "prefault refused (" + err.Error() + "): pages fault on first use", nil
		default:
			return "", err
		}
	}
	return "prefault interrupted 100 times: pages fault on first use", nil
}

// openOrCreate returns path's file, locked, creating the log where there is
// none and opts.Create allows. The file it returns may still be damaged or
// another's: recovery and the identity check decide that.
func openOrCreate(path string, size int64, opts Options) (*os.File, error) {
	f, err := lockFile(path)
	if errors.Is(err, os.ErrNotExist) {
		if opts.Create == storage.MustExist {
			return nil, fmt.Errorf("pmem: %s: no such file: %w", path, storage.ErrNoLog)
		}
		switch err := create(path, size, opts.Identity, false); {
		case errors.Is(err, errExists): // another opener created it meanwhile
			if opts.Create == storage.MustCreate {
				return nil, fmt.Errorf("pmem: %s: %w", path, storage.ErrAlreadyBootstrapped)
			}
		case err != nil:
			return nil, err
		}
		return lockFile(path)
	}
	if err != nil {
		return nil, err
	}
	state, err := classify(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("pmem: %s: %w", path, err)
	}
	switch {
	case state == fileLog || state == fileForeign:
		if opts.Create != storage.MustCreate {
			return f, nil // recovery refuses a foreign file, and leaves it as it is
		}
		f.Close()
		if state == fileForeign {
			return nil, fmt.Errorf("pmem: %s: creating a log: a file that is not a vesta pmem log is in the way "+
				"(creation never overwrites a file; move it away)", path)
		}
		return nil, fmt.Errorf("pmem: %s: %w", path, storage.ErrAlreadyBootstrapped)
	case opts.Create == storage.MustExist:
		f.Close()
		return nil, fmt.Errorf("pmem: %s: %s: %w", path, state, storage.ErrNoLog)
	}
	// An unformatted file, which we hold locked: give its blocks back first
	// (the new file needs the room; an emptied file is still unformatted if
	// we crash now), then replace it with a formatted one.
	err = f.Truncate(0)
	if err == nil {
		err = create(path, size, opts.Identity, true)
	} else {
		err = fmt.Errorf("pmem: %s: truncating the unformatted file: %w", path, err)
	}
	f.Close()
	if err != nil {
		return nil, err
	}
	return lockFile(path)
}

// lockFile opens path read-write and takes its lock; the error wraps
// os.ErrNotExist where there is no file.
func lockFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("pmem: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s", ErrLocked, path)
		}
		return nil, fmt.Errorf("pmem: %s: flock: %w", path, err)
	}
	return f, nil
}

// fileState is what classify found in an existing file.
type fileState uint8

const (
	fileLog         fileState = iota // starts with a log's magic (recovery checks the rest)
	fileForeign                      // something else
	fileEmpty                        // no bytes
	fileUnformatted                  // a header page of zeros (preallocated, never formatted)
)

func (s fileState) String() string {
	switch s {
	case fileLog:
		return "a log"
	case fileForeign:
		return "not a log"
	case fileEmpty:
		return "the file is empty"
	}
	return "the file's header page is all zeros (never formatted)"
}

// classify reads the start of f. An empty file, or one whose first page is
// zeros, holds no log: creation never leaves one at a log's path (it links
// complete files), so such a file was made by someone else, e.g.
// preallocated, and may be formatted.
func classify(f *os.File) (fileState, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if fi.Size() == 0 {
		return fileEmpty, nil
	}
	b := make([]byte, min(fi.Size(), headerSize))
	if _, err := f.ReadAt(b, 0); err != nil {
		return 0, err
	}
	if len(b) >= 8 && binary.LittleEndian.Uint64(b) == superMagic {
		return fileLog, nil
	}
	for _, c := range b {
		if c != 0 {
			return fileForeign, nil
		}
	}
	return fileUnformatted, nil
}

// fallocate is unix.Fallocate; tests replace it to take the fallback.
var fallocate = unix.Fallocate

// fallocChunk bounds one fallocate call: tmpfs undoes a whole call that a
// signal interrupts (EINTR, a profiler's SIGPROF say), so one huge call
// could be interrupted every time; a chunk takes a few milliseconds.
// maxEINTR bounds the retries all the same.
const (
	fallocChunk = 16 << 20
	maxEINTR    = 1000
)

// reserve has the file system allocate every block of f's first size bytes
// (extending f to size), so that no store to the mapping can find a page
// the file system cannot back. allocated is what f already has, for the
// error. ENOSPC, EDQUOT and ENOMEM are a *SpaceError.
func reserve(f *os.File, path string, size, allocated int64) error {
	var err error
	for off, intr := int64(0), 0; off < size && err == nil; {
		n := min(size-off, fallocChunk)
		if err = fallocate(int(f.Fd()), 0, off, n); errors.Is(err, unix.EINTR) && intr < maxEINTR {
			err, intr = nil, intr+1
			continue
		}
		off += n
	}
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
		err = fillBlocks(f, size)
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT) || errors.Is(err, unix.ENOMEM):
		// Free as it was before this attempt: a failed fallocate gives back
		// what it took (tmpfs) or not (others), and a failed fill keeps
		// what it wrote, so count what f holds beyond allocated as free.
		free := int64(-1)
		var fs unix.Statfs_t
		if unix.Fstatfs(int(f.Fd()), &fs) == nil {
			free = int64(fs.Bavail) * fs.Bsize
			var st unix.Stat_t
			if unix.Fstat(int(f.Fd()), &st) == nil && st.Blocks*512 > allocated {
				free += st.Blocks*512 - allocated
			}
		}
		return &SpaceError{Path: path, Size: size, Allocated: allocated, Free: free, Err: err}
	}
	return fmt.Errorf("pmem: %s: allocating the blocks of %s: %w", path, sizeString(size), err)
}

// fillBlocks allocates f's blocks where the file system has no fallocate:
// it extends f to size and writes every chunk back with the bytes it holds
// (a hole reads as zeros), which allocates the holes and changes nothing,
// then syncs, which is where some file systems report the lack of space.
func fillBlocks(f *os.File, size int64) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() < size {
		if err := f.Truncate(size); err != nil {
			return err
		}
	}
	buf := make([]byte, 1<<20)
	for off := int64(0); off < size; {
		b := buf[:min(int64(len(buf)), size-off)]
		if _, err := f.ReadAt(b, off); err != nil {
			return err
		}
		if _, err := f.WriteAt(b, off); err != nil {
			return err
		}
		off += int64(len(b))
	}
	return f.Sync()
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

// errExists says that creation found a file at the path (another opener
// created it meanwhile).
var errExists = errors.New("pmem: a file exists at the path")

// create formats a new log file of size bytes with identity id at path.
// The file is written complete under a temporary name, with every block
// allocated (reserve), synced, and then linked at path (or renamed over the
// unformatted file there), and the directory is synced. It returns errExists
// when a file appeared at path meanwhile (and replace is false).
func create(path string, size int64, id storage.Identity, replace bool) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	removeStaleTemps(dir, base)
	tmp, err := os.CreateTemp(dir, tempPrefix(base)+"*")
	if err != nil {
		return fmt.Errorf("pmem: create %s: %w", path, err)
	}
	defer func() {
		tmp.Close()
		os.Remove(tmp.Name())
	}()
	// Held until creation ends, so that no other creator takes this file
	// for a stale one (removeStaleTemps) while it is written.
	if err := unix.Flock(int(tmp.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return fmt.Errorf("pmem: create %s: flock %s: %w", path, tmp.Name(), err)
	}
	if err := reserve(tmp, path, size, 0); err != nil {
		return err
	}
	createStep("reserved")
	var logID [8]byte
	rand.Read(logID[:])
	hdr := initialHeader(superblock{
		fileSize: uint64(size), dataOff: headerSize, dataSize: uint64(size - headerSize),
		logID: binary.LittleEndian.Uint64(logID[:]),
	}, id)
	if _, err := tmp.WriteAt(hdr, 0); err != nil {
		return fmt.Errorf("pmem: create %s: %w", path, err)
	}
	createStep("written")
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("pmem: create %s: %w", path, err)
	}
	createStep("synced")
	if replace {
		err = os.Rename(tmp.Name(), path)
	} else if err = os.Link(tmp.Name(), path); errors.Is(err, os.ErrExist) {
		return errExists
	}
	if err != nil {
		return fmt.Errorf("pmem: create %s: %w", path, err)
	}
	d, err := os.Open(dir)
	if err == nil {
		err = d.Sync()
		d.Close()
	}
	if err != nil {
		return fmt.Errorf("pmem: create %s: syncing the directory: %w", path, err)
	}
	return nil
}

// createHook, set only by tests, is called at each step of creation, so
// that a child process can die there as a crash would.
var createHook func(step string)

func createStep(step string) {
	if createHook != nil {
		createHook(step)
	}
}

// tempPrefix is how the temporary files of a creation of base begin.
func tempPrefix(base string) string { return "." + base + ".new-" }

// removeStaleTemps removes the temporary files that creations of base in
// dir left when they crashed (each holds a whole log's space). A creation
// in progress holds its file's lock, so it is never taken for stale. (A
// creator between creating its file and locking it can lose it; its Open
// then fails and can be retried.)
func removeStaleTemps(dir, base string) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), tempPrefix(base)) || !e.Type().IsRegular() {
			continue
		}
		name := filepath.Join(dir, e.Name())
		f, err := os.OpenFile(name, os.O_RDWR, 0)
		if err != nil {
			continue
		}
		if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) == nil {
			os.Remove(name)
		}
		f.Close()
	}
}

// ReadIdentity reads whose log the pmem log file at path is, without
// opening it: for offline tools (vestactl replay) that then Open it with
// that identity, as its replica would.
func ReadIdentity(path string) (storage.Identity, error) {
	f, err := os.Open(path)
	if err != nil {
		return storage.Identity{}, fmt.Errorf("pmem: %w", err)
	}
	defer f.Close()
	buf := make([]byte, identSize)
	if _, err := f.ReadAt(buf, identOff); err != nil {
		return storage.Identity{}, fmt.Errorf("pmem: %s: reading its identity: %w", path, err)
	}
	id, why := decodeIdentity(buf)
	if why != "" {
		return storage.Identity{}, fmt.Errorf("pmem: %s: identity at offset %d: %s", path, identOff, why)
	}
	return id, nil
}
