package paxos

import (
	"slices"

	"github.com/vestalabs/vesta/engine/wire"
	"github.com/vestalabs/vesta/internal/contract"
)

// startElection begins phase 1 with a ballot above any seen, for every slot
// from the commit index on, in one Prepare.
func (n *Node) startElection() {
	if !n.canLead() {
		n.resetElectionTimer() // may not lead (SetCanLead), or votes in no configuration
		return
	}
	if n.leaseRefuses(wire.Ballot{Round: max(n.promised.Round, n.maxRoundSeen) + 1, Replica: n.cfg.ID}) {
		// A lease this acceptor granted runs: it may not promise its own
		// ballot either (lease.go). It tries again when its timer next
		// runs out.
		n.resetElectionTimer()
		return
	}
	old := n.role
	if old == Leader {
		n.stepDown()
	}
	round := max(n.promised.Round, n.maxRoundSeen) + 1
	b := wire.Ballot{Round: round, Replica: n.cfg.ID}
	contract.Ensure(n.promised.Less(b), "new ballot not above the promise")
	n.role = Candidate
	n.preVoting = false
	n.ballot = b
	n.promised = b // our own promise: counted once durable (see Advance)
	n.leader = 0
	n.prepareFrom = n.commit
	n.promises = 0
	n.selfPromised = false
	n.merged = make(map[wire.Slot]wire.Entry)
	n.mergedEnd = 0
	n.heartbeatElapsed = 0
	n.resetElectionTimer()
	n.broadcastPrepare(false)
}

// broadcastPrepare sends the Prepare to every peer, or on retry only to those
// whose promise has not arrived.
func (n *Node) broadcastPrepare(retry bool) {
	n.forEachPeer(n.votersFrom(n.prepareFrom)&^n.self, func(p wire.ReplicaID) {
		if !retry || n.promises&n.bit(p) == 0 {
			n.send1(wire.Message{Type: wire.MsgPrepare, To: p, Ballot: n.ballot, Slot: n.prepareFrom, Commit: n.commit})
		}
	})
}

func (n *Node) onPromise(m wire.Message) {
	n.noteDurableCommit(m.From, m.Commit)
	if n.role != Candidate || m.Ballot != n.ballot || n.promises&n.bit(m.From) != 0 {
		return // stale or duplicate
	}
	n.requiref(m.Slot == n.prepareFrom, "promise for slot %d, prepared %d", m.Slot, n.prepareFrom)
	n.promises |= n.bit(m.From)
	n.mergePromise(m.Entries)
	n.maybeWinElection()
}

// mergePromise keeps, per slot, the entry with the highest ballot reported.
func (n *Node) mergePromise(entries []wire.Entry) {
	for _, e := range entries {
		if e.Slot < n.prepareFrom {
			continue
		}
		cur, ok := n.merged[e.Slot]
		if ok && cur.Ballot == e.Ballot {
			n.requiref(cur.Value.Equal(e.Value), "slot %d: promises report two values under ballot %v: %v and %v", e.Slot, e.Ballot, cur.Value, e.Value)
		}
		if !ok || cur.Ballot.Less(e.Ballot) {
			n.merged[e.Slot] = e
		}
	}
}

// maybeWinElection makes the candidate lead once a quorum promised its
// ballot, itself included, and its own promise is durable.
//
// Its own promise is required even when its peers' promises alone make a
// quorum: a ballot is used by one incarnation only. Had the candidate led
// on its peers' promises and then crashed before its promise of b reached
// its log, it would restart below b, pick b again, and propose a second
// value in a slot where a peer holds the first under b; a late Accepted
// for the first would then count as a vote for the second (issue 12,
// item 1). With its promise durable, a restart recovers a promise of at
// least b and picks a higher ballot. Prepares still leave at once, so the
// local sync overlaps the peers' round trip.
func (n *Node) maybeWinElection() {
	mask := n.promises
	if n.selfPromised {
		mask |= n.self
	} else if n.bugs&BugLeadBeforeOwnPromise == 0 {
		return
	}
	if n.isQuorumFrom(n.prepareFrom, mask) {
		n.becomeLeader()
	}
}

// becomeLeader re-proposes, in the new ballot, the highest-ballot value
// reported for every slot from prepareFrom on, and a no-op for every hole.
func (n *Node) becomeLeader() {
	n.requiref(!n.durablePromised.Less(n.ballot), "leading ballot %v before its own promise is durable (durable promise %v)", n.ballot, n.durablePromised)
	n.role = Leader
	n.leader = n.cfg.ID
	end := n.prepareFrom
	for s := range n.merged {
		if s+1 > end {
			end = s + 1
		}
	}
	// Slots this replica released while it ran (a checkpoint it wrote, or
	// the leader's release point) are chosen and below its commit index;
	// their values are gone here, so they are not re-sent: a follower that
	// lacks them learns the commit index and catches up, from a
	// checkpoint if need be.
	from := max(n.prepareFrom, n.released)
	n.nextSlot = from
	for s := from; s < end; s++ {
		v := wire.Noop
		if e, ok := n.merged[s]; ok {
			v = e.Value
		}
		if !n.canPropose(s) {
			// Beyond what this ballot's phase 1 covers (membership.go): the
			// rest is re-proposed by fillWindow as the commit index moves.
			break
		}
		n.nextSlot = s + 1
		delete(n.merged, s)
		st := n.slot(s)
		st.votes = 0
		if st.chosen {
			// Re-sent in the new ballot so followers can learn it, but kept
			// as it is here.
			n.requiref(st.value.Equal(v), "slot %d: phase 1 chose %v over known chosen %v", s, v, st.value)
			continue
		}
		n.accept(s, n.ballot, v)
	}
	n.mergedEnd = end
	n.leadStart = end
	n.inflightBytes = n.countInflight()
	n.unsent = from
	n.heartbeatElapsed = 0
	n.quorumElapsed = 0
	n.heardFrom = 0
	n.broadcastHeartbeat()
	contract.Ensure(n.nextSlot >= n.prepareFrom, "next slot below the prepared suffix")
	n.fillWindow()
}

// Propose submits a value (a batch of commands) for the next free slot. It is
// accepted only by the leader; with the window full it waits in a queue of at
// most Config.MaxPending values.
func (n *Node) Propose(v wire.Value) error {
	if v.Kind != wire.ValueBatch {
		return badMessage("Propose: value kind %d, only batches may be proposed", v.Kind)
	}
	if n.role != Leader {
		return ErrNotLeader
	}
	if n.handoverTo != 0 {
		return ErrHandover
	}
	if len(n.pending) == 0 && n.nextSlot >= n.mergedEnd && n.windowHasRoom() {
		n.proposeNext(v)
		return nil
	}
	if len(n.pending) >= n.cfg.MaxPending {
		return ErrQueueFull
	}
	n.pending = append(n.pending, v)
	return nil
}

// windowHasRoom reports whether the leader may propose one more slot: fewer
// than Window slots and MaxInflightBytes of values are proposed and not
// chosen, or none at all.
func (n *Node) windowHasRoom() bool {
	if !n.canPropose(n.nextSlot) {
		return false // its configuration unknown, or not covered by this ballot's phase 1
	}
	if n.nextSlot == n.commit {
		return true
	}
	return n.nextSlot < n.commit+wire.Slot(n.cfg.Window) && n.inflightBytes < n.maxInflightBytes()
}

func (n *Node) maxInflightBytes() int {
	if n.cfg.MaxInflightBytes == 0 {
		return DefaultMaxInflightBytes
	}
	return n.cfg.MaxInflightBytes
}

// countInflight recomputes inflightBytes over [commit, nextSlot): after an
// election, whose re-proposals the window did not admit one by one.
func (n *Node) countInflight() int {
	b := 0
	for s := n.commit; s < n.nextSlot; s++ {
		b += len(n.at(s).value.Data)
	}
	return b
}

func (n *Node) proposeNext(v wire.Value) {
	contract.Require(n.role == Leader, "proposeNext by a non-leader")
	s := n.nextSlot
	n.nextSlot++
	st := n.slot(s)
	contract.Invariantf(st.ballot.Less(n.ballot) && !st.chosen, "slot %d proposed twice (holds %v)", s, st.ballot)
	st.votes = 0
	n.accept(s, n.ballot, v)
	n.inflightBytes += len(v.Data)
	if n.bugs&BugCountUnpersistedVote != 0 {
		st.votes |= n.self
	}
}

// fillWindow moves queued proposals into the window while it has room.
func (n *Node) fillWindow() {
	if n.role != Leader {
		return
	}
	n.maybeLeaveLeadership()
	if n.handoverTo != 0 {
		return // handing over: the target must catch up, not chase new slots
	}
	// Slots phase 1 found that were beyond its reach when this replica won
	// (becomeLeader) go first.
	for n.nextSlot < n.mergedEnd && n.windowHasRoom() {
		v := wire.Noop
		if e, ok := n.merged[n.nextSlot]; ok {
			v = e.Value
			delete(n.merged, n.nextSlot)
		}
		if st := n.slot(n.nextSlot); st.chosen {
			// Known chosen here already: re-sent as it is (becomeLeader).
			n.requiref(st.value.Equal(v), "slot %d: phase 1 chose %v over known chosen %v", n.nextSlot, v, st.value)
			n.inflightBytes += len(st.value.Data)
			n.nextSlot++
			continue
		}
		n.proposeNext(v)
	}
	if n.nextSlot < n.mergedEnd {
		n.maybeRenewBallot()
		return
	}
	i := 0
	for i < len(n.pending) && n.windowHasRoom() {
		n.proposeNext(n.pending[i])
		i++
	}
	if i > 0 {
		n.pending = slices.Delete(n.pending, 0, i)
	}
	n.fillToChange()
	n.maybeRenewBallot()
}

// broadcastNewAccepts sends every slot proposed since the last Ready to every
// peer, one Accept per peer: that is where proposals are batched on the wire.
func (n *Node) broadcastNewAccepts() {
	// A checkpoint written since the election may have released slots not
	// yet re-sent: they are chosen, and followers catch up on them.
	n.unsent = max(n.unsent, min(n.released, n.nextSlot))
	if n.unsent >= n.nextSlot {
		return
	}
	entries := make([]wire.Entry, 0, n.nextSlot-n.unsent)
	for s := n.unsent; s < n.nextSlot; s++ {
		st := n.at(s)
		entries = append(entries, wire.Entry{Slot: s, Ballot: n.ballot, Value: st.value})
	}
	n.unsent = n.nextSlot
	rp := n.releasePoint()
	n.forEachPeer(n.recipients(), func(p wire.ReplicaID) {
		n.send1(wire.Message{Type: wire.MsgAccept, To: p, Ballot: n.ballot, Slot: rp, Commit: n.commit, Entries: entries})
	})
}

func (n *Node) broadcastHeartbeat() {
	rp := n.releasePoint()
	n.forEachPeer(n.recipients(), func(p wire.ReplicaID) {
		n.send1(wire.Message{Type: wire.MsgHeartbeat, To: p, Ballot: n.ballot, Slot: rp, Commit: n.commit})
	})
}

// retransmit resends, to each peer, the already-sent slots of the window that
// are not chosen and that the peer has not acknowledged.
func (n *Node) retransmit() {
	end := min(n.unsent, n.nextSlot)
	rp := n.releasePoint()
	n.forEachPeer(n.recipients(), func(p wire.ReplicaID) {
		bit := n.bit(p)
		var entries []wire.Entry
		for s := n.commit; s < end; s++ {
			st := n.at(s)
			if st.chosen || st.votes&bit != 0 {
				continue
			}
			entries = append(entries, wire.Entry{Slot: s, Ballot: n.ballot, Value: st.value})
		}
		if len(entries) > 0 {
			n.send1(wire.Message{Type: wire.MsgAccept, To: p, Ballot: n.ballot, Slot: rp, Commit: n.commit, Entries: entries})
		}
	})
}

func (n *Node) onAccepted(m wire.Message) {
	n.noteDurableCommit(m.From, m.Commit)
	if n.role != Leader || m.Ballot != n.ballot {
		return
	}
	n.heardFrom |= n.bit(m.From)
	bit := n.bit(m.From)
	for _, r := range m.Ranges {
		lo, hi := max(r.Lo, n.commit), min(r.Hi, n.nextSlot)
		for s := lo; s < hi; s++ {
			n.at(s).votes |= bit
			n.checkChosen(s)
		}
	}
	n.advanceCommit()
	n.fillWindow()
	n.maybeHandOver()
}

// checkChosen marks slot s chosen once a quorum accepted it in the leader's ballot.
func (n *Node) checkChosen(s wire.Slot) {
	st := n.at(s)
	if st.chosen || !n.isQuorumFor(s, st.votes) {
		return
	}
	n.requiref(st.ballot == n.ballot, "slot %d counted chosen with votes for ballot %v while holding %v", s, n.ballot, st.ballot)
	st.chosen = true
}

func (n *Node) onNack(m wire.Message) {
	n.noteDurableCommit(m.From, m.Commit)
	if n.role != Leader && m.Commit > n.commit {
		// Refused for being behind (onPrepare): learn what was chosen
		// meanwhile, so the next election starts from there.
		n.requestCatchUp(m.From, m.Commit)
	}
	if n.role == Follower || !n.ballot.Less(m.Ballot) {
		return
	}
	n.stepDown()
}
