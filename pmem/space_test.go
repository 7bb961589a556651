//go:build linux

package pmem

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/vestalabs/vesta/engine/paxos"
	"github.com/vestalabs/vesta/engine/storage"
	"github.com/vestalabs/vesta/engine/wire"
	"golang.org/x/sys/unix"
)

// smallTmpfs mounts a tmpfs of the given size ("1m") in a new temporary
// directory, unmounted when the test ends. Mounting needs root (CI runs as
// root); elsewhere the test is skipped with the reason.
func smallTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
			t.Skipf("mounting a %s tmpfs at %s is not permitted (needs root; euid %d): %v", size, dir, os.Geteuid(), err)
		}
		t.Fatalf("mount a %s tmpfs at %s: %v", size, dir, err)
	}
	t.Cleanup(func() { // runs before t.TempDir's removal
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
			unix.Unmount(dir, unix.MNT_DETACH)
		}
	})
	return dir
}

func blocksOf(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Blocks * 512
}

func wantSpaceError(t *testing.T, err error, path string, size, allocated int64) *SpaceError {
	t.Helper()
	var se *SpaceError
	if !errors.As(err, &se) {
		t.Fatalf("%v; want a SpaceError", err)
	}
	msg := err.Error()
	if se.Path != path || se.Size != size || se.Allocated != allocated || se.Free < 0 || se.Free >= size-allocated ||
		!strings.Contains(msg, path) || !strings.Contains(msg, strconv.FormatInt(size, 10)+" bytes") ||
		!strings.Contains(msg, strconv.FormatInt(se.Free, 10)+" bytes") || !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("%#v: %v; want path %s, size %d, %d allocated, the free bytes, ENOSPC", se, err, path, size, allocated)
	}
	t.Logf("%v", err)
	return se
}

// Issue 12, item 11: on a 1 MiB tmpfs a 64 MiB log was created sparse and
// the process died of SIGBUS once appends reached a page the file system
// could not back. Now creation reserves the space and is refused, with the
// sizes, leaving nothing behind; a log that fits is created with every
// block allocated and fills up to ErrFull without a fault.
func TestSmallFileSystemRefusesABigLog(t *testing.T) {
	dir := smallTmpfs(t, "1m")
	path := filepath.Join(dir, "r.pmem")
	for _, mode := range []storage.CreateMode{storage.CreateIfMissing, storage.MustCreate} {
		_, err := Open(path, Options{Identity: testID, Create: mode, Size: 64 << 20, Prefault: true})
		wantSpaceError(t, err, path, 64<<20, 0)
		if ents, _ := os.ReadDir(dir); len(ents) != 0 {
			t.Fatalf("a refused creation left %v", ents)
		}
	}

	l, err := Open(path, Options{Identity: testID, Create: storage.MustCreate, Size: 768 << 10})
	if err != nil {
		t.Fatalf("a log that fits: %v", err)
	}
	defer l.Close()
	if got := blocksOf(t, path); got < 768<<10 {
		t.Fatalf("new log has %d bytes allocated of %d", got, 768<<10)
	}
	if _, err := Open(filepath.Join(dir, "second.pmem"), Options{Identity: testID, Create: storage.MustCreate, Size: 512 << 10}); err == nil {
		t.Fatal("a second log fit in the space the first reserved")
	} else {
		wantSpaceError(t, err, filepath.Join(dir, "second.pmem"), 512<<10, 0)
	}
	filled := 0
	for i := 0; ; i++ {
		err := l.Append([]wire.Entry{entry(i, strings.Repeat("x", 4000))}, paxos.HardState{}, false)
		if errors.Is(err, ErrFull) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		filled++
	}
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	if filled < 150 {
		t.Fatalf("only %d records fit", filled)
	}
}

// Where fallocate is not supported, creation allocates by writing, and a
// file system without the room refuses the same way.
func TestReserveFallbackWithoutFallocate(t *testing.T) {
	fallocate = func(int, uint32, int64, int64) error { return unix.EOPNOTSUPP }
	defer func() { fallocate = unix.Fallocate }()

	path := filepath.Join(testDir(t), "r.pmem")
	l, err := Open(path, newOpts(Options{Size: 1 << 20}))
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	if got := blocksOf(t, path); got < 1<<20 {
		t.Fatalf("fallback left %d of %d bytes allocated", got, 1<<20)
	}

	dir := smallTmpfs(t, "1m")
	path = filepath.Join(dir, "r.pmem")
	_, err = Open(path, newOpts(Options{Size: 64 << 20}))
	wantSpaceError(t, err, path, 64<<20, 0)
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("a refused creation left %v", ents)
	}
}

// sparseCopy writes src's log to dst leaving every all-zero page a hole, as
// a copy without preallocation would (cp --sparse=always).
func sparseCopy(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(int64(len(b))); err != nil {
		t.Fatal(err)
	}
	zero := make([]byte, pageSize)
	for off := 0; off < len(b); off += pageSize {
		if p := b[off : off+pageSize]; !slices.Equal(p, zero) {
			if _, err := f.WriteAt(p, int64(off)); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// An existing log whose blocks are not all allocated (sparse) gets them at
// Open, or, where the file system lacks the room, is refused with the sizes
// and left unchanged; once there is room it opens with everything intact.
func TestSparseLogIsAllocatedOrRefused(t *testing.T) {
	const size = 4 << 20
	src := filepath.Join(t.TempDir(), "src.pmem")
	l, err := Open(src, Options{Identity: testID, Create: storage.MustCreate, Size: size})
	if err != nil {
		t.Fatal(err)
	}
	var want []wire.Entry
	for i := range 20 {
		e := entry(i, strings.Repeat("v", 100+i))
		want = append(want, e)
		if err := l.Append([]wire.Entry{e}, paxos.HardState{Commit: wire.Slot(i)}, true); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	l.Close()
	before, _ := os.ReadFile(src)

	check := func(t *testing.T, path string) {
		t.Helper()
		l, err := Open(path, existing(Options{Prefault: true}))
		if err != nil {
			t.Fatalf("open of a sparse log where there is room: %v", err)
		}
		defer l.Close()
		if got := blocksOf(t, path); got < size {
			t.Fatalf("after open %d of %d bytes are allocated", got, size)
		}
		if p := mustLoad(t, l); !entriesEqual(p.Entries, want) || p.HardState.Commit != 19 {
			t.Fatalf("recovered %d entries, hs %+v", len(p.Entries), p.HardState)
		}
	}

	t.Run("room", func(t *testing.T) {
		path := filepath.Join(testDir(t), "sparse.pmem")
		sparseCopy(t, src, path)
		if got := blocksOf(t, path); got >= size {
			t.Skipf("the file system did not keep the copy sparse (%d bytes allocated)", got)
		}
		check(t, path)
	})

	t.Run("no room", func(t *testing.T) {
		dir := smallTmpfs(t, "1m")
		path := filepath.Join(dir, "sparse.pmem")
		sparseCopy(t, src, path)
		allocated := blocksOf(t, path)
		if allocated >= size {
			t.Fatalf("copy on tmpfs is not sparse: %d bytes allocated", allocated)
		}
		_, err := Open(path, existing(Options{}))
		wantSpaceError(t, err, path, size, allocated)
		if after, _ := os.ReadFile(path); !slices.Equal(after, before) {
			t.Fatal("a refused open changed the log")
		}
		// Grow the file system: now the log can be had.
		if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_REMOUNT, "size=8m"); err != nil {
			t.Fatalf("remount with room: %v", err)
		}
		check(t, path)
	})
}

// A prefault that fails because the memory cannot be had is an error, not a
// note: here a sparse file on a full tmpfs, mapped as a log would be (Open
// itself reserves first, so it never gets this far).
func TestPrefaultFailureIsAnError(t *testing.T) {
	dir := smallTmpfs(t, "1m")
	f, err := os.Create(filepath.Join(dir, "sparse"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(8 << 20); err != nil {
		t.Fatal(err)
	}
	buf, err := unix.Mmap(int(f.Fd()), 0, 8<<20, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(buf)
	note, err := prefault(buf)
	if strings.Contains(note, "refused") {
		t.Skipf("this kernel cannot prefault: %s", note)
	}
	if err == nil || !(errors.Is(err, unix.EFAULT) || errors.Is(err, unix.ENOMEM)) {
		t.Fatalf("prefault of 8 MiB on a 1 MiB tmpfs: note %q, error %v; want EFAULT or ENOMEM", note, err)
	}
	t.Logf("prefault: %v", err)
}
