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
	contract.Invariantf(n.applied <= n.commit, "applied %d beyond commit %d", n.applied, n.commit)
	contract.Invariantf(int(n.commit) <= len(n.log), "commit %d beyond the log (%d slots)", n.commit, len(n.log))
	if n.commit > 0 {
		contract.Invariantf(n.log[n.commit-1].chosen, "slot %d below commit not chosen", n.commit-1)
	}
	if int(n.commit) < len(n.log) {
		contract.Invariantf(!n.log[n.commit].chosen, "commit index %d stops before a chosen slot", n.commit)
	}
	switch n.role {
	case Follower:
	case Candidate, Leader:
		contract.Invariantf(n.ballot.Replica == n.cfg.ID, "leading ballot %v is not ours", n.ballot)
		contract.Invariantf(!n.promised.Less(n.ballot), "promised %v below own ballot %v", n.promised, n.ballot)
	}
	if n.role == Leader {
		contract.Invariantf(n.promised == n.ballot, "leader %v promised another ballot %v", n.ballot, n.promised)
		contract.Invariantf(n.nextSlot >= n.commit, "leader next slot %d below commit %d", n.nextSlot, n.commit)
		contract.Invariantf(n.unsent <= n.nextSlot, "unsent %d beyond next slot %d", n.unsent, n.nextSlot)
		for s := n.commit; s < n.nextSlot; s++ {
			st := &n.log[s]
			contract.Invariantf(st.chosen || st.ballot == n.ballot, "leader slot %d holds ballot %v, leading %v", s, st.ballot, n.ballot)
		}
		for s := int(n.nextSlot); s < len(n.log); s++ {
			st := &n.log[s]
			contract.Invariantf(!st.chosen && !n.ballot.Less(st.ballot), "leader sees slot %d beyond next slot %d holding %v", s, n.nextSlot, st.ballot)
		}
	}
	for s := range n.log {
		st := &n.log[s]
		if st.ballot != wire.BallotChosen {
			contract.Invariantf(!n.promised.Less(st.ballot), "slot %d accepted in %v above the promise %v", s, st.ballot, n.promised)
		}
	}
}
