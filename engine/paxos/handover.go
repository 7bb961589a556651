package paxos

import (
	"errors"
	"fmt"

	"github.com/vestalabs/vesta/engine/wire"
)

// Leadership control: handing leadership to a named replica (or the most
// caught-up one), a replica that may not lead (RSL's CanBecomePrimary), and
// each peer's health as the leader sees it.
//
// A handover (TransferLeadership) stops the leader taking new proposals;
// once every slot the leader proposed is chosen and the target reported a
// durable commit index that covers them, the leader gives its lease up (leases: the
// granters are told they may promise again, since the lease they protect
// is renounced) and sends the target MsgTimeoutNow, on which the target
// runs for election at once, without a pre-vote and without waiting out its
// timer. Its ballot is above the leader's, and its log holds everything the
// leader chose, so the acceptors promise it and the old leader steps down
// on its Prepare. A handover that has not succeeded within ElectionTicks is
// dropped and the leader takes proposals again.
//
// Safety does not depend on any of it: the target's election is an
// ordinary phase 1. What a handover changes is only when it starts, and
// that the old leader stops proposing so the target is not left behind.

// ErrHandover is returned by Propose while this leader hands leadership
// over: send the command to the new leader once it leads.
var ErrHandover = errors.New("paxos: leadership is being handed over")

// TransferLeadership starts handing leadership to replica to, or, with to
// 0, to the peer that has acknowledged the most. It fails on a replica that
// does not lead (ErrNotLeader) and for a replica that is not a peer.
func (n *Node) TransferLeadership(to wire.ReplicaID) error {
	if n.role != Leader {
		return ErrNotLeader
	}
	if to == 0 {
		best := wire.Slot(0)
		n.forEachPeer(n.newest().voters&^n.self, func(p wire.ReplicaID) {
			if c := n.peerCommit[n.index[p]]; to == 0 || c > best {
				to, best = p, c
			}
		})
	}
	if to == n.cfg.ID || !n.newest().m.IsVoter(to) {
		return fmt.Errorf("paxos: cannot hand leadership to %d: not a voting peer of %d (%v)", to, n.cfg.ID, n.newest().m)
	}
	n.handoverTo, n.handoverElapsed, n.handoverSent = to, 0, false
	n.maybeHandOver()
	return nil
}

// HandingOver returns the replica this leader hands leadership to (0: none).
func (n *Node) HandingOver() wire.ReplicaID { return n.handoverTo }

// maybeHandOver sends MsgTimeoutNow once the target holds everything.
func (n *Node) maybeHandOver() {
	if n.role != Leader || n.handoverTo == 0 || n.handoverSent {
		return
	}
	if n.commit < n.nextSlot || n.unsent < n.nextSlot {
		return // slots still in flight: the target must hold them chosen
	}
	if n.peerCommit[n.index[n.handoverTo]] < n.commit {
		return // the target does not hold all of them chosen, durably
	}
	n.handoverSent = true
	n.renounceLease()
	n.send1(wire.Message{Type: wire.MsgTimeoutNow, To: n.handoverTo, Ballot: n.ballot, Commit: n.commit})
}

// renounceLease gives this leader's lease up: no lease read from here on,
// and the granters, its own acceptor included, are told they may promise
// again (a probe with Commit 2), since the lease they protect is renounced.
func (n *Node) renounceLease() {
	n.leaseUntil = 0
	if n.cfg.LeaseTicks == 0 {
		return
	}
	n.forEachPeer(n.votersFrom(n.commit)&^n.self, func(p wire.ReplicaID) {
		n.send1(wire.Message{Type: wire.MsgReadProbe, To: p, Ballot: n.ballot, Slot: 0, Commit: 2})
	})
	n.releaseLease(n.ballot)
}

// tickHandover gives a handover up after ElectionTicks. Leader only.
func (n *Node) tickHandover() {
	if n.handoverTo == 0 {
		return
	}
	n.handoverElapsed++
	if n.handoverElapsed >= n.cfg.ElectionTicks {
		n.handoverTo, n.handoverSent = 0, false
		n.fillWindow() // proposals queued meanwhile go out
	}
}

// onTimeoutNow runs for election at once, when the leader hands over.
func (n *Node) onTimeoutNow(m wire.Message) {
	if m.Ballot.Less(n.promised) || n.role == Leader || !n.canLead() {
		return
	}
	n.learnCommit(m.From, m.Ballot, m.Commit)
	n.releaseLease(m.Ballot)
	n.startElection()
}

// releaseLease forgets a grant to ballot b: its holder renounced it.
func (n *Node) releaseLease(b wire.Ballot) {
	if n.leaseGrantTo == b {
		n.leaseGrantUntil = 0
	}
}

// SetCanLead says whether this replica may lead (RSL's CanBecomePrimary: the
// state machine may veto it). A replica that may not lead does not campaign
// and ignores MsgTimeoutNow; one that leads when told it may not hands
// leadership to the most caught-up peer.
func (n *Node) SetCanLead(ok bool) {
	n.vetoed = !ok
	if n.vetoed && n.role == Leader && n.handoverTo == 0 {
		_ = n.TransferLeadership(0)
	}
}

// canLead reports whether this replica may campaign: it is not vetoed, and
// it votes in the configuration of its commit index (learners and removed
// replicas never lead).
func (n *Node) canLead() bool { return !n.vetoed && n.configFor(n.commit).voters&n.self != 0 }

// PeerStatus is a peer's health as the leader sees it.
type PeerStatus struct {
	ID wire.ReplicaID
	// LastContact is how many ticks ago the leader last heard from it
	// (an acknowledgement, a promise, a probe's answer).
	LastContact uint64
	// Commit is the highest commit index it reported durable; the leader's
	// commit index less it is its lag.
	Commit wire.Slot
	// Outstanding counts the slots the leader sent it that it has not
	// acknowledged.
	Outstanding int
}

// Peers returns every peer's health as this leader sees it; nil on a
// replica that does not lead. It costs a pass over the window per peer:
// take it now and then (the runtime does every heartbeat interval), not on
// every turn.
func (n *Node) Peers() []PeerStatus {
	if n.role != Leader {
		return nil
	}
	var out []PeerStatus
	n.forEachPeer(n.recipients(), func(p wire.ReplicaID) {
		i := n.index[p]
		ps := PeerStatus{ID: p, LastContact: n.ticks - n.lastHeard[i], Commit: n.peerCommit[i]}
		end := min(n.unsent, n.nextSlot)
		for s := max(n.commit, n.base); s < end; s++ {
			if n.at(s).votes&n.bit(p) == 0 {
				ps.Outstanding++
			}
		}
		out = append(out, ps)
	})
	return out
}
