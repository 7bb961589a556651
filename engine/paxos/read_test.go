package paxos

import (
	"testing"

	"github.com/vestalabs/vesta/engine/wire"
)

// A leader's read is confirmed by one probe round and comes back at the
// leader's commit index; reads asked while a round is out share the next
// round; nothing is appended to the log.
func TestReadIndexIsConfirmedByAQuorum(t *testing.T) {
	c := newTestCluster(t, 3)
	c.elect(1)
	l := c.nodes[1]
	for i := range 3 {
		if err := l.Propose(batch(string(rune('a' + i)))); err != nil {
			t.Fatal(err)
		}
	}
	c.settle()
	commit := l.Status().Commit
	nextSlot := l.Status().NextSlot
	if !l.ReadIndex(7) || !l.ReadIndex(8) {
		t.Fatal("the leader refused a read")
	}
	c.settle()
	got := c.reads[1]
	if len(got) != 2 || got[0] != (ReadState{7, commit}) || got[1] != (ReadState{8, commit}) {
		t.Fatalf("reads %v, want 7 and 8 at commit index %d", got, commit)
	}
	if s := l.Status(); s.NextSlot != nextSlot || s.Commit != commit {
		t.Fatalf("a read moved the log: next slot %d -> %d, commit %d -> %d", nextSlot, s.NextSlot, commit, s.Commit)
	}
	if c.nodes[2].ReadIndex(9) {
		t.Fatal("a follower took a read index")
	}
}

// Without answers from a quorum, no read is confirmed; the round is sent
// again, and once the peers answer the read completes.
func TestReadIndexWaitsForAQuorum(t *testing.T) {
	c := newTestCluster(t, 3)
	c.elect(1)
	l := c.nodes[1]
	c.drop = func(m wire.Message) bool { return m.Type == wire.MsgReadProbe }
	l.ReadIndex(1)
	c.settle()
	for range 10 {
		l.Tick()
		c.settle()
	}
	if len(c.reads[1]) != 0 {
		t.Fatalf("read confirmed without a quorum: %v", c.reads[1])
	}
	c.drop = nil
	for range 5 {
		l.Tick()
		c.settle()
	}
	if len(c.reads[1]) != 1 {
		t.Fatalf("read not confirmed after the probes got through: %v", c.reads[1])
	}
}

// A peer that promised a higher ballot refuses the probe; a leader that
// steps down fails its waiting reads.
func TestReadIndexFailsWhenLeadershipIsLost(t *testing.T) {
	c := newTestCluster(t, 3)
	c.elect(1)
	// Replica 2 takes over, but replica 1 does not hear of it yet.
	c.drop = func(m wire.Message) bool { return m.To == 1 || m.From == 1 }
	c.elect(2)
	if c.nodes[1].Status().Role != Leader {
		t.Fatal("replica 1 should still think it leads")
	}
	c.drop = nil
	c.nodes[1].ReadIndex(5)
	c.settle()
	if len(c.reads[1]) != 0 {
		t.Fatalf("a deposed leader confirmed a read: %v", c.reads[1])
	}
	if f := c.readsFailed[1]; len(f) != 1 || f[0] != 5 {
		t.Fatalf("reads failed %v, want [5]", f)
	}
}

// The read index is at least the end of the slots a new leader re-proposed:
// a value chosen under the old leader is never read around.
func TestReadIndexCoversTheSlotsANewLeaderReproposed(t *testing.T) {
	c := newTestCluster(t, 3)
	c.elect(1)
	// Replica 1 gets a value accepted by replica 2 only, then fails.
	c.drop = func(m wire.Message) bool { return m.To == 3 || m.From == 3 }
	if err := c.nodes[1].Propose(batch("x")); err != nil {
		t.Fatal(err)
	}
	c.settle()
	c.drop = func(m wire.Message) bool { return m.To == 1 || m.From == 1 }
	c.elect(2)
	l := c.nodes[2]
	lead := l.leadStart
	if lead == 0 {
		t.Fatal("no re-proposed slots")
	}
	l.ReadIndex(1)
	c.settle()
	if r := c.reads[2]; len(r) != 1 || r[0].Index < lead {
		t.Fatalf("reads %v, want index at least %d", r, lead)
	}
}
