package paxos

import (
	"slices"
	"testing"

	"github.com/vestalabs/vesta/engine/wire"
)

// Compact releases every value below the checkpoint at once, even while a
// member is silent (its durable commit index holds the release point back):
// a member that is down no longer holds this replica's memory.
func TestCompactReleasesBelowTheCheckpointWhileAMemberIsDown(t *testing.T) {
	c := newTestCluster(t, 3)
	c.elect(1)
	c.drop = func(m wire.Message) bool { return m.To == 3 || m.From == 3 }
	c.proposeMany(1, 300)
	c.heartbeat(1)
	for _, id := range []wire.ReplicaID{1, 2} {
		n := c.nodes[id]
		if r := n.Status().Released; r != 0 {
			t.Fatalf("replica %d released %d before any checkpoint while 3 was silent", id, r)
		}
		applied := n.Status().Applied
		n.Compact(applied)
		st := n.Status()
		if st.Snapshot != applied || st.Released != applied {
			t.Fatalf("replica %d after Compact(%d): %+v", id, applied, st)
		}
		if len(n.log) > max(minShift, n.cfg.Window)+16 {
			t.Errorf("replica %d still holds %d slots from %d", id, len(n.log), n.base)
		}
		n.Compact(applied - 5) // an older checkpoint changes nothing
		if n.Status().Snapshot != applied {
			t.Fatalf("replica %d: an older checkpoint moved the snapshot back", id)
		}
	}
}

// A catch-up request from below the released prefix is answered with
// SendSnapshot (once per Ready, however often it asks), whether or not a
// checkpoint reaches that far yet: without one, the caller takes one first
// (a replica that joined after every member held the values asks for
// them); a request the log can answer gets entries, not a transfer.
func TestCatchUpBelowTheCheckpointAsksForATransfer(t *testing.T) {
	n := releasedNode(t) // applied [0,8), released below 6 by the release point
	req := wire.Message{Type: wire.MsgCatchUpRequest, From: 3, To: 1, Slot: 3, Commit: 8}
	mustStep(t, n, req)
	if rd := n.Ready(); !slices.Equal(rd.SendSnapshot, []wire.ReplicaID{3}) || len(rd.Send) != 0 {
		t.Fatalf("without a checkpoint: %+v, want a transfer to 3 (the caller takes a checkpoint first)", rd)
	}
	n.Advance()
	n.Compact(7)
	mustStep(t, n, req)
	mustStep(t, n, req)
	rd := n.Ready()
	if !slices.Equal(rd.SendSnapshot, []wire.ReplicaID{3}) || len(rd.Send) != 0 {
		t.Fatalf("want one transfer to 3 and no message: %+v", rd)
	}
	n.Advance()
	// An asker at the checkpoint's slot gets the log's entries.
	req.Slot = 7
	mustStep(t, n, req)
	if rd := n.Ready(); len(rd.SendSnapshot) != 0 {
		t.Fatalf("sent a checkpoint of slot 7 to a replica at 7: %+v", rd)
	}
}

// InstallSnapshot moves a replica that is behind to the checkpoint's slot:
// commit, applied and the log's start; entries above it stay (they may be
// votes already revealed), the next Ready persists the new commit index
// and applies nothing below the checkpoint, and catch-up resumes from there.
func TestInstallSnapshotJumpsToTheCheckpoint(t *testing.T) {
	n := newTestNode(t, 1, 3)
	// Votes for slots 20 and 21 in ballot 1.2; nothing below.
	mustStep(t, n, acceptMsg(2, 1, 0, 20, 21))
	drain(n)
	if n.NeedsSnapshot(0) || !n.NeedsSnapshot(20) {
		t.Fatal("NeedsSnapshot is not 'beyond the commit index'")
	}
	if !n.InstallSnapshot(20, n.Memberships()) {
		t.Fatal("refused a checkpoint it needs")
	}
	st := n.Status()
	if st.Commit != 20 || st.Applied != 20 || st.Snapshot != 20 || st.Released != 20 || n.base != 20 {
		t.Fatalf("after install: %+v base %d", st, n.base)
	}
	if e := n.at(21); e.ballot != (wire.Ballot{Round: 1, Replica: 2}) {
		t.Fatalf("the vote for slot 21 is gone: %+v", e)
	}
	rd := n.Ready()
	if !rd.SaveHardState || rd.HardState.Commit != 20 || len(rd.Apply) != 0 {
		t.Fatalf("first Ready after install: %+v", rd)
	}
	n.Advance()
	if n.InstallSnapshot(20, n.Memberships()) || n.InstallSnapshot(10, n.Memberships()) {
		t.Fatal("installed a checkpoint that brings nothing")
	}
	// The leader's commit index 22 makes slot 20 and 21 chosen (accepted in
	// its ballot), then asks for the rest.
	mustStep(t, n, wire.Message{Type: wire.MsgHeartbeat, From: 2, To: 1, Ballot: wire.Ballot{Round: 1, Replica: 2}, Commit: 25})
	msgs, applied := drain(n)
	if len(applied) != 2 || applied[0].Slot != 20 || applied[1].Slot != 21 {
		t.Fatalf("applied %v, want slots 20 and 21", applied)
	}
	var asked bool
	for _, m := range msgs {
		asked = asked || (m.Type == wire.MsgCatchUpRequest && m.Slot == 22)
	}
	if !asked {
		t.Fatalf("no catch-up request from slot 22: %v", msgs)
	}
}

// A candidate or leader that installs a checkpoint steps down first.
func TestInstallSnapshotStepsDown(t *testing.T) {
	c := newTestCluster(t, 3)
	c.elect(1)
	n := c.nodes[1]
	if !n.InstallSnapshot(50, n.Memberships()) {
		t.Fatal("refused")
	}
	if st := n.Status(); st.Role != Follower || st.Commit != 50 {
		t.Fatalf("after install: %+v", st)
	}
}

// A replica restarts from its checkpoint and the log after it: entries below
// the checkpoint are ignored (their ballots still bound the promise), the
// commit index is at least the checkpoint's slot, and nothing below it is
// applied again.
func TestRestartFromACheckpoint(t *testing.T) {
	b := wire.Ballot{Round: 3, Replica: 2}
	p := Persisted{
		Snapshot:  10,
		HardState: HardState{Promised: wire.Ballot{Round: 1, Replica: 2}, Commit: 4},
		Entries: []wire.Entry{
			{Slot: 2, Ballot: b, Value: batch("old")},
			{Slot: 10, Ballot: wire.Ballot{Round: 1, Replica: 2}, Value: batch("x")},
		},
	}
	n, err := New(testConfig(1, 3), p)
	if err != nil {
		t.Fatal(err)
	}
	st := n.Status()
	if st.Commit != 10 || st.Applied != 10 || st.Snapshot != 10 || st.Promised != b {
		t.Fatalf("restored %+v", st)
	}
	rd := n.Ready()
	if len(rd.Apply) != 0 || !rd.SaveHardState || rd.HardState.Commit != 10 {
		t.Fatalf("first Ready: %+v", rd)
	}
	// A commit index past the checkpoint needs its entries.
	p.HardState.Commit = 12
	if _, err := New(testConfig(1, 3), p); err == nil {
		t.Fatal("restored a commit index covering slot 11, which has no entry")
	}
}

// A lagging member catches up through a checkpoint when every other replica
// compacted the slots it lacks: the whole cluster ends at one commit index
// and the lagging member applies exactly the slots after the checkpoint.
func TestLaggingMemberCatchesUpThroughACheckpoint(t *testing.T) {
	c := newTestCluster(t, 3)
	c.elect(1)
	c.drop = func(m wire.Message) bool { return m.To == 3 || m.From == 3 }
	c.proposeMany(1, 100)
	c.heartbeat(1)
	ck := c.nodes[1].Status().Applied
	for _, id := range []wire.ReplicaID{1, 2} {
		c.nodes[id].Compact(ck)
	}
	c.drop = nil
	for range 20 {
		c.heartbeat(1)
	}
	if c.transfers != 1 {
		t.Fatalf("%d transfers installed, want 1", c.transfers)
	}
	c.proposeMany(1, 5)
	c.heartbeat(1)
	want := c.nodes[1].Status().Commit
	for id, n := range c.nodes {
		if got := n.Status().Commit; got != want {
			t.Fatalf("replica %d commit %d, leader %d", id, got, want)
		}
	}
	if got := c.applied[3]; len(got) == 0 || got[0].Slot != ck {
		t.Fatalf("replica 3 applied from slot %v, want the checkpoint's %d", got[0].Slot, ck)
	}
}
