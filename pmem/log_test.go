package pmem

import (
	"errors"
	"slices"
	"sync"
	"testing"

	"github.com/vestalabs/vesta/engine/paxos"
	"github.com/vestalabs/vesta/engine/storage"
	"github.com/vestalabs/vesta/engine/wire"
)

// testID is the identity of the tests' logs.
var testID = storage.Identity{ClusterID: 7, ReplicaID: 2, Members: []wire.ReplicaID{1, 2, 3}}

// newMemory is OpenMemory with the tests' identity.
func newMemory(t testing.TB, dataSize int) *Log {
	t.Helper()
	l, err := OpenMemory(dataSize, testID)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func entry(slot int, data string) wire.Entry {
	return wire.Entry{Slot: wire.Slot(slot), Ballot: wire.Ballot{Round: 3, Replica: 2}, Value: wire.Value{Kind: wire.ValueBatch, Data: []byte(data)}}
}

// reopen recovers a memory log's current bytes as a crash would find them
// after the last fence (memory logs have no caches to lose).
func reopen(t *testing.T, l *Log) *Log {
	t.Helper()
	l2, err := openOn(media{buf: slices.Clone(l.m.buf), method: flushNone}, "reopened", DurabilityMemory)
	if err != nil {
		t.Fatal(err)
	}
	return l2
}

func mustLoad(t *testing.T, l storage.Log) paxos.Persisted {
	t.Helper()
	p, err := l.Load()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestAppendSyncLoad(t *testing.T) {
	l := newMemory(t, 8192)
	hs := paxos.HardState{Promised: wire.Ballot{Round: 4, Replica: 1}, Commit: 2}
	es := []wire.Entry{entry(0, "a"), entry(1, ""), {Slot: 2, Ballot: wire.BallotChosen, Value: wire.Noop}}
	if err := l.Append(es, hs, true); err != nil {
		t.Fatal(err)
	}
	buf := es[0].Value.Data
	buf[0] = 'X' // Append copied
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	p := mustLoad(t, reopen(t, l))
	want := []wire.Entry{entry(0, "a"), entry(1, ""), {Slot: 2, Ballot: wire.BallotChosen, Value: wire.Noop}}
	if p.HardState != hs || !entriesEqual(p.Entries, want) {
		t.Fatalf("loaded %+v, want hs %+v entries %v", p, hs, want)
	}
	// Load belongs to the state at open: a fresh log loads nothing.
	if p := mustLoad(t, l); len(p.Entries) != 0 {
		t.Fatalf("Load after appends returned %d entries; want the state at open", len(p.Entries))
	}
}

func TestUnsyncedAppendsAreNotRecovered(t *testing.T) {
	l := newMemory(t, 4096)
	l.Append([]wire.Entry{entry(0, "kept")}, paxos.HardState{Commit: 1}, true)
	l.Sync()
	l.Append([]wire.Entry{entry(1, "lost")}, paxos.HardState{Commit: 2}, true)
	p := mustLoad(t, reopen(t, l))
	if len(p.Entries) != 1 || p.HardState.Commit != 1 {
		t.Fatalf("recovered %+v; want only the synced entry and hard state", p)
	}
}

func TestHardStateWithoutSaveIsKept(t *testing.T) {
	l := newMemory(t, 4096)
	hs := paxos.HardState{Promised: wire.Ballot{Round: 9, Replica: 3}, Commit: 0}
	l.Append(nil, hs, true)
	l.Append([]wire.Entry{entry(0, "x")}, paxos.HardState{Commit: 77}, false)
	l.Sync()
	if p := mustLoad(t, reopen(t, l)); p.HardState != hs || len(p.Entries) != 1 {
		t.Fatalf("recovered %+v; want hs %+v and one entry", p, hs)
	}
}

func TestSyncWithNothingNewCommitsNothing(t *testing.T) {
	l := newMemory(t, 4096)
	l.Append([]wire.Entry{entry(0, "x")}, paxos.HardState{}, false)
	l.Sync()
	seq := l.Status().Seq
	for range 3 {
		l.Sync()
		l.Append(nil, paxos.HardState{}, true) // the same hard state again
	}
	l.Sync()
	if s := l.Status(); s.Seq != seq || s.Commits != 1 || s.Syncs != 5 {
		t.Fatalf("status %+v; want seq %d, 1 commit, 5 syncs", s, seq)
	}
}

// A full log pushes back with ErrFull, applies nothing of the failed call,
// never overwrites a live record, and takes appends again after Compact.
func TestFullLogPushesBack(t *testing.T) {
	l := newMemory(t, 4096)
	var appended []wire.Entry
	var err error
	for i := 0; ; i++ {
		e := entry(i, string(make([]byte, 100)))
		if err = l.Append([]wire.Entry{e}, paxos.HardState{Commit: wire.Slot(i)}, true); err != nil {
			break
		}
		appended = append(appended, e)
		if i%3 == 0 {
			l.Sync()
		}
	}
	if !errors.Is(err, ErrFull) {
		t.Fatalf("append to a full log: %v, want ErrFull", err)
	}
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	n := len(appended)
	p := mustLoad(t, reopen(t, l))
	if !entriesEqual(p.Entries, appended) || p.HardState.Commit != wire.Slot(n-1) {
		t.Fatalf("after ErrFull: %d entries, commit %d; want %d entries, commit %d", len(p.Entries), p.HardState.Commit, n, n-1)
	}
	st := l.Status()
	if st.FullRejects != 1 || st.Used > st.Capacity {
		t.Fatalf("status after ErrFull: %+v", st)
	}
	// A hard state needs no record space: promises persist on a full log.
	if err := l.Append(nil, paxos.HardState{Promised: wire.Ballot{Round: 100, Replica: 1}}, true); err != nil {
		t.Fatal(err)
	}
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := l.Compact(wire.Slot(n / 2)); err != nil {
		t.Fatal(err)
	}
	if err := l.Append([]wire.Entry{entry(n, "after")}, paxos.HardState{}, false); err != nil {
		t.Fatalf("append after compaction: %v", err)
	}
	l.Sync()
	p = mustLoad(t, reopen(t, l))
	want := append(slices.Clone(appended[n/2:]), entry(n, "after"))
	if !entriesEqual(p.Entries, want) || p.HardState.Promised.Round != 100 {
		t.Fatalf("after compaction: %d entries (first slot %d), hs %+v; want %d entries from slot %d", len(p.Entries), p.Entries[0].Slot, p.HardState, len(want), n/2)
	}
}

func TestTooLarge(t *testing.T) {
	l := newMemory(t, 4096)
	big := entry(0, string(make([]byte, l.MaxRecord())))
	if err := l.Append([]wire.Entry{big}, paxos.HardState{}, false); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized append: %v, want ErrTooLarge", err)
	}
	fits := entry(0, string(make([]byte, l.MaxRecord()-EncodedSize([]wire.Entry{entry(0, "")}))))
	for i := range 10 { // the largest record fits at any lap position once the log is empty
		if err := l.Append([]wire.Entry{fits}, paxos.HardState{}, false); err != nil {
			t.Fatalf("largest record, round %d: %v", i, err)
		}
		if err := l.Compact(1); err != nil {
			t.Fatal(err)
		}
		l.Append([]wire.Entry{entry(1, "shift")}, paxos.HardState{}, false)
		l.Compact(2)
	}
}

func TestCompactKeepsRecordsAfterTheFirstKept(t *testing.T) {
	l := newMemory(t, 4096)
	l.Append([]wire.Entry{entry(0, "a")}, paxos.HardState{}, false)
	l.Append([]wire.Entry{entry(5, "b")}, paxos.HardState{}, false)
	l.Append([]wire.Entry{entry(1, "c")}, paxos.HardState{}, false) // re-accepted low slot after a kept one
	if err := l.Compact(3); err != nil {
		t.Fatal(err)
	}
	p := mustLoad(t, reopen(t, l))
	if !entriesEqual(p.Entries, []wire.Entry{entry(5, "b"), entry(1, "c")}) {
		t.Fatalf("after Compact(3): %v", p.Entries)
	}
}

func TestClosedLogRefusesEverything(t *testing.T) {
	l := newMemory(t, 4096)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	for name, err := range map[string]error{
		"Append": l.Append(nil, paxos.HardState{}, true), "Sync": l.Sync(), "Compact": l.Compact(0), "Close": l.Close(),
	} {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close: %v", name, err)
		}
	}
	if _, err := l.Load(); !errors.Is(err, ErrClosed) {
		t.Errorf("Load after Close: %v", err)
	}
}

// Status may be read from another goroutine while the owner appends.
func TestStatusWhileAppending(t *testing.T) {
	l := newMemory(t, 8192)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
				if s := l.Status(); s.Used > s.Capacity || s.Pending > s.Used {
					t.Errorf("inconsistent status %+v", s)
					return
				}
			}
		}
	}()
	for i := range 2000 {
		if err := l.Append([]wire.Entry{entry(i, "payload")}, paxos.HardState{Commit: wire.Slot(i)}, true); errors.Is(err, ErrFull) {
			l.Compact(wire.Slot(i))
		}
		if i%4 == 0 {
			l.Sync()
		}
	}
	close(stop)
	wg.Wait()
	s := l.Status()
	if s.Durability.String() != "memory" || s.Flush.String() != "none" || s.Appends < 2000 || s.Records == 0 || s.Compactions == 0 {
		t.Fatalf("final status %+v", s)
	}
}
