package engine

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/vestalabs/vesta/engine/wire"
)

// Read (counterSM's engine.Reader) returns how many commands were applied.
func (s *counterSM) Read(query []byte) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if string(query) != "count" {
		return nil, errors.New("counterSM: unknown query")
	}
	return []byte(strconv.Itoa(len(s.cmds))), nil
}

// A read at the leader sees every write that completed before it, without
// a slot of its own; a follower refuses it naming the leader.
func TestReadIndexSeesCompletedWrites(t *testing.T) {
	c := newTestCluster(t, 3, memLogs)
	l := c.leader()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range 20 {
		res, err := c.replicas[l].Propose(ctx, []byte("w"+strconv.Itoa(i)))
		if err != nil {
			t.Fatal(err)
		}
		got, err := c.replicas[l].Read(ctx, []byte("count"), ReadIndex)
		if err != nil {
			t.Fatal(err)
		}
		if n, _ := strconv.Atoi(string(got)); n < mustAtoi(t, res) {
			t.Fatalf("read %s after the write that made %s", got, res)
		}
	}
	// Reads add no slot. The published commit index may trail the last
	// write's apply for a moment: wait until it settles, then read.
	var before uint64
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		st := c.replicas[l].Status()
		if st.Commit == st.Applied && st.Commit == before {
			break
		}
		before = st.Commit
		if time.Now().After(deadline) {
			t.Fatalf("commit index does not settle: %+v", st)
		}
	}
	for range 20 {
		if _, err := c.replicas[l].Read(ctx, []byte("count"), ReadIndex); err != nil {
			t.Fatal(err)
		}
	}
	if after := c.replicas[l].Status().Commit; after != before {
		t.Fatalf("20 reads moved the commit index %d -> %d: they went through the log", before, after)
	}
	for id, r := range c.replicas {
		if id == l {
			continue
		}
		_, err := r.Read(ctx, []byte("count"), ReadIndex)
		var nl *NotLeaderError
		if !errors.As(err, &nl) || nl.Leader != l {
			t.Fatalf("read at follower %d: %v, want a NotLeaderError naming %d", id, err, l)
		}
	}
}

// Many concurrent reads share probe rounds and all complete.
func TestManyConcurrentReads(t *testing.T) {
	c := newTestCluster(t, 3, memLogs)
	l := c.leader()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 400)
	for range 400 {
		wg.Go(func() {
			if _, err := c.replicas[l].Read(ctx, []byte("count"), ReadIndex); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func mustAtoi(t *testing.T, b []byte) int {
	n, err := strconv.Atoi(string(b))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// Lease reads at the leader see completed writes; with leases turned off
// they still work, by a read-index round.
func TestLeaseReads(t *testing.T) {
	for _, lease := range []int{0, -1} {
		c := newTestCluster(t, 3, memLogs)
		if lease < 0 {
			for _, id := range c.members {
				c.replicas[id].Stop()
				delete(c.replicas, id)
			}
			c.configure = func(_ wire.ReplicaID, cfg *Config) { cfg.LeaseTicks = -1 }
			for _, id := range c.members {
				c.start(id)
			}
		}
		l := c.leader()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		for i := range 20 {
			res, err := c.replicas[l].Propose(ctx, []byte("w"+strconv.Itoa(i)))
			if err != nil {
				t.Fatal(err)
			}
			got, err := c.replicas[l].Read(ctx, []byte("count"), ReadLease)
			if err != nil {
				t.Fatal(err)
			}
			if n, _ := strconv.Atoi(string(got)); n < mustAtoi(t, res) {
				t.Fatalf("lease %d: read %s after the write that made %s", lease, got, res)
			}
		}
		cancel()
	}
}

// ReadAt answers at any replica once it applied the slot asked for, or at
// once, flagged stale, when allowed.
func TestReadAtBoundsStaleness(t *testing.T) {
	c := newTestCluster(t, 3, memLogs)
	l := c.leader()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range 10 {
		if _, err := c.replicas[l].Propose(ctx, []byte("w"+strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	seen := wire.Slot(c.replicas[l].Status().Applied)
	for id, r := range c.replicas {
		got, applied, stale, err := r.ReadAt(ctx, []byte("count"), seen, false)
		if err != nil || stale || applied < seen {
			t.Fatalf("replica %d: ReadAt(%d) = %s applied %d stale %v: %v", id, seen, got, applied, stale, err)
		}
		if n, _ := strconv.Atoi(string(got)); n < 10 {
			t.Fatalf("replica %d: read %s at slot %d, after 10 writes", id, got, applied)
		}
		_, applied, stale, err = r.ReadAt(ctx, []byte("count"), seen+1000, true)
		if err != nil || !stale || applied >= seen+1000 {
			t.Fatalf("replica %d: a stale read allowed: applied %d stale %v: %v", id, applied, stale, err)
		}
	}
	short, cancel2 := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel2()
	if _, _, _, err := c.replicas[l].ReadAt(short, []byte("count"), seen+1000, false); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a read waiting for a slot never reached: %v", err)
	}
}
