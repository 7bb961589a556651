package paxos

import (
	"testing"

	"github.com/vestalabs/vesta/engine/wire"
)

func leaseCluster(t *testing.T) *testCluster {
	c := &testCluster{t: t, nodes: map[wire.ReplicaID]*Node{}, applied: map[wire.ReplicaID][]wire.Entry{}}
	for i := 1; i <= 3; i++ {
		cfg := testConfig(i, 3)
		cfg.LeaseTicks, cfg.MaxDriftPercent = 8, 20
		n, err := New(cfg, Persisted{})
		if err != nil {
			t.Fatal(err)
		}
		c.nodes[wire.ReplicaID(i)] = n
	}
	// A new node promises nothing for LeaseTicks: let that pass.
	for range 8 {
		for _, n := range c.nodes {
			n.Tick()
		}
	}
	return c
}

// A leader whose lease round was acknowledged reads with no round at all;
// once rounds stop getting through, its lease runs out and a lease read
// falls back to a read-index round.
func TestLeaseReadNeedsNoRound(t *testing.T) {
	c := leaseCluster(t)
	c.elect(1)
	l := c.nodes[1]
	for range 3 { // a lease round goes out every heartbeat interval
		l.Tick()
		c.settle()
	}
	if !l.HoldsLease() {
		t.Fatalf("no lease after acknowledged rounds: %+v", l.Status())
	}
	if !l.LeaseRead(1) {
		t.Fatal("lease read refused")
	}
	if rd := l.Ready(); len(rd.Reads) != 1 || len(rd.Send) != 0 {
		t.Fatalf("lease read: reads %v, messages %v; want the read and no round", rd.Reads, rd.Send)
	} else {
		l.Advance()
	}
	c.drop = func(m wire.Message) bool { return m.From == 1 || m.To == 1 }
	for range 10 {
		l.Tick()
		c.settle()
	}
	if l.HoldsLease() {
		t.Fatal("lease held with no round acknowledged for 10 ticks (span 4)")
	}
	before := len(c.reads[1])
	l.LeaseRead(2)
	c.settle()
	if len(c.reads[1]) != before {
		t.Fatal("a lease read without a lease was served without a round")
	}
}

// An acceptor that granted a lease promises no other ballot until it ran
// out: a candidate gets no promise from it, and no answer.
func TestGrantedLeaseRefusesOtherBallots(t *testing.T) {
	c := leaseCluster(t)
	c.elect(1)
	for range 3 {
		c.nodes[1].Tick()
		c.settle()
	}
	f := c.nodes[2]
	prep := wire.Message{Type: wire.MsgPrepare, From: 3, To: 2, Ballot: wire.Ballot{Round: 99, Replica: 3}, Slot: f.Status().Commit}
	if err := f.Step(prep); err != nil {
		t.Fatal(err)
	}
	if f.Status().Promised.Round == 99 || f.HasReady() && len(f.Ready().SendAfterPersist) > 0 {
		t.Fatal("promised another ballot under a lease it granted")
	}
	for range 9 {
		f.Tick()
	}
	if err := f.Step(prep); err != nil {
		t.Fatal(err)
	}
	if f.Status().Promised.Round != 99 {
		t.Fatalf("no promise once the lease ran out: promised %v", f.Status().Promised)
	}
}

// A restarted acceptor promises nothing for LeaseTicks: a grant of its
// previous incarnation may still run.
func TestRestartedAcceptorWaitsOutOldLeases(t *testing.T) {
	cfg := testConfig(2, 3)
	cfg.LeaseTicks, cfg.MaxDriftPercent = 8, 20
	n, err := New(cfg, Persisted{})
	if err != nil {
		t.Fatal(err)
	}
	prep := wire.Message{Type: wire.MsgPrepare, From: 3, To: 2, Ballot: wire.Ballot{Round: 5, Replica: 3}}
	n.Step(prep)
	if n.Status().Promised.Round == 5 {
		t.Fatal("promised at once after a start")
	}
	for range 8 {
		n.Tick()
	}
	n.Step(prep)
	if n.Status().Promised.Round != 5 {
		t.Fatal("no promise after LeaseTicks")
	}
}

func TestLeaseConfig(t *testing.T) {
	for _, tc := range []struct {
		lease, drift int
		ok           bool
		span         uint64
	}{
		{0, 0, true, 0}, {8, 20, true, 4}, {9, 0, true, 7}, {10, 0, false, 0}, {3, 50, false, 0}, {-1, 0, false, 0},
	} {
		cfg := testConfig(1, 3)
		cfg.LeaseTicks, cfg.MaxDriftPercent = tc.lease, tc.drift
		err := cfg.Validate()
		if (err == nil) != tc.ok {
			t.Errorf("LeaseTicks %d MaxDriftPercent %d: %v", tc.lease, tc.drift, err)
		}
		if tc.ok && tc.lease > 0 && cfg.leaseSpan() != tc.span {
			t.Errorf("LeaseTicks %d MaxDriftPercent %d: span %d, want %d", tc.lease, tc.drift, cfg.leaseSpan(), tc.span)
		}
	}
}

// A follower that keeps granting leases (probes arrive, heartbeats do not)
// does not campaign: its election would promise its own ballot under a
// lease it granted.
func TestGrantingFollowerDoesNotCampaign(t *testing.T) {
	cfg := testConfig(2, 3)
	cfg.LeaseTicks, cfg.MaxDriftPercent = 8, 20
	f, err := New(cfg, Persisted{})
	if err != nil {
		t.Fatal(err)
	}
	b := wire.Ballot{Round: 1, Replica: 1}
	for i := range 60 {
		if i%2 == 0 {
			if err := f.Step(wire.Message{Type: wire.MsgReadProbe, From: 1, To: 2, Ballot: b, Slot: wire.Slot(i + 1), Commit: 1}); err != nil {
				t.Fatal(err)
			}
		}
		f.Tick()
		if f.Status().Role != Follower {
			t.Fatalf("tick %d: a follower granting leases became %v", i, f.Status().Role)
		}
	}
}

// Time a replica missed (AdvanceClock) ends its lease, but fires no timer:
// a leader that was stopped holds no lease when it resumes, and a follower
// that was stopped does not campaign before it reads what waited for it.
func TestAdvanceClockEndsLeasesNotTimers(t *testing.T) {
	c := leaseCluster(t)
	c.elect(1)
	l := c.nodes[1]
	for range 3 {
		l.Tick()
		c.settle()
	}
	if !l.HoldsLease() {
		t.Fatal("no lease")
	}
	l.AdvanceClock(100)
	if l.HoldsLease() {
		t.Fatal("lease held after 100 missed ticks")
	}
	if l.Status().Role != Leader {
		t.Fatal("missed ticks made the leader step down (check-quorum fired)")
	}
	f := c.nodes[2]
	f.AdvanceClock(100)
	if f.Status().Role != Follower || f.HasReady() && len(f.Ready().Send) > 0 {
		t.Fatal("missed ticks started an election")
	}
}
