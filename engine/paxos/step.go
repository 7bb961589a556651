package paxos

import (
	"fmt"

	"github.com/vestalabs/vesta/engine/wire"
	"github.com/vestalabs/vesta/internal/contract"
)

// Step feeds one message from another replica into the protocol. A message
// that is malformed, addressed elsewhere or from a non-member is refused with
// a *MessageError and changes nothing.
func (n *Node) Step(m wire.Message) error {
	if err := n.validate(m); err != nil {
		return err
	}
	if err := n.checkSlotsInReach(m); err != nil {
		return err
	}
	// A sender this replica does not know yet is in a configuration it
	// has not learned (it lags behind the change that added it): its
	// messages still let it catch up. Its bit counts in no quorum.
	n.knowID(m.From)
	n.lastHeard[n.index[m.From]] = n.ticks
	if m.Ballot != wire.BallotChosen && m.Ballot.Round > n.maxRoundSeen {
		n.maxRoundSeen = m.Ballot.Round
	}
	switch m.Type {
	case wire.MsgPrepare:
		n.onPrepare(m)
	case wire.MsgPromise:
		n.onPromise(m)
	case wire.MsgNack:
		n.onNack(m)
	case wire.MsgAccept, wire.MsgHeartbeat:
		n.onAccept(m)
	case wire.MsgAccepted:
		n.onAccepted(m)
	case wire.MsgCatchUpRequest:
		n.onCatchUpRequest(m)
	case wire.MsgCatchUp:
		n.onCatchUp(m)
	case wire.MsgPreVote:
		n.onPreVote(m)
	case wire.MsgPreVoteGrant:
		n.onPreVoteGrant(m)
	case wire.MsgReadProbe:
		n.onReadProbe(m)
	case wire.MsgReadProbeAck:
		n.onReadProbeAck(m)
	case wire.MsgTimeoutNow:
		n.onTimeoutNow(m)
	}
	n.checkInvariants()
	return nil
}

// validate checks everything about m that does not depend on protocol state.
func (n *Node) validate(m wire.Message) error {
	if !m.Type.Valid() {
		return badMessage("unknown type %d from %d", m.Type, m.From)
	}
	if m.Type.Transfer() {
		return badMessage("%v from %d: state transfer is the runtime's, not the protocol's", m.Type, m.From)
	}
	if m.To != n.cfg.ID {
		return badMessage("%v addressed to %d, this is %d", m.Type, m.To, n.cfg.ID)
	}
	if m.From == 0 || m.From == n.cfg.ID {
		return badMessage("%v from %d, not a peer of %d", m.Type, m.From, n.cfg.ID)
	}
	if _, ok := n.index[m.From]; !ok && len(n.index) == 64 {
		return badMessage("%v from %d: this replica already knows 64 replica IDs", m.Type, m.From)
	}
	switch m.Type {
	case wire.MsgPrepare, wire.MsgAccept, wire.MsgHeartbeat, wire.MsgPreVote, wire.MsgReadProbe, wire.MsgTimeoutNow:
		if m.Ballot.Replica != m.From || m.Ballot == wire.BallotChosen || m.Ballot.IsZero() {
			return badMessage("%v from %d carries ballot %v that is not its own", m.Type, m.From, m.Ballot)
		}
	case wire.MsgPreVoteGrant, wire.MsgReadProbeAck:
		if m.Ballot.Replica != n.cfg.ID || m.Ballot.IsZero() {
			return badMessage("%v from %d answers ballot %v, not one of %d's", m.Type, m.From, m.Ballot, n.cfg.ID)
		}
	}
	for i, e := range m.Entries {
		if !e.Value.Kind.Valid() {
			return badMessage("%v from %d: entry %d has unknown value kind %d", m.Type, m.From, i, e.Value.Kind)
		}
		if e.Value.Kind == wire.ValueConfig {
			if _, err := DecodeChange(e.Value.Data); err != nil {
				return badMessage("%v from %d: entry for slot %d: %v", m.Type, m.From, e.Slot, err)
			}
		}
		switch m.Type {
		case wire.MsgAccept:
			if e.Ballot != m.Ballot {
				return badMessage("Accept from %d: entry for slot %d has ballot %v, message has %v", m.From, e.Slot, e.Ballot, m.Ballot)
			}
		case wire.MsgCatchUp:
			if e.Ballot != wire.BallotChosen {
				return badMessage("CatchUp from %d: entry for slot %d is not marked chosen", m.From, e.Slot)
			}
		case wire.MsgPromise:
			if e.Slot < m.Slot {
				return badMessage("Promise from %d: entry for slot %d below the prepared slot %d", m.From, e.Slot, m.Slot)
			}
		default:
			return badMessage("%v from %d carries entries", m.Type, m.From)
		}
	}
	for _, r := range m.Ranges {
		if m.Type != wire.MsgAccepted || r.Hi < r.Lo {
			return badMessage("%v from %d: bad slot range [%d,%d)", m.Type, m.From, r.Lo, r.Hi)
		}
	}
	return nil
}

// checkSlotsInReach refuses a message whose entries reach more than
// Config.MaxSlotsAhead beyond this replica's commit index: each slot up to
// an entry costs memory (a candidate even fills the holes below a promised
// entry with no-ops), so one Accept or Promise with a huge slot would
// otherwise grow the log without bound. A correct replica never sends one:
// a leader proposes at most Window slots beyond its commit index; an
// acceptor's accepted entries were within this bound of its commit index
// when it took them, and that is at most the candidate's (it refuses a
// Prepare from below it); catch-up replies start at the asker's commit
// index. A replica that lags further learns the commit index from
// heartbeats and catches up before it votes again. Not voting is safe.
func (n *Node) checkSlotsInReach(m wire.Message) error {
	if len(m.Entries) == 0 {
		return nil
	}
	limit := n.commit + n.cfg.maxSlotsAhead()
	if limit < n.commit {
		limit = ^wire.Slot(0) // overflow: nothing is beyond
	}
	for _, e := range m.Entries {
		if e.Slot >= limit {
			return &MessageError{Kind: RefusedSlotTooFar, Reason: fmt.Sprintf(
				"%v from %d: entry for slot %d is beyond this replica's reach (commit index %d + MaxSlotsAhead %d): a correct leader never sends it; a replica that far behind catches up first",
				m.Type, m.From, e.Slot, n.commit, n.cfg.maxSlotsAhead())}
		}
	}
	return nil
}

// Tick advances time by one tick.
func (n *Node) Tick() {
	n.ticks++
	if n.catchUpInFlight {
		n.catchUpElapsed++
		if n.catchUpElapsed >= n.cfg.HeartbeatTicks*2 {
			n.catchUpInFlight = false // lost; the next commit index seen asks again, elsewhere
			n.catchUpMisses++
		}
	}
	switch n.role {
	case Follower, Candidate:
		n.electionElapsed++
		if n.electionElapsed >= n.electionTimeout {
			if n.cfg.PreVote {
				n.startPreVote()
			} else {
				n.startElection()
			}
			break
		}
		if n.role == Candidate || n.preVoting {
			n.heartbeatElapsed++
			if n.heartbeatElapsed >= n.cfg.HeartbeatTicks {
				n.heartbeatElapsed = 0
				if n.preVoting {
					n.broadcastPreVote(true)
				} else {
					n.broadcastPrepare(true)
				}
			}
		}
	case Leader:
		n.heartbeatElapsed++
		if n.heartbeatElapsed >= n.cfg.HeartbeatTicks {
			n.heartbeatElapsed = 0
			n.broadcastHeartbeat()
			n.retransmit()
		}
		n.tickReads()
		n.tickHandover()
		n.maybeHandOver()
		n.quorumElapsed++
		if n.quorumElapsed >= n.cfg.ElectionTicks*2 {
			// Check quorum: a leader that heard from no quorum for a whole
			// election period steps down, so a leader cut off from its
			// followers' replies does not hold the cluster forever.
			heard := n.heardFrom | n.self
			n.quorumElapsed, n.heardFrom = 0, 0
			if !n.isQuorumFrom(n.commit, heard) {
				n.stepDown()
			}
		}
	}
	n.checkInvariants()
}

// onPrepare is the acceptor's phase 1.
func (n *Node) onPrepare(m wire.Message) {
	if n.leaseRefuses(m.Ballot) {
		return // a lease granted (lease.go): no promise, and no answer; the candidate asks again
	}
	if m.Ballot.Less(n.promised) {
		n.sendRevealing(wire.Message{Type: wire.MsgNack, To: m.From, Ballot: n.promised, Commit: n.commit})
		return
	}
	if m.Slot < n.commit {
		// The candidate lacks chosen values this replica has (its commit
		// index is behind), so it could not lead before catching up, and its
		// promises could be too large to send: every chosen value from its
		// commit index on. Refuse, the way Raft voters refuse a candidate
		// whose log is behind theirs: no promise, no raised promise (the
		// leader, if any, keeps going), and no reset of this replica's
		// election timer, so that a replica that is up to date runs if the
		// leader is gone. The Nack tells the candidate how far behind it is,
		// so it catches up. Not promising is always safe. This also covers
		// stale Prepares from below the release point (release.go), whose
		// values may be gone here.
		n.sendRevealing(wire.Message{Type: wire.MsgNack, To: m.From, Ballot: n.promised, Commit: n.commit})
		return
	}
	if n.promised.Less(m.Ballot) {
		n.promised = m.Ballot
		if n.role != Follower {
			n.stepDown()
		}
		n.leader = 0
	}
	n.preVoting = false
	n.resetElectionTimer() // give the candidate its chance
	entries := n.ownAcceptedFrom(m.Slot)
	if n.bugs&BugPromiseForgets != 0 {
		entries = nil
	}
	contract.Ensure(!n.promised.Less(m.Ballot), "promise sent below the promised ballot")
	n.sendRevealing(wire.Message{Type: wire.MsgPromise, To: m.From, Ballot: m.Ballot, Slot: m.Slot, Commit: n.commit, Entries: entries})
}

// onAccept is the acceptor's phase 2 (and a heartbeat, which has no entries).
func (n *Node) onAccept(m wire.Message) {
	if m.Ballot.Less(n.promised) && n.bugs&BugAcceptBelowPromise == 0 {
		n.sendRevealing(wire.Message{Type: wire.MsgNack, To: m.From, Ballot: n.promised, Commit: n.commit})
		return
	}
	if n.promised.Less(m.Ballot) {
		n.promised = m.Ballot
	}
	if n.role != Follower && n.ballot != m.Ballot {
		n.stepDown()
	}
	n.leader = m.From
	n.preVoting = false // a leader is alive
	n.resetElectionTimer()
	var ranges []wire.SlotRange
	for _, e := range m.Entries {
		if e.Slot < n.released {
			// Chosen and released: only a stale duplicate asks, and not
			// voting is always safe.
			continue
		}
		if st := n.slot(e.Slot); st.chosen && !st.value.Equal(e.Value) {
			// A new leader re-proposes from its own commit index, so it may
			// send slots this replica knows are chosen, with their chosen
			// values. A different value comes from a ballot below the one
			// that chose the slot: an Accept that was delayed (a replica
			// that restarts gets its peers' held messages late) reaching a
			// replica that learned the chosen value by catch-up, which does
			// not raise its promise. That proposal can no longer be chosen;
			// the chosen value is kept, and not voting is safe.
			continue
		}
		// Recorded even when known chosen: the ack below reveals a vote in
		// this ballot, and a vote is durable before it is revealed.
		n.accept(e.Slot, m.Ballot, e.Value)
		if k := len(ranges); k > 0 && ranges[k-1].Hi == e.Slot {
			ranges[k-1].Hi++
		} else {
			ranges = append(ranges, wire.SlotRange{Lo: e.Slot, Hi: e.Slot + 1})
		}
	}
	n.learnCommit(m.From, m.Ballot, m.Commit)
	n.releaseSeen = max(n.releaseSeen, m.Slot)
	n.release(m.Slot) // the leader's release point; release clamps it to applied
	n.sendRevealing(wire.Message{Type: wire.MsgAccepted, To: m.From, Ballot: m.Ballot, Commit: n.commit, Ranges: ranges})
}

// stepDown returns to following; queued proposals are handed back as Dropped.
func (n *Node) stepDown() {
	n.failReads()
	n.handoverTo, n.handoverSent = 0, false
	n.role = Follower
	n.leader = 0
	n.merged, n.mergedEnd = nil, 0
	n.dropped = append(n.dropped, n.pending...)
	n.pending = nil
	n.resetElectionTimer()
}
