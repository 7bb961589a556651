package paxos

import (
	"github.com/vestalabs/vesta/engine/wire"
	"github.com/vestalabs/vesta/internal/contract"
)

// requiref states a protocol-safety condition. It is skipped when a bug was
// planted on purpose, so that the simulator's own checkers, not this
// replica's self-checks, must find the damage.
func (n *Node) requiref(cond bool, format string, args ...any) {
	contract.Invariantf(cond || n.bugs != 0, format, args...)
}

// checkInvariants verifies the whole replica state after every input. It runs
// only in contract builds and is O(window).
func (n *Node) checkInvariants() {
	if !contract.Enabled || n.bugs != 0 {
		return
	}
	// Conditions are tested first so that the message arguments are boxed
	// only on failure: this runs after every input of every simulated seed.
	fail := func(format string, args ...any) { contract.Invariantf(false, format, args...) }
	if n.applied > n.commit {
		fail("applied %d beyond commit %d", n.applied, n.commit)
	}
	if n.commit > n.end() {
		fail("commit %d beyond the log (ends at %d)", n.commit, n.end())
	}
	if n.base > n.released || n.released > n.applied {
		fail("base %d, released %d, applied %d out of order", n.base, n.released, n.applied)
	}
	if n.commit > n.base && !n.at(n.commit-1).chosen {
		fail("slot %d below commit not chosen", n.commit-1)
	}
	if n.commit < n.end() && n.at(n.commit).chosen {
		fail("commit index %d stops before a chosen slot", n.commit)
	}
	if n.promised.Less(n.durablePromised) {
		fail("durable promise %v above the promise %v", n.durablePromised, n.promised)
	}
	if n.preVoting && n.role != Follower {
		fail("pre-voting as %v", n.role)
	}
	if n.role != Follower {
		if n.ballot.Replica != n.cfg.ID {
			fail("leading ballot %v is not ours", n.ballot)
		}
		if n.promised.Less(n.ballot) {
			fail("promised %v below own ballot %v", n.promised, n.ballot)
		}
	}
	if n.role == Leader {
		if n.promised != n.ballot {
			fail("leader %v promised another ballot %v", n.ballot, n.promised)
		}
		if n.durablePromised.Less(n.ballot) {
			fail("leader %v whose own promise is not durable (durable %v): a crash could reuse the ballot", n.ballot, n.durablePromised)
		}
		if n.nextSlot < n.commit || n.unsent > n.nextSlot {
			fail("leader next slot %d, unsent %d, commit %d out of order", n.nextSlot, n.unsent, n.commit)
		}
		if b := n.countInflight(); b != n.inflightBytes {
			fail("leader counts %d bytes in flight, holds %d", n.inflightBytes, b)
		}
		for s := n.commit; s < n.nextSlot; s++ {
			if st := n.at(s); !st.chosen && st.ballot != n.ballot {
				fail("leader slot %d holds ballot %v, leading %v", s, st.ballot, n.ballot)
			}
		}
		for s := n.nextSlot; s < n.end(); s++ {
			if st := n.at(s); st.chosen || n.ballot.Less(st.ballot) {
				fail("leader sees slot %d beyond next slot %d holding %v", s, n.nextSlot, st.ballot)
			}
		}
	}
	// Below the commit index every slot is chosen and never changes again;
	// above it, nothing is accepted above the promise.
	for s := n.commit; s < n.end(); s++ {
		if st := n.at(s); st.ballot != wire.BallotChosen && n.promised.Less(st.ballot) {
			fail("slot %d accepted in %v above the promise %v", s, st.ballot, n.promised)
		}
	}
}
