package engine

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vestalabs/vesta/engine/wire"
)

// vetoSM is counterSM whose replica may not lead while veto is set.
type vetoSM struct {
	counterSM
	veto atomic.Bool
}

func (s *vetoSM) CanBecomeLeader() bool { return !s.veto.Load() }

// TransferLeadership hands leadership to the replica named, which leads
// with every write the old leader chose; OnLeaderChange reports it; the
// leader's Status shows its peers' health.
func TestTransferLeadership(t *testing.T) {
	var mu sync.Mutex
	changes := map[wire.ReplicaID][]LeaderChange{}
	c := newTestCluster(t, 3, memLogs)
	for _, id := range c.members {
		c.replicas[id].Stop()
		delete(c.replicas, id)
	}
	c.configure = func(id wire.ReplicaID, cfg *Config) {
		cfg.OnLeaderChange = func(ch LeaderChange) {
			mu.Lock()
			changes[id] = append(changes[id], ch)
			mu.Unlock()
		}
	}
	for _, id := range c.members {
		c.start(id)
	}
	l := c.leader()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range 10 {
		if _, err := c.replicas[l].Propose(ctx, []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	// Health is published every heartbeat interval.
	for deadline := time.Now().Add(5 * time.Second); len(c.replicas[l].Status().Peers) != 2; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("leader's peers: %+v", c.replicas[l].Status().Peers)
		}
	}
	to := l%3 + 1
	got, err := c.replicas[l].TransferLeadership(ctx, to)
	if err != nil || got != to {
		t.Fatalf("TransferLeadership(%d) = %d, %v", to, got, err)
	}
	if _, err := c.replicas[to].Propose(ctx, []byte("after")); err != nil {
		t.Fatalf("new leader %d: %v", to, err)
	}
	var nl *NotLeaderError
	if _, err := c.replicas[l].TransferLeadership(ctx, 0); !errors.As(err, &nl) {
		t.Fatalf("a follower handed over: %v", err)
	}
	// OnLeaderChange runs on its own goroutine: wait for it.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		mu.Lock()
		seen := false
		for _, ch := range changes[to] {
			if ch.Leader == to && ch.IsSelf {
				seen = true
			}
		}
		got := append([]LeaderChange(nil), changes[to]...)
		mu.Unlock()
		if seen {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica %d was not told it leads: %+v", to, got)
		}
	}
}

// A state machine that vetoes leading keeps its replica from leading: a
// leader that is vetoed hands over, and a vetoed replica never takes over.
func TestLeadershipVeto(t *testing.T) {
	c := newTestCluster(t, 3, memLogs)
	l := c.leader()
	for _, id := range c.members {
		c.replicas[id].Stop()
		delete(c.replicas, id)
	}
	sms := map[wire.ReplicaID]*vetoSM{}
	for _, id := range c.members {
		sms[id] = &vetoSM{}
	}
	sms[l].veto.Store(true)
	for _, id := range c.members {
		if err := c.startWith(id, sms[id]); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		for id, r := range c.replicas {
			if r.Status().Role == "leader" {
				if id == l {
					t.Fatalf("vetoed replica %d leads", id)
				}
				return
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("nobody leads")
}
