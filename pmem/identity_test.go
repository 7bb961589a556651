//go:build linux

package pmem

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/vestalabs/vesta/engine/paxos"
	"github.com/vestalabs/vesta/engine/storage"
	"github.com/vestalabs/vesta/engine/wire"
	"golang.org/x/sys/unix"
)

// bootstrapped creates a log with the tests' identity (MustCreate), with a
// few synced entries, closes it and returns its path and its bytes.
func bootstrapped(t *testing.T, dir string) (string, []byte) {
	t.Helper()
	path := filepath.Join(dir, "r2.pmem")
	l, err := Open(path, Options{Identity: testID, Create: storage.MustCreate, Size: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	if !l.Identity().Equal(testID) || !l.Status().Identity.Equal(testID) {
		t.Fatalf("new log says it is %v (status %v), want %v", l.Identity(), l.Status().Identity, testID)
	}
	for i := range 5 {
		if err := l.Append([]wire.Entry{entry(i, "vote")}, paxos.HardState{Promised: wire.Ballot{Round: 9, Replica: 2}}, true); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	l.Close()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return path, b
}

func withMembers(ms ...wire.ReplicaID) storage.Identity {
	id := testID
	id.Members = ms
	return id
}

// A log is refused, untouched, by anyone it does not belong to: another
// cluster, another replica of the cluster, the same replica under another
// member set. The error is a *storage.IdentityError naming the field, and
// its message the path and both values.
func TestOpenRefusesAnotherIdentity(t *testing.T) {
	path, before := bootstrapped(t, testDir(t))
	otherCluster, otherReplica := testID, testID
	otherCluster.ClusterID = 8
	otherReplica.ReplicaID = 3
	for _, tc := range []struct {
		name   string
		id     storage.Identity
		field  string
		saying string
	}{
		{"another cluster's", otherCluster, "cluster", "belongs to cluster 7, not cluster 8"},
		{"another replica's", otherReplica, "replica", "belongs to replica 2, not replica 3"},
		{"another member set's", withMembers(1, 2, 3, 4), "members", "members {1,2,3}, not {1,2,3,4}"},
		{"a smaller member set's", withMembers(2, 3), "members", "members {1,2,3}, not {2,3}"},
	} {
		for _, mode := range []storage.CreateMode{storage.MustExist, storage.CreateIfMissing} {
			t.Run(tc.name+"/"+mode.String(), func(t *testing.T) {
				l, err := Open(path, Options{Identity: tc.id, Create: mode})
				var ie *storage.IdentityError
				if !errors.As(err, &ie) {
					if l != nil {
						l.Close()
					}
					t.Fatalf("open as %v: %v, want an IdentityError", tc.id, err)
				}
				if ie.Field != tc.field || !ie.Found.Equal(testID) || !ie.Want.Equal(tc.id) || ie.Path != path ||
					!strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tc.saying) {
					t.Fatalf("open as %v: %#v: %v; want field %s, saying %q", tc.id, ie, err, tc.field, tc.saying)
				}
				t.Logf("%v", err)
			})
		}
	}
	if after, _ := os.ReadFile(path); !slices.Equal(before, after) {
		t.Fatal("a refused open changed the file")
	}
	l, err := Open(path, existing(Options{}))
	if err != nil {
		t.Fatalf("the owner cannot open its log after the refusals: %v", err)
	}
	if p := mustLoad(t, l); len(p.Entries) != 5 || p.HardState.Promised.Round != 9 {
		t.Fatalf("the owner recovered %+v", p)
	}
	l.Close()
}

// Where there is no log, MustExist refuses with storage.ErrNoLog and the
// path, and leaves nothing behind; CreateIfMissing and MustCreate create.
// MustCreate refuses a file that is there: a log (ErrAlreadyBootstrapped),
// or anything else (never overwritten).
func TestCreateModes(t *testing.T) {
	dir := testDir(t)
	noLog := func(t *testing.T, path, saying string) {
		t.Helper()
		l, err := Open(path, existing(Options{}))
		if !errors.Is(err, storage.ErrNoLog) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), saying) {
			if l != nil {
				l.Close()
			}
			t.Fatalf("MustExist where %s: %v; want ErrNoLog naming %s and saying %q", saying, err, path, saying)
		}
		t.Logf("%v", err)
	}

	missing := filepath.Join(dir, "missing.pmem")
	noLog(t, missing, "no such file")
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("MustExist left %v behind", ents)
	}

	empty := filepath.Join(dir, "empty.pmem")
	os.WriteFile(empty, nil, 0o600)
	noLog(t, empty, "empty")
	zeros := filepath.Join(dir, "zeros.pmem")
	os.WriteFile(zeros, make([]byte, 3*pageSize), 0o600)
	noLog(t, zeros, "all zeros")
	for _, path := range []string{missing, empty, zeros} {
		l, err := Open(path, Options{Identity: testID, Create: storage.CreateIfMissing, Size: 32 << 10})
		if err != nil {
			t.Fatalf("CreateIfMissing at %s: %v", path, err)
		}
		if l.Status().FileSize != 32<<10 || !l.Identity().Equal(testID) {
			t.Fatalf("CreateIfMissing at %s made %+v", path, l.Status())
		}
		l.Close()
		if l, err = Open(path, Options{Identity: testID, Create: storage.CreateIfMissing}); err != nil {
			t.Fatalf("CreateIfMissing on the log it made: %v", err)
		}
		l.Close()
	}

	path, before := bootstrapped(t, dir)
	_, err := Open(path, Options{Identity: testID, Create: storage.MustCreate})
	if !errors.Is(err, storage.ErrAlreadyBootstrapped) || !strings.Contains(err.Error(), path) {
		t.Fatalf("MustCreate on an existing log: %v; want ErrAlreadyBootstrapped naming %s", err, path)
	}
	t.Logf("%v", err)
	other := testID
	other.ClusterID = 99 // the bootstrap of another cluster finds it too
	if _, err := Open(path, Options{Identity: other, Create: storage.MustCreate}); !errors.Is(err, storage.ErrAlreadyBootstrapped) {
		t.Fatalf("MustCreate of another cluster on an existing log: %v", err)
	}
	if after, _ := os.ReadFile(path); !slices.Equal(before, after) {
		t.Fatal("a refused bootstrap changed the log")
	}

	foreign := filepath.Join(dir, "foreign")
	data := []byte(strings.Repeat("not a log ", MinSize))[:MinSize]
	os.WriteFile(foreign, data, 0o600)
	if _, err := Open(foreign, Options{Identity: testID, Create: storage.MustCreate}); err == nil ||
		errors.Is(err, storage.ErrAlreadyBootstrapped) || !strings.Contains(err.Error(), "not a vesta pmem log") {
		t.Fatalf("MustCreate on a foreign file: %v", err)
	}
	if got, _ := os.ReadFile(foreign); !slices.Equal(got, data) {
		t.Fatal("MustCreate changed a foreign file")
	}

	fresh := filepath.Join(dir, "fresh.pmem")
	l, err := Open(fresh, Options{Identity: testID, Create: storage.MustCreate, Size: MinSize})
	if err != nil {
		t.Fatalf("MustCreate where there is no file: %v", err)
	}
	l.Close()
	if left, _ := filepath.Glob(filepath.Join(dir, ".*.new-*")); len(left) > 0 {
		t.Fatalf("temporary files left behind: %v", left)
	}
}

// Open refuses, before touching the file system, an identity that could
// not be written (storage.Identity.Validate) and an unknown create mode.
func TestOpenNeedsAValidIdentity(t *testing.T) {
	dir := testDir(t)
	path := filepath.Join(dir, "r.pmem")
	for _, tc := range []struct {
		id     storage.Identity
		saying string
	}{
		{storage.Identity{}, "cluster ID 0"},
		{storage.Identity{ClusterID: 1, ReplicaID: 4, Members: []wire.ReplicaID{1, 2, 3}}, "not one of the members"},
		{storage.Identity{ClusterID: 1, ReplicaID: 1, Members: []wire.ReplicaID{2, 1}}, "ascending"},
		{storage.Identity{ClusterID: 1, ReplicaID: 1, Members: make([]wire.ReplicaID, maxIdentMembers+1)}, "member ID 0"},
	} {
		_, err := Open(path, Options{Identity: tc.id, Create: storage.CreateIfMissing})
		if err == nil || !strings.Contains(err.Error(), tc.saying) || !strings.Contains(err.Error(), "Options.Identity") {
			t.Errorf("identity %v: %v; want an error saying %q", tc.id, err, tc.saying)
		}
	}
	many := storage.Identity{ClusterID: 1, ReplicaID: 1}
	for i := range maxIdentMembers + 1 {
		many.Members = append(many.Members, wire.ReplicaID(i+1))
	}
	if _, err := Open(path, Options{Identity: many, Create: storage.CreateIfMissing}); err == nil || !strings.Contains(err.Error(), "at most") {
		t.Errorf("%d members: %v", len(many.Members), err)
	}
	if _, err := Open(path, Options{Identity: testID, Create: storage.CreateMode(9)}); err == nil || !strings.Contains(err.Error(), "Options.Create") {
		t.Errorf("create mode 9: %v", err)
	}
	if _, err := OpenMemory(4096, storage.Identity{}); err == nil {
		t.Error("OpenMemory without an identity")
	}
	if _, err := NewSimDevice(4096, storage.Identity{}); err == nil {
		t.Error("NewSimDevice without an identity")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("refused opens left %v behind", ents)
	}
}

// The largest member set a log records round-trips.
func TestIdentityRoundTripsAtTheLimit(t *testing.T) {
	id := storage.Identity{ClusterID: 1<<64 - 1, ReplicaID: 1<<32 - 1}
	for i := range maxIdentMembers {
		id.Members = append(id.Members, wire.ReplicaID(1<<32-maxIdentMembers+i))
	}
	l, err := OpenMemory(4096, id)
	if err != nil {
		t.Fatal(err)
	}
	if got := reopen(t, l).Identity(); !got.Equal(id) {
		t.Fatalf("recovered %v, want %v", got, id)
	}
}

// A version 1 file (no identity) is refused with a *VersionError naming the
// version, never adopted.
func TestVersion1FileIsRefused(t *testing.T) {
	path, b := bootstrapped(t, testDir(t))
	binary.LittleEndian.PutUint32(b[8:], 1)
	binary.LittleEndian.PutUint32(b[60:], crc32c(b[:60]))
	clear(b[identOff : identOff+identSize]) // version 1 had nothing there
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []storage.CreateMode{storage.MustExist, storage.CreateIfMissing} {
		_, err := Open(path, Options{Identity: testID, Create: mode})
		var ve *VersionError
		if !errors.As(err, &ve) || ve.Version != 1 || ve.Path != path ||
			!strings.Contains(err.Error(), "version 1") || !strings.Contains(err.Error(), path) {
			t.Fatalf("%v open of a version 1 log: %v; want a VersionError naming version 1", mode, err)
		}
		t.Logf("%v", err)
	}
	if after, _ := os.ReadFile(path); !slices.Equal(after, b) {
		t.Fatal("open changed a version 1 file")
	}
}

// Creation is crash-consistent: a child process that dies (SIGKILL) at any
// step of creating a log leaves no log at the path (MustExist still says
// there is none; never a half-made log refused as corrupt, never a log
// without its identity), and the next creation succeeds and removes the
// dead one's temporary file. A temporary file a live creator holds (locked)
// is left alone.
func TestCrashDuringCreation(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: kills child processes mid-creation; make test runs it")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Skipf("cannot find this test binary to re-run it as the crashing child: %v", err)
	}
	dir := testDir(t)
	held := filepath.Join(dir, tempPrefix("r.pmem")+"held")
	hf, err := os.Create(held)
	if err != nil {
		t.Fatal(err)
	}
	defer hf.Close()
	if err := unix.Flock(int(hf.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "r.pmem")
	for _, step := range []string{"reserved", "written", "synced"} {
		cmd := exec.Command(exe, "-test.run=^$")
		cmd.Env = append(os.Environ(), createCrashEnv+"="+step+":"+path)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("child crashing at %q: %v, output %q; want it killed", step, err, out)
		}
		stale, _ := filepath.Glob(filepath.Join(dir, tempPrefix("r.pmem")+"*"))
		if len(stale) != 2 {
			t.Fatalf("after a crash at %q: temporary files %v; want the dead creator's and the held one", step, stale)
		}
		if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("a crash at %q left a file at the log's path: %v", step, err)
		}
		if _, err := Open(path, existing(Options{})); !errors.Is(err, storage.ErrNoLog) {
			t.Fatalf("MustExist after a crash at %q: %v; want ErrNoLog", step, err)
		}
		l, err := Open(path, Options{Identity: testID, Create: storage.MustCreate, Size: 1 << 20})
		if err != nil {
			t.Fatalf("bootstrap after a crash at %q: %v", step, err)
		}
		l.Close()
		if stale, _ := filepath.Glob(filepath.Join(dir, tempPrefix("r.pmem")+"*")); !slices.Equal(stale, []string{held}) {
			t.Fatalf("after creation: temporary files %v; want only the held one", stale)
		}
		os.Remove(path)
	}
}

const createCrashEnv = "VESTA_PMEM_CREATE_CRASH"

// createCrashChild creates the log named in the environment and SIGKILLs
// itself at the step named there.
func createCrashChild(spec string) {
	step, path, _ := strings.Cut(spec, ":")
	createHook = func(s string) {
		if s == step {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {}
		}
	}
	l, err := Open(path, Options{Identity: testID, Create: storage.MustCreate, Size: 1 << 20})
	fmt.Fprintf(os.Stderr, "creation did not crash at %q: %v, %v\n", step, l, err)
	os.Exit(3)
}
