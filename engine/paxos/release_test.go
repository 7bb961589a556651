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

// A Prepare from below this replica's commit index (a candidate that is
// behind, or a stale message from below the release point) gets no promise:
// a Nack telling the candidate how far behind it is, no raised promise, and
// no reset of the election timer. From the commit index on, it promises.
func TestPrepareFromBehindGetsNack(t *testing.T) {
	n := releasedNode(t)
	before := n.Status().Promised
	for _, from := range []wire.Slot{2, 6} { // below the release point; below the commit index
		mustStep(t, n, prepare(3, 9, from))
		msgs, _ := drain(n)
		if len(msgs) != 1 || msgs[0].Type != wire.MsgNack || msgs[0].Commit != 8 || msgs[0].Ballot != before {
			t.Fatalf("Prepare from %d: want one Nack with commit 8 and ballot %v: %v", from, before, msgs)
		}
		if n.Status().Promised != before {
			t.Fatalf("promise moved from %v to %v", before, n.Status().Promised)
		}
	}
	mustStep(t, n, prepare(3, 9, 8))
	msgs, _ := drain(n)
	if len(msgs) != 1 || msgs[0].Type != wire.MsgPromise || len(msgs[0].Entries) != 0 {
		t.Fatalf("want a promise from slot 8 reporting nothing: %v", msgs)
	}
}

// A candidate that is behind cannot hold the cluster: the replicas ahead of
// it keep their election timers running while it retries, so one of them
// runs and wins, and the candidate, told how far behind it is, catches up.
func TestCandidateBehindDoesNotStallTheCluster(t *testing.T) {
	c := newTestCluster(t, 3)
	c.elect(1)
	c.drop = func(m wire.Message) bool { return m.To == 3 || m.From == 3 }
	c.proposeMany(1, 50)
	// The leader goes silent; replica 3, far behind, comes back and runs.
	c.drop = func(m wire.Message) bool { return m.To == 1 || m.From == 1 }
	var won wire.ReplicaID
	for range 200 {
		for id := wire.ReplicaID(2); id <= 3; id++ {
			c.nodes[id].Tick()
		}
		c.settle()
		for id := wire.ReplicaID(2); id <= 3; id++ {
			if c.nodes[id].Status().Role == Leader {
				won = id
			}
		}
		if won != 0 {
			break
		}
	}
	if won != 2 {
		t.Fatalf("want replica 2 (up to date) to win, got %d; statuses %+v %+v", won, c.nodes[2].Status(), c.nodes[3].Status())
	}
	for range 10 {
		c.heartbeat(2)
	}
	if got, want := c.nodes[3].Status().Commit, c.nodes[2].Status().Commit; got != want || got < 50 {
		t.Fatalf("replica 3 commit %d, leader %d (want at least 50)", got, want)
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

// A catch-up reply stops at MaxCatchUpBytes of values (a reply too large for
// the transport's frame limit would never arrive), but always carries one.
func TestCatchUpReplyIsBoundedInBytes(t *testing.T) {
	cfg := testConfig(1, 3)
	cfg.MaxCatchUpBytes = 10
	var p Persisted
	p.HardState.Commit = 4
	for s := range wire.Slot(4) {
		p.Entries = append(p.Entries, wire.Entry{Slot: s, Ballot: wire.BallotChosen, Value: batch("0123456")}) // 7 bytes each
	}
	n, err := New(cfg, p)
	if err != nil {
		t.Fatal(err)
	}
	drain(n)
	for _, tc := range []struct {
		from wire.Slot
		want int
	}{{0, 1}, {3, 1}} {
		mustStep(t, n, wire.Message{Type: wire.MsgCatchUpRequest, From: 2, To: 1, Slot: tc.from, Commit: 4})
		msgs, _ := drain(n)
		if len(msgs) != 1 || len(msgs[0].Entries) != tc.want || msgs[0].Entries[0].Slot != tc.from {
			t.Fatalf("from %d: want %d entries from there: %v", tc.from, tc.want, msgs)
		}
	}
	cfg.MaxCatchUpBytes = 14
	n, _ = New(cfg, p)
	drain(n)
	mustStep(t, n, wire.Message{Type: wire.MsgCatchUpRequest, From: 2, To: 1, Slot: 0, Commit: 4})
	if msgs, _ := drain(n); len(msgs) != 1 || len(msgs[0].Entries) != 2 {
		t.Fatalf("want two entries of 7 bytes within 14: %v", msgs)
	}
}

// The leader keeps at most MaxInflightBytes of values proposed and not yet
// chosen (besides Window slots), and always admits one slot: what a promise
// carries after a leader fails stays bounded, so it fits in a frame.
func TestInflightBytesBoundTheWindow(t *testing.T) {
	c := newTestCluster(t, 3)
	for _, n := range c.nodes {
		n.cfg.MaxInflightBytes, n.cfg.Window, n.cfg.MaxPending = 10, 100, 100
	}
	c.elect(1)
	c.drop = func(m wire.Message) bool { return m.From != 1 } // nothing is acknowledged
	l := c.nodes[1]
	for i := range 5 {
		if err := l.Propose(batch("abcdef" + itoa(uint64(i)))); err != nil { // 7 bytes each
			t.Fatal(err)
		}
	}
	c.settle()
	st := l.Status()
	if in := st.NextSlot - st.Commit; in != 2 || st.Pending != 3 {
		t.Fatalf("in flight %d slots with %d pending, want 2 (14 bytes reach the bound of 10) and 3", in, st.Pending)
	}
	c.drop = nil
	for range 5 {
		c.heartbeat(1)
	}
	if st := l.Status(); st.Pending != 0 || st.Commit != st.NextSlot {
		t.Fatalf("once acknowledged, everything commits: %+v", st)
	}
	// One value larger than the bound still goes through, alone.
	if err := l.Propose(batch("0123456789abcdef")); err != nil {
		t.Fatal(err)
	}
	c.settle()
	if st := l.Status(); st.Commit != st.NextSlot || st.Pending != 0 {
		t.Fatalf("a value over the bound must still be proposed: %+v", st)
	}
}
