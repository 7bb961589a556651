package paxos

import (
	"github.com/vestalabs/vesta/engine/wire"
	"github.com/vestalabs/vesta/internal/contract"
)

// Linearizable reads without the log: the read index (as in Raft's
// ReadIndex, here over Paxos ballots).
//
// A leader asked to read (ReadIndex) takes a read index: its commit index,
// and at least the end of the slots it re-proposed when it won its ballot.
// It then runs one probe round (MsgReadProbe to every peer); a peer answers
// MsgReadProbeAck if it has promised no ballot above the leader's, and a
// Nack otherwise. Once a quorum, the leader included, answered the round,
// every read of the round is ready (Ready.Reads) at its index: the caller
// serves it from its state machine once it has applied every slot below the
// index. Reads that arrive while a round is out wait for the next one, so
// one round serves every read waiting: a round costs one message per peer
// however many reads it carries. Nothing is appended to the log.
//
// Why a read served so sees every write completed before it was asked:
//
//   - A write completed before the read was asked was chosen in some slot s
//     in some ballot c. If c is the leader's ballot b, the leader knew s
//     chosen before applying it, so s is below its commit index when it took
//     the read index. If c < b, the value chosen in s was found by the
//     leader's phase 1 (a quorum's promises intersect c's quorum of votes)
//     and re-proposed below the end of its re-proposed slots, or s was below
//     the commit index phase 1 started from.
//   - c > b is impossible: a leader of ballot c > b won a quorum of promises
//     before the write completed, so before the round's probes were sent;
//     the round's quorum intersects that one, and a replica that promised
//     c > b answers the probe with a Nack, not an ack. Promises are durable
//     before they are revealed (sendRevealing), so a crash cannot undo one.
//
// A round that is not answered within two heartbeat intervals is sent again
// under a new number (acks of an older round do not count). A leader that
// steps down fails every read waiting (Ready.ReadsFailed): the caller
// retries at the new leader.

// ReadState is a read that may be served once every slot below Index is
// applied.
type ReadState struct {
	ID    uint64 // the caller's ID for the read (ReadIndex's argument)
	Index wire.Slot
}

// ReadIndex asks for a read index for the read the caller calls id (any
// number; the caller keeps them apart). It returns false, and does nothing,
// on a replica that does not lead: the caller sends the read to the leader.
// Otherwise the read comes back in a later Ready, in Reads once a quorum
// confirmed this replica still leads, or in ReadsFailed if it stops leading
// first.
func (n *Node) ReadIndex(id uint64) bool {
	if n.role != Leader {
		return false
	}
	n.readQueue = append(n.readQueue, id)
	n.maybeStartRound()
	return true
}

// LeaseRead is ReadIndex without the round while this leader holds a lease
// (Config.LeaseTicks): the read is in the next Ready's Reads at once, at the
// commit index. Without a lease (leases off, not renewed lately, or the
// leader's re-proposed slots not yet chosen) it falls back to ReadIndex.
func (n *Node) LeaseRead(id uint64) bool {
	if n.role != Leader {
		return false
	}
	if n.HoldsLease() {
		n.reads = append(n.reads, ReadState{ID: id, Index: n.commit})
		return true
	}
	return n.ReadIndex(id)
}

// HoldsLease reports whether this replica leads under a lease now: no other
// replica can have been elected, so its commit index covers every write
// completed (lease.go's argument).
func (n *Node) HoldsLease() bool {
	return n.role == Leader && n.cfg.LeaseTicks > 0 && n.ticks < n.leaseUntil && n.commit >= n.leadStart && n.established()
}

// maybeStartRound starts a probe round for the reads queued, unless one is
// out.
func (n *Node) maybeStartRound() {
	if n.role != Leader || n.roundOut || len(n.readQueue) == 0 || !n.established() {
		return // not established: the reads wait for its renewed ballot (membership.go)
	}
	n.readBatch, n.readQueue = n.readQueue, n.readBatch[:0]
	n.readIndex = max(n.commit, n.leadStart)
	n.sendRound()
}

// sendRound sends a probe round under a new number: for the reads of
// readBatch, and, with leases on, to renew the lease (each peer that acks
// grants one from when it got the probe; the leader counts its own from
// when it sent it).
func (n *Node) sendRound() {
	n.readRound++
	n.roundOut = true
	n.roundFrom = n.commit
	n.roundSentAt = n.ticks
	n.readAcks = n.self
	n.readElapsed = 0
	if n.bugs&BugReadWithoutQuorum != 0 {
		n.readAcks = ^uint64(0) // the planted bug: served without asking
	}
	var lease wire.Slot
	if n.cfg.LeaseTicks > 0 {
		lease = 1
		n.grantLease(n.ballot) // this replica's own acceptor
	}
	n.forEachPeer(n.votersFrom(n.roundFrom)&^n.self, func(p wire.ReplicaID) {
		n.send1(wire.Message{Type: wire.MsgReadProbe, To: p, Ballot: n.ballot, Slot: wire.Slot(n.readRound), Commit: lease})
	})
	n.maybeFinishRound()
}

// maybeFinishRound completes the round once a quorum acknowledged it: its
// reads are handed out, the lease extended, and the next round started if
// reads are queued.
func (n *Node) maybeFinishRound() {
	if !n.roundOut || !n.isQuorumFrom(n.roundFrom, n.readAcks) {
		return
	}
	contract.Invariantf(n.role == Leader, "read round finished by a %v", n.role)
	n.roundOut = false
	if n.cfg.LeaseTicks > 0 {
		n.leaseUntil = max(n.leaseUntil, n.roundSentAt+n.cfg.leaseSpan())
	}
	for _, id := range n.readBatch {
		n.reads = append(n.reads, ReadState{ID: id, Index: n.readIndex})
	}
	n.readBatch = n.readBatch[:0]
	n.maybeStartRound()
}

// onReadProbe answers a leader's probe. The ack says that no higher ballot
// was promised when it was sent, which stays true of that moment whatever
// happens next; a probe that asks for a lease (Commit 1) also grants one:
// no promise to another ballot for LeaseTicks from now.
func (n *Node) onReadProbe(m wire.Message) {
	if m.Ballot.Less(n.promised) {
		n.sendRevealing(wire.Message{Type: wire.MsgNack, To: m.From, Ballot: n.promised, Commit: n.commit})
		return
	}
	if m.Commit == 2 {
		n.releaseLease(m.Ballot) // its holder renounced it (handover.go)
		return
	}
	if m.Commit == 1 && n.cfg.LeaseTicks > 0 {
		n.grantLease(m.Ballot)
	}
	n.send1(wire.Message{Type: wire.MsgReadProbeAck, To: m.From, Ballot: m.Ballot, Slot: m.Slot})
}

func (n *Node) onReadProbeAck(m wire.Message) {
	if n.role != Leader || !n.roundOut || m.Ballot != n.ballot || uint64(m.Slot) != n.readRound {
		return // stale
	}
	n.readAcks |= n.bit(m.From)
	n.heardFrom |= n.bit(m.From)
	n.maybeFinishRound()
}

// tickReads resends an unanswered round, and with leases on starts a round
// every heartbeat interval to keep the lease. Leader only.
func (n *Node) tickReads() {
	n.maybeStartRound() // reads that waited for the leader to be established (membership.go)
	if n.roundOut {
		n.readElapsed++
		if n.readElapsed >= 2*n.cfg.HeartbeatTicks {
			n.sendRound()
		}
		return
	}
	if n.cfg.LeaseTicks > 0 && n.ticks-n.roundSentAt >= uint64(n.cfg.HeartbeatTicks) {
		n.sendRound()
	}
}

// failReads fails every read waiting, when this replica stops leading.
func (n *Node) failReads() {
	n.readsFailed = append(n.readsFailed, n.readBatch...)
	n.readsFailed = append(n.readsFailed, n.readQueue...)
	n.readBatch, n.readQueue = n.readBatch[:0], n.readQueue[:0]
	n.roundOut = false
	n.leaseUntil = 0
}
