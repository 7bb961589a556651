package paxos

import (
	"errors"
	"testing"

	"github.com/vestalabs/vesta/engine/wire"
)

// A follower that hears no leader starts an election after its randomized
// timeout, with one Prepare for the whole unchosen suffix.
func TestElectionStartsAfterTimeout(t *testing.T) {
	n := newTestNode(t, 1, 3)
	ticks := 0
	for n.Status().Role == Follower {
		n.Tick()
		ticks++
		if ticks > 2*testConfig(1, 3).ElectionTicks {
			t.Fatal("no election within 2*ElectionTicks")
		}
	}
	if ticks < testConfig(1, 3).ElectionTicks {
		t.Fatalf("election after %d ticks, before ElectionTicks", ticks)
	}
	rd := n.Ready()
	if !rd.SaveHardState || rd.HardState.Promised != n.Status().Ballot {
		t.Fatalf("candidate's own promise must be persisted: %+v", rd)
	}
	prepares := 0
	for _, m := range rd.Send {
		if m.Type == wire.MsgPrepare && m.Slot == 0 {
			prepares++
		}
	}
	if prepares != 2 {
		t.Fatalf("want a Prepare to each of 2 peers, got %v", rd.Send)
	}
}

// The candidate's own promise counts only once durable.
func TestCandidateCountsOwnPromiseOnlyWhenDurable(t *testing.T) {
	n := newTestNode(t, 1, 3)
	for n.Status().Role != Candidate {
		n.Tick()
	}
	b := n.Status().Ballot
	rd := n.Ready()
	_ = rd
	mustStep(t, n, wire.Message{Type: wire.MsgPromise, From: 2, To: 1, Ballot: b})
	if n.Status().Role == Leader {
		t.Fatal("became leader with one peer promise and its own promise not yet durable")
	}
	n.Advance()
	if n.Status().Role != Leader {
		t.Fatalf("not leader after own promise became durable: %+v", n.Status())
	}
}

// A new leader re-proposes the highest-ballot value reported for each slot
// and fills holes with no-ops.
func TestNewLeaderReproposesHighestBallotAndFillsHoles(t *testing.T) {
	n := newTestNode(t, 1, 3)
	for n.Status().Role != Candidate {
		n.Tick()
	}
	b := n.Status().Ballot
	n.Ready() // own promise not yet durable: it waits for its sync
	low := wire.Ballot{Round: 0, Replica: 2}
	high := wire.Ballot{Round: 0, Replica: 3}
	mustStep(t, n, wire.Message{Type: wire.MsgPromise, From: 2, To: 1, Ballot: b, Entries: []wire.Entry{
		{Slot: 0, Ballot: low, Value: batch("old")},
		{Slot: 3, Ballot: low, Value: batch("three")},
	}})
	mustStep(t, n, wire.Message{Type: wire.MsgPromise, From: 3, To: 1, Ballot: b, Entries: []wire.Entry{
		{Slot: 0, Ballot: high, Value: batch("new")},
	}})
	if n.Status().Role == Leader {
		t.Fatal("leads on its peers' promises before its own promise is durable")
	}
	n.Advance()
	if n.Status().Role != Leader {
		t.Fatal("not leader with a quorum of promises and its own durable")
	}
	rd := n.Ready()
	want := map[wire.Slot]wire.Value{0: batch("new"), 1: wire.Noop, 2: wire.Noop, 3: batch("three")}
	got := map[wire.Slot]wire.Value{}
	for _, e := range rd.Entries {
		if e.Ballot != b {
			t.Fatalf("re-proposal in ballot %v, want %v", e.Ballot, b)
		}
		got[e.Slot] = e.Value
	}
	for s, v := range want {
		if !got[s].Equal(v) {
			t.Errorf("slot %d: re-proposed %v, want %v", s, got[s], v)
		}
	}
	if n.Status().NextSlot != 4 {
		t.Fatalf("next slot %d, want 4", n.Status().NextSlot)
	}
}

// The leader keeps at most Window slots in flight, queues MaxPending more,
// and refuses beyond that.
func TestLeaderWindowAndQueue(t *testing.T) {
	c := newTestCluster(t, 3)
	c.elect(1)
	c.drop = func(m wire.Message) bool { return m.Type == wire.MsgAccepted } // nothing gets chosen
	l := c.nodes[1]
	cfg := testConfig(1, 3)
	for i := range cfg.Window + cfg.MaxPending {
		if err := l.Propose(batch("x" + itoa(uint64(i)))); err != nil {
			t.Fatalf("proposal %d: %v", i, err)
		}
	}
	if err := l.Propose(batch("over")); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("want ErrQueueFull, got %v", err)
	}
	st := l.Status()
	if int(st.NextSlot-st.Commit) != cfg.Window || st.Pending != cfg.MaxPending {
		t.Fatalf("in flight %d (want %d), pending %d (want %d)", st.NextSlot-st.Commit, cfg.Window, st.Pending, cfg.MaxPending)
	}
	// Once acks flow, the window drains the queue.
	c.drop = nil
	l.Tick()
	l.Tick() // heartbeat: retransmit
	c.settle()
	st = l.Status()
	if st.Pending != 0 || st.Commit != st.NextSlot {
		t.Fatalf("queue not drained after acks: %+v", st)
	}
	if err := c.nodes[2].Propose(batch("y")); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("follower Propose: want ErrNotLeader, got %v", err)
	}
}

// The leader may send accepts before its own vote is durable, but counts that
// vote only after Advance: with both peers silent nothing is chosen.
func TestLeaderCountsOwnVoteOnlyWhenDurable(t *testing.T) {
	c := newTestCluster(t, 3)
	c.elect(1)
	l := c.nodes[1]
	if err := l.Propose(batch("a")); err != nil {
		t.Fatal(err)
	}
	rd := l.Ready()
	var accepts int
	for _, m := range rd.Send {
		if m.Type == wire.MsgAccept {
			accepts++
		}
	}
	if accepts != 2 {
		t.Fatalf("accepts should leave before the leader's persist: %v", rd.Send)
	}
	slot := rd.Entries[0].Slot
	b := l.Status().Ballot
	// One peer votes before the leader's own write is durable: no quorum yet.
	mustStep(t, l, wire.Message{Type: wire.MsgAccepted, From: 2, To: 1, Ballot: b, Ranges: []wire.SlotRange{{Lo: slot, Hi: slot + 1}}})
	if l.Status().Commit > slot {
		t.Fatal("chosen with the leader's vote not yet durable")
	}
	l.Advance()
	if l.Status().Commit != slot+1 {
		t.Fatalf("not chosen after the leader's vote became durable: %+v", l.Status())
	}
}

// A leader that meets a higher ballot steps down and hands back the
// proposals it never proposed.
func TestLeaderStepsDownOnHigherBallot(t *testing.T) {
	c := newTestCluster(t, 3)
	c.elect(1)
	c.drop = func(m wire.Message) bool { return m.Type == wire.MsgAccepted }
	l := c.nodes[1]
	for i := range testConfig(1, 3).Window + 1 {
		_ = l.Propose(batch("p" + itoa(uint64(i))))
	}
	c.settle()
	b := l.Status().Ballot
	mustStep(t, l, wire.Message{Type: wire.MsgNack, From: 2, To: 1, Ballot: wire.Ballot{Round: b.Round + 1, Replica: 2}})
	if l.Status().Role != Follower {
		t.Fatal("leader did not step down on a higher ballot")
	}
	rd := l.Ready()
	if len(rd.Dropped) != 1 || !rd.Dropped[0].Equal(batch("p4")) {
		t.Fatalf("the queued proposal must come back as Dropped: %v", rd.Dropped)
	}
}

// Leadership moves on when the leader goes silent, and the new leader keeps
// every chosen value.
func TestFailoverKeepsChosenValues(t *testing.T) {
	c := newTestCluster(t, 3)
	c.elect(1)
	for i := range 3 {
		if err := c.nodes[1].Propose(batch("before" + itoa(uint64(i)))); err != nil {
			t.Fatal(err)
		}
	}
	c.settle()
	c.drop = func(m wire.Message) bool { return m.From == 1 || m.To == 1 } // replica 1 is cut off
	c.elect(2)
	if err := c.nodes[2].Propose(batch("after")); err != nil {
		t.Fatal(err)
	}
	c.settle()
	var got []string
	for _, e := range c.applied[2] {
		if e.Value.Kind == wire.ValueBatch {
			got = append(got, string(e.Value.Data))
		}
	}
	want := []string{"before0", "before1", "before2", "after"}
	if len(got) != len(want) {
		t.Fatalf("new leader applied %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("new leader applied %v, want %v", got, want)
		}
	}
}
