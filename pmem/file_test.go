//go:build linux

package pmem

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vestalabs/vesta/engine/paxos"
	"github.com/vestalabs/vesta/engine/storage"
	"github.com/vestalabs/vesta/engine/wire"
	"golang.org/x/sys/unix"
)

// File-backed tests run in $VESTA_PMEM_DIR when it is set (the VM lab points
// it at a DAX mount), else in /dev/shm when present, else in a temporary
// directory. With VESTA_PMEM_REQUIRE_DAX=1 they fail unless the log there is
// really DAX (MAP_SYNC in force).
func testDir(t *testing.T) string {
	t.Helper()
	base := os.Getenv("VESTA_PMEM_DIR")
	if base == "" {
		if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
			base = "/dev/shm"
		} else {
			return t.TempDir()
		}
	}
	dir, err := os.MkdirTemp(base, "vesta-pmem-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// newOpts returns o for a test log that Open may create (CreateIfMissing),
// with the tests' identity; existing returns o for reopening one
// (MustExist).
func newOpts(o Options) Options {
	o.Identity, o.Create = testID, storage.CreateIfMissing
	return o
}

func existing(o Options) Options {
	o.Identity, o.Create = testID, storage.MustExist
	return o
}

func requireDAX() bool { return os.Getenv("VESTA_PMEM_REQUIRE_DAX") == "1" }

func checkMode(t *testing.T, l *Log) {
	t.Helper()
	s := l.Status()
	t.Logf("%s: durability %s (%s), flush %s", s.Path, s.Durability, s.DurabilityReason, s.Flush)
	if requireDAX() && s.Durability != DurabilityDAX {
		t.Fatalf("VESTA_PMEM_REQUIRE_DAX=1 but %s is %s, not dax: %s", s.Path, s.Durability, s.DurabilityReason)
	}
}

// The reported durability must match the file system: dax only with MAP_SYNC,
// process-crash-only on tmpfs, page-cache+sync elsewhere, with a flush
// method that really persists in that mode.
func TestDurabilityModeMatchesFileSystem(t *testing.T) {
	dirs := []string{testDir(t)}
	if os.Getenv("VESTA_PMEM_DIR") == "" {
		dirs = append(dirs, t.TempDir())
	}
	for _, dir := range dirs {
		path := filepath.Join(dir, "mode.log")
		l, err := Open(path, newOpts(Options{Size: 1 << 20}))
		if err != nil {
			t.Fatal(err)
		}
		checkMode(t, l)
		s := l.Status()
		var fs unix.Statfs_t
		if err := unix.Statfs(path, &fs); err != nil {
			t.Fatal(err)
		}
		switch s.Durability {
		case DurabilityDAX:
			if s.DurabilityReason != "" || (s.Flush != FlushMsync && !s.Flush.isCPU()) {
				t.Errorf("dax mode with reason %q and flush %v", s.DurabilityReason, s.Flush)
			}
		case DurabilityProcessCrashOnly:
			if fs.Type != unix.TMPFS_MAGIC && fs.Type != unix.RAMFS_MAGIC {
				t.Errorf("process-crash-only on file system type %#x", fs.Type)
			}
			if !strings.Contains(s.DurabilityReason, "MAP_SYNC") {
				t.Errorf("reason %q does not say MAP_SYNC was refused", s.DurabilityReason)
			}
		case DurabilityPageCacheSync:
			if s.Flush != FlushMsync {
				t.Errorf("page-cache mode flushes with %v, which does not persist", s.Flush)
			}
		default:
			t.Errorf("file log reports %v", s.Durability)
		}
		if s.FileSize != 1<<20 || s.Capacity != 1<<20-headerSize {
			t.Errorf("sizes %d/%d", s.FileSize, s.Capacity)
		}
		if _, err := Open(path, existing(Options{})); !errors.Is(err, ErrLocked) {
			t.Errorf("second Open of a held log: %v, want ErrLocked", err)
		}
		l.Close()
		l2, err := Open(path, existing(Options{RequireDAX: true}))
		if s.Durability == DurabilityDAX {
			if err != nil {
				t.Errorf("RequireDAX on a DAX log: %v", err)
			} else {
				l2.Close()
			}
		} else if !errors.Is(err, ErrNotDAX) {
			t.Errorf("RequireDAX on a %v log: %v, want ErrNotDAX", s.Durability, err)
		}
		if s.Durability == DurabilityPageCacheSync {
			if _, err := Open(path, existing(Options{Flush: FlushCLWB})); err == nil {
				t.Error("CLWB accepted on a page-cache mapping")
			}
		}
	}
}

// A log in a file survives close and reopen through several laps of its
// data area, with compaction, in every flush mode this machine offers.
func TestFileRoundTrip(t *testing.T) {
	dir := testDir(t)
	for _, fm := range []FlushMethod{FlushAuto, FlushCLWB, FlushCLFLUSHOPT, FlushCLFLUSH, FlushMsync} {
		if fm.isCPU() && !cpuHas(fm) {
			continue
		}
		t.Run(fm.String(), func(t *testing.T) {
			path := filepath.Join(dir, fm.String()+".log")
			opts := Options{Size: 64 << 10, Flush: fm}
			l, err := Open(path, newOpts(opts))
			if errors.Is(err, os.ErrInvalid) || (err != nil && strings.Contains(err.Error(), "cannot persist")) {
				t.Skipf("flush method %v does not work on this file system: %v", fm, err)
			}
			if err != nil {
				t.Fatal(err)
			}
			checkMode(t, l)
			var want []wire.Entry
			for i := range 600 {
				e := entry(i, strings.Repeat(strconv.Itoa(i), 1+i%50))
				hs := paxos.HardState{Promised: wire.Ballot{Round: uint64(i), Replica: 1}, Commit: wire.Slot(i)}
				if err := l.Append([]wire.Entry{e}, hs, true); errors.Is(err, ErrFull) {
					if err := l.Compact(wire.Slot(i - 50)); err != nil {
						t.Fatal(err)
					}
					for len(want) > 0 && want[0].Slot < wire.Slot(i-50) {
						want = want[1:]
					}
					err = l.Append([]wire.Entry{e}, hs, true)
					if err != nil {
						t.Fatal(err)
					}
				} else if err != nil {
					t.Fatal(err)
				}
				want = append(want, e)
				if i%7 == 0 || i%200 == 199 {
					if err := l.Sync(); err != nil {
						t.Fatal(err)
					}
				}
				if i%200 == 199 { // reopen mid-way too
					l.Close()
					if l, err = Open(path, existing(opts)); err != nil {
						t.Fatal(err)
					}
					if p := mustLoad(t, l); !entriesEqual(p.Entries, want) || p.HardState.Commit != wire.Slot(i) {
						t.Fatalf("after reopen at %d: %d entries, hs %+v; want %d", i, len(p.Entries), p.HardState, len(want))
					}
				}
			}
			if s := l.Status(); s.Head == 0 || s.Tail < uint64(s.Capacity) { // counters restart at Open; positions do not
				t.Fatalf("the test did not wrap the log: %+v", s)
			}
			l.Close()
		})
	}
}

// Damage inside the committed part of a file is refused with the file's
// name and the offset; a foreign file is refused and left untouched.
func TestCorruptFileIsRefused(t *testing.T) {
	dir := testDir(t)
	path := filepath.Join(dir, "corrupt.log")
	l, err := Open(path, newOpts(Options{Size: 64 << 10}))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		l.Append([]wire.Entry{entry(i, "some data")}, paxos.HardState{}, false)
	}
	l.Sync()
	rec := int64(l.r.phys(l.r.head)) + 20 // inside the first record
	l.Close()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	f.ReadAt(b, rec)
	b[0] ^= 0x10
	f.WriteAt(b, rec)
	f.Close()
	_, err = Open(path, existing(Options{}))
	var ce *CorruptError
	if !errors.As(err, &ce) || ce.Path != path || ce.Offset != rec-20 || !strings.Contains(err.Error(), path) {
		t.Fatalf("open of a damaged log: %v; want a CorruptError for %s at %d", err, path, rec-20)
	}

	foreign := filepath.Join(dir, "foreign")
	data := []byte(strings.Repeat("not a log ", MinSize))
	os.WriteFile(foreign, data[:MinSize], 0o600)
	if _, err := Open(foreign, newOpts(Options{})); !errors.As(err, &ce) || !strings.Contains(err.Error(), "magic") {
		t.Fatalf("open of a foreign file: %v", err)
	}
	if got, _ := os.ReadFile(foreign); string(got) != string(data[:MinSize]) {
		t.Fatal("Open modified a foreign file")
	}

	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, nil, 0o600)
	l, err = Open(empty, newOpts(Options{Size: MinSize}))
	if err != nil {
		t.Fatalf("open of an empty file: %v", err)
	}
	l.Close()
	if left, _ := filepath.Glob(filepath.Join(dir, ".*.new-*")); len(left) > 0 {
		t.Fatalf("temporary files left behind: %v", left)
	}
}

// The process-crash test: a child process appends and syncs as fast as it
// can and reports each acknowledged slot; it is killed with SIGKILL at a
// random moment. Reopening must find every acknowledged entry, in order and
// intact. Several rounds reuse the same log, so recovery then continuation
// is exercised too. On tmpfs this is exactly the durability the log claims.
func TestProcessCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Skipf("cannot find this test binary to re-run it as the crashing child: %v", err)
	}
	path := filepath.Join(testDir(t), "crash.log")
	for round := range 4 {
		cmd := exec.Command(exe, "-test.run=^$")
		cmd.Env = append(os.Environ(), childEnv+"="+path)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		acked := -1
		sc := bufio.NewScanner(out)
		deadline := time.Now().Add(time.Duration(60+40*round) * time.Millisecond)
		for sc.Scan() {
			n, err := strconv.Atoi(sc.Text())
			if err != nil {
				t.Fatalf("child said %q", sc.Text())
			}
			acked = n
			if time.Now().After(deadline) {
				break
			}
		}
		cmd.Process.Signal(syscall.SIGKILL)
		for sc.Scan() { // acknowledgments printed before the kill landed
			if n, err := strconv.Atoi(sc.Text()); err == nil {
				acked = n
			}
		}
		cmd.Wait()
		if acked < 0 {
			t.Fatal("child acknowledged nothing")
		}
		l, err := Open(path, existing(Options{}))
		if err != nil {
			t.Fatalf("round %d: reopen after SIGKILL: %v", round, err)
		}
		p := mustLoad(t, l)
		l.Close()
		end := checkChildLog(t, p)
		t.Logf("round %d: killed after slot %d was acknowledged; recovered slots up to %d", round, acked, end)
		if end < wire.Slot(acked) {
			t.Fatalf("round %d: slot %d was acknowledged, but the log ends at %d", round, acked, end)
		}
	}
}

const childEnv = "VESTA_PMEM_CRASH_CHILD"

func childValue(s wire.Slot) []byte {
	return []byte(fmt.Sprintf("slot-%d-", s) + strings.Repeat("v", int(s%97)))
}

// checkChildLog verifies a log the child wrote: contiguous slots, each with
// its value, and the hard state's commit at the end. It returns the end.
func checkChildLog(t *testing.T, p paxos.Persisted) wire.Slot {
	t.Helper()
	for i, e := range p.Entries {
		if i > 0 && e.Slot != p.Entries[i-1].Slot+1 || string(e.Value.Data) != string(childValue(e.Slot)) {
			t.Fatalf("entry %d (slot %d) is wrong: %q", i, e.Slot, e.Value.Data)
		}
	}
	end := wire.Slot(0)
	if n := len(p.Entries); n > 0 {
		end = p.Entries[n-1].Slot + 1
	}
	if p.HardState.Commit != end {
		t.Fatalf("hard state commit %d, entries end at %d", p.HardState.Commit, end)
	}
	return end
}

// crashChild is the child's body: append, sync, print the acknowledged end.
func crashChild(path string) {
	l, err := Open(path, newOpts(Options{Size: 256 << 10}))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	p, err := l.Load()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	next := wire.Slot(0)
	if n := len(p.Entries); n > 0 {
		next = p.Entries[n-1].Slot + 1
	}
	w := bufio.NewWriter(os.Stdout)
	for {
		batch := make([]wire.Entry, 1+int(next%5))
		for i := range batch {
			batch[i] = wire.Entry{Slot: next + wire.Slot(i), Ballot: wire.Ballot{Round: 1, Replica: 1}, Value: wire.Value{Kind: wire.ValueBatch, Data: childValue(next + wire.Slot(i))}}
		}
		hs := paxos.HardState{Promised: wire.Ballot{Round: 1, Replica: 1}, Commit: next + wire.Slot(len(batch))}
		err := l.Append(batch, hs, true)
		if errors.Is(err, ErrFull) {
			if err = l.Compact(next - 200); err == nil {
				err = l.Append(batch, hs, true)
			}
		}
		if err == nil {
			err = l.Sync()
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		next += wire.Slot(len(batch))
		fmt.Fprintln(w, next)
		w.Flush()
	}
}
