package paxos

import (
	"errors"
	"testing"

	"github.com/vestalabs/vesta/engine/wire"
)

// logLen is how many slots the replica's in-memory log holds.
func logLen(n *Node) int { return len(n.log) }

func wantTooFar(t *testing.T, err error) {
	t.Helper()
	var me *MessageError
	if !errors.As(err, &me) || me.Kind != RefusedSlotTooFar {
		t.Fatalf("want a RefusedSlotTooFar MessageError, got %v", err)
	}
}

// One Accept with a huge slot used to grow the acceptor's log to it (issue
// 12, item 4). It is refused whole, with nothing recorded and no vote.
func TestAcceptBeyondReachIsRefused(t *testing.T) {
	n := newTestNode(t, 1, 3)
	for _, s := range []wire.Slot{1 << 62, ^wire.Slot(0) - 1, wire.Slot(n.cfg.maxSlotsAhead())} {
		wantTooFar(t, n.Step(acceptMsg(2, 1, 0, 0, s)))
		if logLen(n) != 0 || n.HasReady() || n.Status().Promised != (wire.Ballot{}) {
			t.Fatalf("slot %d: a refused Accept changed the replica: log %d slots, status %+v", s, logLen(n), n.Status())
		}
	}
	// The last slot in reach is taken.
	mustStep(t, n, acceptMsg(2, 1, 0, wire.Slot(n.cfg.maxSlotsAhead())-1))
	if logLen(n) != int(n.cfg.maxSlotsAhead()) {
		t.Fatalf("log holds %d slots", logLen(n))
	}
}

// A Promise reporting a huge slot used to make the new leader fill every
// hole below it with a no-op.
func TestPromiseBeyondReachIsRefused(t *testing.T) {
	n := newTestNode(t, 1, 3)
	for n.Status().Role != Candidate {
		n.Tick()
	}
	b := n.Status().Ballot
	n.Ready()
	far := wire.Message{Type: wire.MsgPromise, From: 2, To: 1, Ballot: b, Entries: []wire.Entry{
		{Slot: 1 << 40, Ballot: wire.Ballot{Round: 0, Replica: 2}, Value: batch("far")},
	}}
	wantTooFar(t, n.Step(far))
	n.Advance()
	mustStep(t, n, wire.Message{Type: wire.MsgPromise, From: 3, To: 1, Ballot: b})
	if n.Status().Role != Leader || n.Status().NextSlot != 0 || logLen(n) != 0 {
		t.Fatalf("leader after a refused promise: %+v, log %d slots", n.Status(), logLen(n))
	}
}

// A catch-up reply with a huge slot is refused too.
func TestCatchUpBeyondReachIsRefused(t *testing.T) {
	n := newTestNode(t, 1, 3)
	wantTooFar(t, n.Step(wire.Message{Type: wire.MsgCatchUp, From: 2, To: 1, Commit: 1 << 50,
		Entries: []wire.Entry{{Slot: 1 << 50, Ballot: wire.BallotChosen, Value: batch("x")}}}))
	if logLen(n) != 0 {
		t.Fatalf("log holds %d slots", logLen(n))
	}
}

// A follower that lags by more than MaxSlotsAhead refuses the leader's
// Accepts, catches up from its heartbeats, and then votes again: the bound
// costs a lagging replica its vote for a while, never the cluster's safety
// or its progress.
func TestLaggingFollowerCatchesUpThenVotes(t *testing.T) {
	c := newTestCluster(t, 3)
	for _, n := range c.nodes {
		n.cfg.Window, n.cfg.MaxSlotsAhead, n.cfg.MaxCatchUpEntries = 2, 8, 4
	}
	c.elect(1)
	// Replica 3 hears nothing while 30 slots are chosen.
	c.drop = func(m wire.Message) bool { return m.To == 3 || m.From == 3 }
	for i := range 30 {
		if err := c.nodes[1].Propose(batch("p" + itoa(uint64(i)))); err != nil && !errors.Is(err, ErrQueueFull) {
			t.Fatal(err)
		}
		c.settle()
	}
	lead := c.nodes[1].Status().Commit
	if lead < 20 || c.nodes[3].Status().Commit != 0 {
		t.Fatalf("commit: leader %d, replica 3 %d", lead, c.nodes[3].Status().Commit)
	}
	// Reconnected, 3 first refuses what is beyond its reach...
	far := wire.Message{Type: wire.MsgAccept, From: 1, To: 3, Ballot: c.nodes[1].Status().Ballot, Commit: lead,
		Entries: []wire.Entry{{Slot: lead, Ballot: c.nodes[1].Status().Ballot, Value: batch("next")}}}
	wantTooFar(t, c.nodes[3].Step(far))
	// ... then catches up from heartbeats, and votes for the next slots.
	refused := 0
	c.drop = nil
	var stepErr error
	for range 50 {
		c.nodes[1].Tick()
		c.nodes[2].Tick()
		c.nodes[3].Tick()
		for _, id := range []wire.ReplicaID{1, 2, 3} {
			msgs, applied := drain(c.nodes[id])
			c.queue = append(c.queue, msgs...)
			c.applied[id] = append(c.applied[id], applied...)
		}
		for len(c.queue) > 0 {
			m := c.queue[0]
			c.queue = c.queue[1:]
			if err := c.nodes[m.To].Step(m); err != nil {
				var me *MessageError
				if !errors.As(err, &me) || me.Kind != RefusedSlotTooFar {
					stepErr = err
				}
				refused++
			}
			for _, id := range []wire.ReplicaID{1, 2, 3} {
				msgs, applied := drain(c.nodes[id])
				c.queue = append(c.queue, msgs...)
				c.applied[id] = append(c.applied[id], applied...)
			}
		}
	}
	if stepErr != nil {
		t.Fatal(stepErr)
	}
	if got := c.nodes[3].Status().Commit; got != c.nodes[1].Status().Commit {
		t.Fatalf("replica 3 at commit %d, leader at %d", got, c.nodes[1].Status().Commit)
	}
	// It votes again: with replica 2 cut off, slots are still chosen.
	c.drop = func(m wire.Message) bool { return m.To == 2 || m.From == 2 }
	before := c.nodes[1].Status().Commit
	if err := c.nodes[1].Propose(batch("after")); err != nil {
		t.Fatal(err)
	}
	c.settle()
	if c.nodes[1].Status().Commit <= before {
		t.Fatalf("no slot chosen with replica 3 as the only voter: commit %d", c.nodes[1].Status().Commit)
	}
	t.Logf("refused %d messages on the way", refused)
}

func TestMaxSlotsAheadIsValidated(t *testing.T) {
	cfg := testConfig(1, 3)
	cfg.Window, cfg.MaxSlotsAhead = 16, 31
	var ce *ConfigError
	if err := cfg.Validate(); !errors.As(err, &ce) || ce.Field != "MaxSlotsAhead" {
		t.Fatalf("want a MaxSlotsAhead ConfigError, got %v", err)
	}
	cfg.MaxSlotsAhead = 0
	if got := cfg.maxSlotsAhead(); got != DefaultMaxSlotsAhead {
		t.Fatalf("default %d", got)
	}
	cfg.Window = 1 << 15
	if got := cfg.maxSlotsAhead(); got != 4<<15 {
		t.Fatalf("default with a large window: %d", got)
	}
}
