package paxos

import (
	"slices"

	"github.com/vestalabs/vesta/engine/wire"
)

// learnCommit takes a leader's commit index c, sent in ballot b. Every slot
// below c is chosen, with the value b's leader proposed. An entry this replica
// accepted in b therefore holds the chosen value; any other must be fetched.
func (n *Node) learnCommit(from wire.ReplicaID, b wire.Ballot, c wire.Slot) {
	for s := n.commit; s < c && s < n.end(); s++ {
		st := n.at(s)
		if !st.chosen && st.ballot != b {
			break
		}
		st.chosen = true
	}
	n.advanceCommit() // which registers membership changes in order
	if n.commit < c {
		n.requestCatchUp(from, c)
	}
}

// requestCatchUp asks peer for the chosen values of [commit, upTo), unless a
// request is already out.
//
// A request that went unanswered (the peer released the values and holds
// no checkpoint that reaches them, or the reply was lost) makes the next
// one go to another member, in turn: some peer holds the values or a
// checkpoint that covers them.
func (n *Node) requestCatchUp(peer wire.ReplicaID, upTo wire.Slot) {
	if n.catchUpInFlight {
		return
	}
	if n.catchUpMisses > 0 {
		var peers []wire.ReplicaID
		n.forEachPeer(n.membersFrom(n.commit)&^n.self, func(p wire.ReplicaID) { peers = append(peers, p) })
		if len(peers) > 0 {
			peer = peers[n.catchUpMisses%len(peers)]
		}
	}
	n.catchUpInFlight = true
	n.catchUpElapsed = 0
	n.send1(wire.Message{Type: wire.MsgCatchUpRequest, To: peer, Slot: n.commit, Commit: upTo})
}

// onCatchUpRequest answers with the chosen values this replica knows in the
// wanted range, at most Config.MaxCatchUpEntries of them and, past the
// first, at most Config.MaxCatchUpBytes of value bytes. Chosen values are
// facts, not votes, so they leave without waiting for persistence.
func (n *Node) onCatchUpRequest(m wire.Message) {
	lo, hi := m.Slot, min(m.Commit, n.commit)
	if lo < hi && lo < n.released {
		// Values this replica released: a durable checkpoint here covers
		// them, or every member reported holding them durably (release.go),
		// which a replica that joined since does not. A checkpoint that
		// reaches past lo helps the asker: the caller sends one (state
		// transfer), taking it first if its newest does not reach the
		// release point (Ready.SendSnapshot).
		if !slices.Contains(n.snapTo, m.From) {
			n.snapTo = append(n.snapTo, m.From)
		}
		return
	}
	if lo >= hi {
		return // nothing to send
	}
	hi = min(hi, lo+wire.Slot(n.cfg.MaxCatchUpEntries))
	budget := n.cfg.MaxCatchUpBytes
	if budget == 0 {
		budget = DefaultMaxCatchUpBytes
	}
	entries := make([]wire.Entry, 0, hi-lo)
	for s := lo; s < hi; s++ {
		v := n.at(s).value
		if len(entries) > 0 && len(v.Data) > budget {
			break
		}
		budget -= len(v.Data)
		entries = append(entries, wire.Entry{Slot: s, Ballot: wire.BallotChosen, Value: v})
	}
	n.send1(wire.Message{Type: wire.MsgCatchUp, To: m.From, Commit: n.commit, Entries: entries})
}

// leaderCatchUp takes chosen values for slots this leader re-proposed and
// has not seen chosen (noteDurableCommit asked for them): they were chosen
// in an earlier ballot, so phase 1 made the leader propose the same value;
// acceptors that released them (a checkpoint) no longer vote for them, so
// the leader could otherwise never count them chosen. Slots beyond what it
// proposed are left alone: it proposes them, and learns them so, in turn.
func (n *Node) leaderCatchUp(entries []wire.Entry) {
	for _, e := range entries {
		if e.Slot < n.commit || e.Slot >= n.nextSlot {
			continue
		}
		st := n.at(e.Slot)
		n.requiref(st.value.Equal(e.Value), "slot %d: chosen value %v, this leader proposed %v", e.Slot, e.Value, st.value)
		if st.value.Equal(e.Value) {
			n.learnChosen(e.Slot, e.Value)
		}
	}
	n.advanceCommit()
	n.fillWindow()
}

// onCatchUp records chosen values and asks for more while behind.
func (n *Node) onCatchUp(m wire.Message) {
	n.catchUpInFlight = false
	n.catchUpMisses = 0
	if n.role == Leader {
		n.leaderCatchUp(m.Entries)
		return
	}
	for _, e := range m.Entries {
		if e.Slot < n.commit {
			if e.Slot < n.released {
				continue // released here: known chosen, value no longer kept
			}
			n.requiref(n.at(e.Slot).value.Equal(e.Value), "slot %d: catch-up value %v contradicts chosen %v", e.Slot, e.Value, n.at(e.Slot).value)
			continue
		}
		n.learnChosen(e.Slot, e.Value)
	}
	n.advanceCommit()
	if n.commit < m.Commit {
		n.requestCatchUp(m.From, m.Commit)
	}
}
