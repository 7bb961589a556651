package paxos

import "github.com/vestalabs/vesta/engine/wire"

// Leader leases: reads with no round at all (LeaseRead), safe under a
// bound on clock drift (Config.LeaseTicks, Config.MaxDriftPercent).
//
// An acceptor that acknowledges a lease probe of ballot b (read.go's rounds
// ask for one when leases are on) grants b a lease: for LeaseTicks of its
// own ticks from then it promises no other ballot (onPrepare ignores
// Prepares). A leader counts a round's lease from when it sent the round,
// which is before any acceptor granted it, and for leaseSpan of its own
// ticks: LeaseTicks shrunk by the drift bound and two ticks of rounding.
//
// Why a leader whose lease holds may read its own state at its commit index
// (once its re-proposed slots are chosen, as for a read index): a new
// leader needs a quorum of promises, and every quorum holds an acceptor that
// granted the lease; that acceptor promises nothing until its grant runs
// out, which by the drift bound is after the leader's lease ended. So while
// the lease holds no other replica leads, nothing is chosen that this leader
// did not choose, and its commit index covers every write completed.
//
// What it assumes: no replica's clock runs more than MaxDriftPercent faster
// than another's, and ticks follow real time, also across a pause of the
// process (the runtime tells the protocol what it missed, AdvanceClock,
// before it steps a message or looks at a lease). Beyond the bound, lease reads can return stale
// data; read-index reads cannot, as they assume nothing of clocks (the
// simulator shows both: engine/sim's DriftBeyondBound).
//
// A replica that granted a lease does not campaign while it runs either:
// starting an election promises its own ballot (startElection).
//
// An acceptor does not remember its grants across a restart: instead it
// promises nothing for LeaseTicks after it starts (New), which covers any
// grant its previous incarnation made.

// Clock returns this replica's time in ticks: the ticks it was given
// (Tick), plus any it was told it missed (AdvanceClock).
func (n *Node) Clock() uint64 { return n.ticks }

// AdvanceClock tells the protocol that by ticks passed that it was not
// given (its process was stopped, or too busy to tick): leases and grants
// count them, timers do not. A replica that resumes after a pause must not
// hold a lease, or end a grant, by a clock that stood still; but it must
// not start an election on time during which it could not hear its leader
// either (its messages wait in the queue).
func (n *Node) AdvanceClock(by uint64) { n.ticks += by }

// grantLease grants ballot b a lease from now.
func (n *Node) grantLease(b wire.Ballot) {
	n.leaseGrantTo = b
	n.leaseGrantUntil = max(n.leaseGrantUntil, n.ticks+uint64(n.cfg.LeaseTicks))
}

// leaseRefuses reports whether a lease this acceptor granted forbids
// promising ballot b now.
func (n *Node) leaseRefuses(b wire.Ballot) bool {
	return n.cfg.LeaseTicks > 0 && n.ticks < n.leaseGrantUntil && b != n.leaseGrantTo
}

// leaseSpan is how many of its own ticks a leader counts a lease round's
// lease for: LeaseTicks of the slowest possible granter's clock seen by the
// fastest possible leader's, less a tick of rounding at each end.
func (c *Config) leaseSpan() uint64 {
	span := c.LeaseTicks * 100 / (100 + c.MaxDriftPercent)
	if span <= 2 {
		return 0
	}
	return uint64(span - 2)
}
