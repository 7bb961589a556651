package paxos

import (
	"errors"
	"testing"

	"github.com/vestalabs/vesta/engine/wire"
)

// A handover to a named replica makes it lead, with everything the old
// leader chose, and the old leader follows.
func TestHandoverToANamedReplica(t *testing.T) {
	c := newTestCluster(t, 3)
	c.elect(1)
	for i := range 3 {
		if err := c.nodes[1].Propose(batch(string(rune('a' + i)))); err != nil {
			t.Fatal(err)
		}
	}
	c.settle()
	commit := c.nodes[1].Status().Commit
	if err := c.nodes[1].TransferLeadership(3); err != nil {
		t.Fatal(err)
	}
	if err := c.nodes[1].Propose(batch("late")); !errors.Is(err, ErrHandover) {
		t.Fatalf("Propose while handing over: %v", err)
	}
	for range 20 {
		c.nodes[1].Tick()
		c.settle()
		if c.nodes[3].Status().Role == Leader {
			break
		}
	}
	if st := c.nodes[3].Status(); st.Role != Leader || st.Commit < commit {
		t.Fatalf("replica 3 after the handover: %+v (commit before %d)", st, commit)
	}
	if r := c.nodes[1].Status().Role; r != Follower {
		t.Fatalf("old leader is %v", r)
	}
}

// With no target named, the most caught-up peer is asked; a vetoed replica
// does not take it, and the handover is given up after ElectionTicks; a
// replica allowed again takes it.
func TestHandoverChoosesAndRespectsAVeto(t *testing.T) {
	c := newTestCluster(t, 3)
	c.elect(1)
	c.nodes[2].SetCanLead(false)
	c.nodes[3].SetCanLead(false)
	if err := c.nodes[1].TransferLeadership(0); err != nil {
		t.Fatal(err)
	}
	for range 30 {
		c.nodes[1].Tick()
		c.settle()
	}
	if c.nodes[1].Status().Role != Leader {
		t.Fatal("a vetoed peer took leadership")
	}
	if c.nodes[1].HandingOver() != 0 {
		t.Fatal("the handover was not given up")
	}
	if err := c.nodes[1].Propose(batch("after")); err != nil {
		t.Fatalf("Propose after a handover given up: %v", err)
	}
	c.nodes[3].SetCanLead(true)
	if err := c.nodes[1].TransferLeadership(3); err != nil {
		t.Fatal(err)
	}
	for range 30 {
		c.nodes[1].Tick()
		c.settle()
		if c.nodes[3].Status().Role == Leader {
			break
		}
	}
	if c.nodes[3].Status().Role != Leader {
		t.Fatalf("replica 3, the only one allowed, does not lead: %+v", c.nodes[3].Status())
	}
	if err := c.nodes[2].TransferLeadership(1); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("a follower handed over: %v", err)
	}
	if err := c.nodes[3].TransferLeadership(9); err == nil {
		t.Fatal("handed over to a non-member")
	}
}

// A leader that is vetoed hands leadership over by itself.
func TestVetoedLeaderStepsAside(t *testing.T) {
	c := newTestCluster(t, 3)
	c.elect(1)
	c.nodes[1].SetCanLead(false)
	for range 30 {
		c.nodes[1].Tick()
		c.settle()
	}
	if c.nodes[1].Status().Role == Leader {
		t.Fatal("a vetoed leader kept leading")
	}
	if c.nodes[2].Status().Role != Leader && c.nodes[3].Status().Role != Leader {
		t.Fatal("nobody leads")
	}
}

// The leader sees each peer's health: last contact, durable commit index,
// slots outstanding.
func TestPeerHealth(t *testing.T) {
	c := newTestCluster(t, 3)
	c.elect(1)
	c.drop = func(m wire.Message) bool { return m.To == 3 || m.From == 3 }
	for i := range 3 {
		c.nodes[1].Propose(batch(string(rune('a' + i))))
		c.nodes[1].Tick()
		c.settle()
	}
	st := c.nodes[1].Status()
	peers := c.nodes[1].Peers()
	if len(peers) != 2 {
		t.Fatalf("peers %+v", peers)
	}
	for _, p := range peers {
		switch p.ID {
		case 2:
			if p.Outstanding != 0 || p.Commit == 0 {
				t.Errorf("peer 2 (reachable): %+v", p)
			}
		case 3:
			if p.Commit >= st.Commit || p.LastContact < 3 {
				t.Errorf("peer 3 (cut off): %+v, leader's commit %d", p, st.Commit)
			}
		}
	}
}
