package paxos

import (
	"testing"

	"github.com/vestalabs/vesta/engine/wire"
)

// proposeMany has leader id propose count values, settling the cluster after
// each so the small test window never overflows.
func (c *testCluster) proposeMany(id wire.ReplicaID, count int) {
	c.t.Helper()
	for i := range count {
		if err := c.nodes[id].Propose(batch("v" + itoa(uint64(i)))); err != nil {
			c.t.Fatal(err)
		}
		c.settle()
	}
}

// heartbeat ticks leader id until it sends a heartbeat, and settles.
func (c *testCluster) heartbeat(id wire.ReplicaID) {
	for range c.nodes[id].cfg.HeartbeatTicks {
		c.nodes[id].Tick()
	}
	c.settle()
}

// With every member up, every replica drops the values every member holds
// durably, and its in-memory log stays bounded however many slots pass.
func TestReleaseBoundsTheLogWhenEveryMemberHoldsIt(t *testing.T) {
	c := newTestCluster(t, 3)
	c.elect(1)
	const slots = 3000
	c.proposeMany(1, slots)
	c.heartbeat(1)
	c.heartbeat(1) // the followers' commit reaches the leader, then its release point the followers
	for id, n := range c.nodes {
		st := n.Status()
		if st.Released == 0 || st.Released > st.Applied {
			t.Fatalf("replica %d: released %d, applied %d", id, st.Released, st.Applied)
		}
		if st.Commit-st.Released > 8 {
			t.Errorf("replica %d: commit %d, released only %d", id, st.Commit, st.Released)
		}
		if n.base == 0 || len(n.log) > 2*max(minShift, n.cfg.Window)+16 {
			t.Errorf("replica %d: log holds %d slots from %d after %d slots", id, len(n.log), n.base, st.Commit)
		}
		for s := n.base; s < n.released; s++ {
			if st := n.at(s); st.value.Data != nil || !st.chosen {
				t.Fatalf("replica %d: released slot %d still holds %v (chosen %v)", id, s, st.value, st.chosen)
			}
		}
	}
	// Everything was applied, in order, on every replica, released or not.
	for id := range c.nodes {
		if len(c.applied[id]) < slots {
			t.Fatalf("replica %d applied %d of %d", id, len(c.applied[id]), slots)
		}
		for i, e := range c.applied[id] {
			if !e.Value.Equal(c.applied[1][i].Value) {
				t.Fatalf("replica %d slot %d applied %v, leader %v", id, i, e.Value, c.applied[1][i].Value)
			}
		}
	}
}

// While a member hears nothing, its durable commit index is unknown, so no
// replica releases anything: that member may still ask for every value.
func TestNoReleaseWhileAMemberIsSilent(t *testing.T) {
	c := newTestCluster(t, 3)
	c.elect(1)
	c.drop = func(m wire.Message) bool { return m.To == 3 || m.From == 3 }
	c.proposeMany(1, 200)
	c.heartbeat(1)
	c.heartbeat(1)
	for id, n := range c.nodes {
		if r := n.Status().Released; r != 0 {
			t.Fatalf("replica %d released up to %d while replica 3 was silent", id, r)
		}
	}
	// Once it is back, it catches up from the values everybody kept, and
	// then the cluster releases.
	c.drop = nil
	for range 20 {
		c.heartbeat(1)
	}
	if got, want := c.nodes[3].Status().Commit, c.nodes[1].Status().Commit; got != want {
		t.Fatalf("replica 3 commit %d, leader %d", got, want)
	}
	if r := c.nodes[1].Status().Released; r == 0 {
		t.Fatal("the leader released nothing after replica 3 caught up")
	}
}

// releasedNode returns replica 1 of 3, a follower of replica 2 in ballot 1.2
// that applied slots [0,8) and was told that release point 6 holds.
func releasedNode(t *testing.T) *Node {
	n := newTestNode(t, 1, 3)
	mustStep(t, n, acceptMsg(2, 1, 0, 0, 1, 2, 3, 4, 5, 6, 7))
	drain(n)
	hb := wire.Message{Type: wire.MsgHeartbeat, From: 2, To: 1, Ballot: wire.Ballot{Round: 1, Replica: 2}, Commit: 8}
	mustStep(t, n, hb)
	drain(n) // applies [0,8)
	hb.Slot = 6
	mustStep(t, n, hb)
	drain(n)
	if r := n.Status().Released; r != 6 {
		t.Fatalf("released %d, want 6", r)
	}
	return n
}

// A follower never releases beyond what it applied, whatever the leader says.
func TestReleaseStopsAtApplied(t *testing.T) {
	n := newTestNode(t, 1, 3)
	mustStep(t, n, acceptMsg(2, 1, 0, 0, 1, 2, 3))
	drain(n)
	hb := wire.Message{Type: wire.MsgHeartbeat, From: 2, To: 1, Ballot: wire.Ballot{Round: 1, Replica: 2}, Commit: 2, Slot: 100}
	mustStep(t, n, hb) // commit reaches 2 here; nothing applied yet
	if r := n.Status().Released; r != 0 {
		t.Fatalf("released %d before applying anything", r)
	}
	drain(n)
	mustStep(t, n, hb)
	if r := n.Status().Released; r != 2 {
		t.Fatalf("released %d, want applied 2", r)
	}
}

// A Prepare from below the release point (necessarily stale) gets no
// promise, and does not raise this replica's promise either.
func TestPrepareBelowReleaseGetsNoPromise(t *testing.T) {
	n := releasedNode(t)
	before := n.Status().Promised
	mustStep(t, n, prepare(3, 9, 2))
	msgs, _ := drain(n)
	for _, m := range msgs {
		if m.Type == wire.MsgPromise {
			t.Fatalf("promised from slot 2, below release point 6: %v", m)
		}
	}
	if n.Status().Promised != before {
		t.Fatalf("promise moved from %v to %v", before, n.Status().Promised)
	}
	// From the release point on, the promise is given with what it holds.
	mustStep(t, n, prepare(3, 9, 6))
	msgs, _ = drain(n)
	var got *wire.Message
	for i := range msgs {
		if msgs[i].Type == wire.MsgPromise {
			got = &msgs[i]
		}
	}
	if got == nil || len(got.Entries) != 2 || got.Entries[0].Slot != 6 {
		t.Fatalf("want a promise reporting slots 6 and 7: %v", msgs)
	}
}

// A catch-up request for released values gets no reply (nothing faithful can
// be sent); one from the release point on is answered.
func TestCatchUpRequestBelowReleaseIsNotAnswered(t *testing.T) {
	n := releasedNode(t)
	req := wire.Message{Type: wire.MsgCatchUpRequest, From: 3, To: 1, Slot: 3, Commit: 8}
	mustStep(t, n, req)
	if msgs, _ := drain(n); len(msgs) != 0 {
		t.Fatalf("answered a request for released slots: %v", msgs)
	}
	req.Slot = 6
	mustStep(t, n, req)
	msgs, _ := drain(n)
	if len(msgs) != 1 || msgs[0].Type != wire.MsgCatchUp || len(msgs[0].Entries) != 2 {
		t.Fatalf("want slots 6 and 7 sent: %v", msgs)
	}
}

// An Accept entry for a released slot (a stale duplicate) gets no vote; the
// rest of the message is handled as usual.
func TestAcceptBelowReleaseGetsNoVote(t *testing.T) {
	n := releasedNode(t)
	mustStep(t, n, acceptMsg(2, 1, 8, 5, 8))
	msgs, _ := drain(n)
	if len(msgs) != 1 || msgs[0].Type != wire.MsgAccepted {
		t.Fatalf("want one Accepted: %v", msgs)
	}
	if r := msgs[0].Ranges; len(r) != 1 || r[0] != (wire.SlotRange{Lo: 8, Hi: 9}) {
		t.Fatalf("acked %v, want only [8,9)", r)
	}
}

// A catch-up reply that repeats released slots is not checked against values
// no longer kept, and does not disturb the learner.
func TestCatchUpRepeatingReleasedSlots(t *testing.T) {
	n := releasedNode(t)
	mustStep(t, n, wire.Message{Type: wire.MsgCatchUp, From: 3, To: 1, Commit: 8, Entries: []wire.Entry{
		{Slot: 5, Ballot: wire.BallotChosen, Value: batch("v5@1")},
		{Slot: 7, Ballot: wire.BallotChosen, Value: batch("v7@1")},
	}})
	if st := n.Status(); st.Commit != 8 || st.Released != 6 {
		t.Fatalf("status %+v", st)
	}
}
