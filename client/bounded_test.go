package client

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/vestalabs/vesta/tools/vestad/kv"
)

// ReadAtAnyReplica: the client learns the slot of every answer, sends its
// reads to every server in turn with the highest slot it has seen as their
// min slot, moves a read on from a server that is behind, and leaves its
// idea of the leader alone.
func TestReadAtAnyReplica(t *testing.T) {
	fc := newFakeCluster(t, 3, kv.Options{})
	c, err := New(fc.addrs(), Options{Reads: ReadAtAnyReplica, HedgeDelay: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if c.SeenSlot() != 0 {
		t.Fatalf("seen slot %d before any call", c.SeenSlot())
	}
	if err := c.Put(ctx, []byte("k"), []byte("v1")); err != nil {
		t.Fatal(err)
	}
	afterPut := c.SeenSlot()
	fc.mu.Lock()
	want := Slot(fc.slot + 1)
	fc.mu.Unlock()
	if afterPut != want {
		t.Fatalf("seen slot %d after the put, want its slot plus one, %d", afterPut, want)
	}
	leader := *c.leader.Load()

	fc.mu.Lock()
	before := map[int]int{0: fc.reqs[0], 1: fc.reqs[1], 2: fc.reqs[2]}
	fc.mu.Unlock()
	for i := 0; i < 6; i++ {
		v, found, err := c.Get(ctx, []byte("k"))
		if err != nil || !found || string(v) != "v1" {
			t.Fatalf("get %d: %q %v %v", i, v, found, err)
		}
	}
	fc.mu.Lock()
	for i := 0; i < 3; i++ {
		if n := fc.reqs[i] - before[i]; n != 2 {
			t.Errorf("server %d got %d of 6 reads, want 2 (round robin)", i, n)
		}
	}
	for _, m := range fc.minSlots {
		if Slot(m) != afterPut {
			t.Errorf("a read's min slot %d, want the seen slot %d", m, afterPut)
		}
	}
	fc.minSlots = nil
	// Server 0 falls behind: reads sent to it move on.
	fc.lag[0] = 1
	fc.mu.Unlock()
	if *c.leader.Load() != leader {
		t.Errorf("reads at any replica moved the leader from %s to %s", leader, *c.leader.Load())
	}
	for i := 0; i < 6; i++ {
		if _, found, err := c.Get(ctx, []byte("k")); err != nil || !found {
			t.Fatalf("get %d with server 0 behind: %v %v", i, found, err)
		}
	}

	// Stale allowed: at once, flagged, from the server asked.
	r, err := c.GetBounded(ctx, []byte("k"), BoundedRead{AllowStale: true, Addr: fc.servers[0].addr})
	if err != nil || !r.Stale || r.Applied != 1 || string(r.Value) != "v1" {
		t.Fatalf("stale read at the lagging server: %+v %v", r, err)
	}
	// A min slot above the seen slot is the floor; the seen slot stays.
	r, err = c.GetBounded(ctx, []byte("k"), BoundedRead{MinSlot: afterPut + 100, AllowStale: true, Addr: fc.servers[1].addr})
	if err != nil || !r.Stale || r.Applied != afterPut {
		t.Fatalf("stale read above the seen slot: %+v %v", r, err)
	}
	if c.SeenSlot() != afterPut {
		t.Fatalf("seen slot %d after stale reads, want %d", c.SeenSlot(), afterPut)
	}

	// Every server behind: the call fails at its deadline, saying so.
	fc.mu.Lock()
	fc.lag[1], fc.lag[2] = 1, 1
	fc.mu.Unlock()
	dctx, dcancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, _, err = c.Get(dctx, []byte("k"))
	dcancel()
	var ce *CallError
	if !errors.As(err, &ce) || !ce.Behind || !errors.Is(err, ErrReplicaBehind) || !errors.Is(err, context.DeadlineExceeded) ||
		!strings.Contains(err.Error(), "is behind") || !strings.Contains(err.Error(), "allow a stale answer") {
		t.Fatalf("every server behind: %v; want a CallError matching ErrReplicaBehind and the deadline", err)
	}
	if errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("a read's error matches ErrOutcomeUnknown: %v", err)
	}
}

func TestParseReadModeBounded(t *testing.T) {
	for _, m := range []ReadMode{ReadByIndex, ReadThroughLog, ReadByLease, ReadAtAnyReplica} {
		if p, err := ParseReadMode(m.String()); err != nil || p != m {
			t.Fatalf("ParseReadMode(%q) = %v, %v", m, p, err)
		}
	}
	if _, err := ParseReadMode("any"); err == nil || !strings.Contains(err.Error(), "bounded") {
		t.Fatalf("an unknown mode: %v", err)
	}
}
