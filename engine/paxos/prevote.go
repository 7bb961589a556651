package paxos

import (
	"github.com/vestalabs/vesta/engine/wire"
	"github.com/vestalabs/vesta/internal/contract"
)

// Pre-vote, as in Raft (§9.6 of Ongaro's thesis). A replica whose election
// timer runs out does not raise its promise at once: it first asks every
// peer whether it would take part in an election (MsgPreVote), and campaigns
// (startElection) only once a quorum, itself included, says yes
// (MsgPreVoteGrant). A peer says yes only if it has not heard from a leader
// for at least ElectionTicks and the asker's commit index is not behind its
// own (the election restriction of onPrepare). Asking and answering change
// no state that is persisted, so pre-vote cannot affect safety.
//
// What it spares: a replica that was cut off (a partition, a slow start)
// times out and, without pre-vote, campaigned with a higher ballot, which
// it promised itself; back in touch, it refused the leader's Accepts for
// that higher promise, and its Nacks made the leader step down: an election,
// ~ElectionTicks without a leader, for nothing. With pre-vote it gets no
// quorum while a leader is alive, so its promise stays where it was.
//
// A refused pre-vote gets no answer: the asker tries again at its next
// timeout, and a live leader's heartbeats end the attempt (onAccept).

// startPreVote begins a pre-vote (the election timer ran out).
func (n *Node) startPreVote() {
	if !n.canLead() {
		n.resetElectionTimer() // may not lead (SetCanLead), or votes in no configuration
		return
	}
	if n.role != Follower {
		n.stepDown() // a candidate whose election went nowhere asks again first
	}
	n.leader = 0 // none heard from for an election timeout
	n.preVoting = true
	n.preBallot = wire.Ballot{Round: max(n.promised.Round, n.maxRoundSeen) + 1, Replica: n.cfg.ID}
	n.preVotes = n.self
	n.heartbeatElapsed = 0
	n.resetElectionTimer()
	if n.isQuorumFrom(n.commit, n.preVotes) {
		n.startElection() // a cluster of one
		return
	}
	n.broadcastPreVote(false)
}

// broadcastPreVote asks every peer, or on retry only those that have not said
// yes.
func (n *Node) broadcastPreVote(retry bool) {
	n.forEachPeer(n.votersFrom(n.commit)&^n.self, func(p wire.ReplicaID) {
		if !retry || n.preVotes&n.bit(p) == 0 {
			n.send1(wire.Message{Type: wire.MsgPreVote, To: p, Ballot: n.preBallot, Slot: n.commit})
		}
	})
}

// onPreVote answers yes if this replica would take part in m.From's
// election: no leader heard from for an election timeout (a leader never
// says yes), and m.From's commit index is not behind this one's.
func (n *Node) onPreVote(m wire.Message) {
	leaderAlive := n.role == Leader || (n.leader != 0 && n.electionElapsed < n.cfg.ElectionTicks)
	if m.Slot < n.commit && !leaderAlive {
		// Behind: no vote, but the Nack's commit index makes it catch up
		// (onNack). Without a leader to learn from, a replica that lags
		// behind a membership change may otherwise never learn the slots
		// only the configurations it cannot reach without them know.
		n.sendRevealing(wire.Message{Type: wire.MsgNack, To: m.From, Ballot: n.promised, Commit: n.commit})
		return
	}
	if leaderAlive || m.Slot < n.commit {
		return
	}
	n.send1(wire.Message{Type: wire.MsgPreVoteGrant, To: m.From, Ballot: m.Ballot})
}

// onPreVoteGrant counts a yes, and campaigns on a quorum of them.
func (n *Node) onPreVoteGrant(m wire.Message) {
	if !n.preVoting || m.Ballot != n.preBallot || n.preVotes&n.bit(m.From) != 0 {
		return // stale or duplicate
	}
	contract.Require(n.role == Follower, "pre-voting while not a follower")
	n.preVotes |= n.bit(m.From)
	if n.isQuorumFrom(n.commit, n.preVotes) {
		n.startElection()
	}
}
