package paxos

import (
	"testing"

	"github.com/vestalabs/vesta/engine/wire"
)

// A follower learns a slot chosen when the commit index arrives in the
// ballot it accepted that slot in, and applies it.
func TestFollowerLearnsCommitInSameBallot(t *testing.T) {
	n := newTestNode(t, 1, 3)
	mustStep(t, n, acceptMsg(2, 1, 0, 0, 1))
	drain(n)
	hb := wire.Message{Type: wire.MsgHeartbeat, From: 2, To: 1, Ballot: wire.Ballot{Round: 1, Replica: 2}, Commit: 2}
	mustStep(t, n, hb)
	_, applied := drain(n)
	if len(applied) != 2 || applied[0].Slot != 0 || applied[1].Slot != 1 {
		t.Fatalf("applied %v, want slots 0 and 1", applied)
	}
	if n.Status().Commit != 2 {
		t.Fatalf("commit %d, want 2", n.Status().Commit)
	}
}

// A slot accepted in another ballot may hold a value that was not chosen:
// the follower asks for the chosen value instead of applying its own.
func TestFollowerCatchesUpWhenBallotDiffers(t *testing.T) {
	n := newTestNode(t, 1, 3)
	mustStep(t, n, acceptMsg(2, 1, 0, 0)) // slot 0 accepted in 1.2
	drain(n)
	hb := wire.Message{Type: wire.MsgHeartbeat, From: 3, To: 1, Ballot: wire.Ballot{Round: 2, Replica: 3}, Commit: 1}
	mustStep(t, n, hb)
	msgs, applied := drain(n)
	if len(applied) != 0 {
		t.Fatalf("applied a value it could not know was chosen: %v", applied)
	}
	var req *wire.Message
	for i := range msgs {
		if msgs[i].Type == wire.MsgCatchUpRequest {
			req = &msgs[i]
		}
	}
	if req == nil || req.To != 3 || req.Slot != 0 || req.Commit != 1 {
		t.Fatalf("want a catch-up request to 3 for [0,1): %v", msgs)
	}
	mustStep(t, n, wire.Message{Type: wire.MsgCatchUp, From: 3, To: 1, Commit: 1, Entries: []wire.Entry{{Slot: 0, Ballot: wire.BallotChosen, Value: batch("chosen")}}})
	rd := n.Ready()
	if len(rd.Apply) != 1 || !rd.Apply[0].Value.Equal(batch("chosen")) {
		t.Fatalf("applied %v, want the chosen value", rd.Apply)
	}
	if len(rd.Entries) != 1 || rd.Entries[0].Ballot != wire.BallotChosen {
		t.Fatalf("the learned chosen value must be persisted as chosen: %v", rd.Entries)
	}
}

// A replica far behind catches up in bounded chunks from the leader.
func TestCatchUpInChunks(t *testing.T) {
	c := newTestCluster(t, 3)
	c.elect(1)
	c.drop = func(m wire.Message) bool { return m.To == 3 }
	for i := range 40 {
		if err := c.nodes[1].Propose(batch("v" + itoa(uint64(i)))); err != nil {
			t.Fatal(err)
		}
		c.settle()
	}
	c.drop = nil
	c.nodes[1].Tick()
	c.nodes[1].Tick()
	c.settle()
	if got := c.nodes[3].Status().Commit; got != c.nodes[1].Status().Commit {
		t.Fatalf("replica 3 commit %d, leader %d", got, c.nodes[1].Status().Commit)
	}
	for i, e := range c.applied[3] {
		if !e.Value.Equal(c.applied[1][i].Value) {
			t.Fatalf("slot %d: replica 3 applied %v, leader %v", i, e.Value, c.applied[1][i].Value)
		}
	}
}

// A restarted replica applies again everything its persisted commit index covers.
func TestRestartReappliesPersistedCommit(t *testing.T) {
	p := Persisted{
		HardState: HardState{Promised: wire.Ballot{Round: 3, Replica: 2}, Commit: 2},
		Entries: []wire.Entry{
			{Slot: 0, Ballot: wire.Ballot{Round: 1, Replica: 2}, Value: batch("a")},
			{Slot: 1, Ballot: wire.Ballot{Round: 1, Replica: 2}, Value: batch("b0")},
			{Slot: 1, Ballot: wire.Ballot{Round: 3, Replica: 2}, Value: batch("b")}, // later record wins
			{Slot: 2, Ballot: wire.Ballot{Round: 3, Replica: 2}, Value: batch("c")},
		},
	}
	n, err := New(testConfig(1, 3), p)
	if err != nil {
		t.Fatal(err)
	}
	_, applied := drain(n)
	if len(applied) != 2 || !applied[1].Value.Equal(batch("b")) {
		t.Fatalf("applied %v, want a then b", applied)
	}
}

// Persisted state that contradicts itself is refused, naming the problem.
func TestRestoreRefusesCommitWithoutEntries(t *testing.T) {
	_, err := New(testConfig(1, 3), Persisted{HardState: HardState{Commit: 3}})
	if _, ok := err.(*RestoreError); !ok {
		t.Fatalf("want *RestoreError, got %v", err)
	}
}

// An entry accepted under a ballot above the persisted promise (the promise
// record was torn away) raises the promise on restart.
func TestRestoreRaisesPromiseToAcceptedBallot(t *testing.T) {
	b := wire.Ballot{Round: 4, Replica: 3}
	n, err := New(testConfig(1, 3), Persisted{Entries: []wire.Entry{{Slot: 0, Ballot: b, Value: batch("x")}}})
	if err != nil {
		t.Fatal(err)
	}
	if n.Status().Promised != b {
		t.Fatalf("promised %v, want %v", n.Status().Promised, b)
	}
}

func TestConfigErrorsNameTheField(t *testing.T) {
	base := testConfig(1, 3)
	cases := map[string]func(*Config){
		"Members":           func(c *Config) { c.Members = nil },
		"ID":                func(c *Config) { c.ID = 9 },
		"ElectionTicks":     func(c *Config) { c.ElectionTicks = 1 },
		"HeartbeatTicks":    func(c *Config) { c.HeartbeatTicks = c.ElectionTicks },
		"Window":            func(c *Config) { c.Window = 0 },
		"MaxPending":        func(c *Config) { c.MaxPending = -1 },
		"MaxCatchUpEntries": func(c *Config) { c.MaxCatchUpEntries = 0 },
		"MaxCatchUpBytes":   func(c *Config) { c.MaxCatchUpBytes = -1 },
		"MaxInflightBytes":  func(c *Config) { c.MaxInflightBytes = -1 },
	}
	for field, mutate := range cases {
		cfg := base
		cfg.Members = append([]wire.ReplicaID(nil), base.Members...)
		mutate(&cfg)
		_, err := New(cfg, Persisted{})
		ce, ok := err.(*ConfigError)
		if !ok || ce.Field != field {
			t.Errorf("%s: got %v", field, err)
		}
	}
	dup := base
	dup.Members = []wire.ReplicaID{1, 2, 2}
	if _, err := New(dup, Persisted{}); err == nil {
		t.Error("duplicate member accepted")
	}
}
