package paxos

import (
	"testing"

	"github.com/vestalabs/vesta/engine/wire"
)

func newPreVoteNode(t testing.TB, id, n int, preVote bool) *Node {
	t.Helper()
	cfg := testConfig(id, n)
	cfg.PreVote = preVote
	nd, err := New(cfg, Persisted{})
	if err != nil {
		t.Fatal(err)
	}
	return nd
}

func newPreVoteCluster(t testing.TB, n int, preVote bool) *testCluster {
	c := &testCluster{t: t, nodes: map[wire.ReplicaID]*Node{}, applied: map[wire.ReplicaID][]wire.Entry{}}
	for i := 1; i <= n; i++ {
		c.nodes[wire.ReplicaID(i)] = newPreVoteNode(t, i, n, preVote)
	}
	return c
}

// tickAll ticks every replica k times, delivering what they send each time.
func (c *testCluster) tickAll(k int) {
	for range k {
		for id := wire.ReplicaID(1); int(id) <= len(c.nodes); id++ {
			c.nodes[id].Tick()
		}
		c.settle()
	}
}

// A replica that hears from nobody asks for pre-votes again and again, and
// never raises its promise or sends a Prepare.
func TestPreVoteRaisesNoPromise(t *testing.T) {
	n := newPreVoteNode(t, 1, 3, true)
	before := n.Status().Promised
	asked := 0
	for range 10 * testConfig(1, 3).ElectionTicks {
		n.Tick()
		msgs, _ := drain(n)
		for _, m := range msgs {
			switch m.Type {
			case wire.MsgPrepare:
				t.Fatalf("sent a Prepare without a quorum of pre-votes: %v", m)
			case wire.MsgPreVote:
				asked++
			}
		}
	}
	if st := n.Status(); st.Role != Follower || st.Promised != before {
		t.Fatalf("after pre-votes nobody answered: role %v, promised %v (was %v)", st.Role, st.Promised, before)
	}
	if asked == 0 {
		t.Fatal("never asked for a pre-vote")
	}
}

// One yes from a peer is a quorum of three with the asker's own: it
// campaigns, with a Prepare to both peers.
func TestPreVoteQuorumStartsTheElection(t *testing.T) {
	n := newPreVoteNode(t, 1, 3, true)
	var ask wire.Message
	for ticks := 0; ask.Type != wire.MsgPreVote; ticks++ {
		if ticks > 2*testConfig(1, 3).ElectionTicks {
			t.Fatal("no pre-vote within 2*ElectionTicks")
		}
		n.Tick()
		msgs, _ := drain(n)
		for _, m := range msgs {
			if m.Type == wire.MsgPreVote {
				ask = m
			}
		}
	}
	if n.Status().Role != Follower {
		t.Fatalf("campaigning before any pre-vote came back: %+v", n.Status())
	}
	// A grant for another ballot, or from itself, counts for nothing.
	if err := n.Step(wire.Message{Type: wire.MsgPreVoteGrant, From: 2, To: 1, Ballot: wire.Ballot{Round: ask.Ballot.Round + 1, Replica: 1}}); err != nil {
		t.Fatal(err)
	}
	if n.Status().Role != Follower {
		t.Fatal("a grant for another ballot started the election")
	}
	mustStep(t, n, wire.Message{Type: wire.MsgPreVoteGrant, From: 2, To: 1, Ballot: ask.Ballot})
	if n.Status().Role != Candidate {
		t.Fatalf("a quorum of pre-votes did not start the election: %+v", n.Status())
	}
	msgs, _ := drain(n)
	prepares := 0
	for _, m := range msgs {
		if m.Type == wire.MsgPrepare && !m.Ballot.Less(ask.Ballot) {
			prepares++
		}
	}
	if prepares != 2 {
		t.Fatalf("want a Prepare at or above %v to each peer, got %v", ask.Ballot, msgs)
	}
}

// grants returns the pre-vote grants among msgs.
func grants(msgs []wire.Message) int {
	k := 0
	for _, m := range msgs {
		if m.Type == wire.MsgPreVoteGrant {
			k++
		}
	}
	return k
}

// A replica says yes only when no leader was heard from for an election
// timeout and the asker is not behind it.
func TestPreVoteGrantRules(t *testing.T) {
	c := newPreVoteCluster(t, 3, true)
	c.elect(1)
	if err := c.nodes[1].Propose(batch("x")); err != nil {
		t.Fatal(err)
	}
	c.settle()
	c.tickAll(testConfig(1, 3).HeartbeatTicks) // the commit index reaches the followers
	commit := c.nodes[2].Status().Commit
	if commit == 0 {
		t.Fatal("nothing committed at replica 2")
	}
	ask := func(to wire.ReplicaID, slot wire.Slot) int {
		n := c.nodes[to]
		mustStep(t, n, wire.Message{Type: wire.MsgPreVote, From: 3, To: to, Ballot: wire.Ballot{Round: 99, Replica: 3}, Slot: slot})
		msgs, _ := drain(n)
		return grants(msgs)
	}
	if g := ask(2, commit); g != 0 {
		t.Fatal("a follower that just heard from the leader said yes")
	}
	if g := ask(1, commit); g != 0 {
		t.Fatal("the leader said yes")
	}
	// Replica 2 hears nothing for an election timeout (it asks for pre-votes
	// itself meanwhile; nobody gets them).
	c.drop = func(wire.Message) bool { return true }
	for range 2 * testConfig(2, 3).ElectionTicks {
		c.nodes[2].Tick()
		c.settle()
	}
	if g := ask(2, commit-1); g != 0 {
		t.Fatal("said yes to an asker whose commit index is behind")
	}
	if g := ask(2, commit); g != 1 {
		t.Fatal("no leader heard from for an election timeout, an asker not behind, and no yes")
	}
}

// The point of pre-vote: a replica cut off for many election timeouts comes
// back without unseating the leader. Without pre-vote it campaigned while
// cut off, and its higher ballot ended the leader's term when it was back.
func TestCutOffReplicaDoesNotUnseatTheLeader(t *testing.T) {
	for _, preVote := range []bool{true, false} {
		c := newPreVoteCluster(t, 3, preVote)
		c.elect(1)
		b := c.nodes[1].Status().Ballot
		c.drop = func(m wire.Message) bool { return m.From == 3 || m.To == 3 }
		c.tickAll(20 * testConfig(1, 3).ElectionTicks)
		c.drop = nil
		c.tickAll(5 * testConfig(1, 3).ElectionTicks)
		st := c.nodes[1].Status()
		kept := st.Role == Leader && st.Ballot == b
		switch {
		case preVote && !kept:
			t.Fatalf("with pre-vote, the leader lost its term to a replica back from a partition: %+v", st)
		case preVote && c.nodes[3].Status().Leader != 1:
			t.Fatalf("with pre-vote, replica 3 does not follow replica 1 again: %+v", c.nodes[3].Status())
		case !preVote && kept:
			t.Fatal("without pre-vote the leader kept its term: this test no longer shows what pre-vote spares")
		}
	}
}
