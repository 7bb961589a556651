package paxos

import (
	"github.com/vestalabs/vesta/engine/wire"
	"github.com/vestalabs/vesta/internal/contract"
)

// Releasing values.
//
// Without snapshots a replica cannot drop a chosen value merely because it
// applied it: a peer that is behind may still ask for it (catch-up), and a
// candidate may still ask for it (a Prepare from a low slot). Both ask from
// their own commit index, and a replica's commit index never falls below
// what it once held durably. So once every member has reported a durable
// commit index at or above slot s, no correct member will ever ask for the
// value of s again, and every replica may drop it.
//
// The leader learns each member's durable commit index from the messages
// that leave a replica only once its state is durable (Accepted, Promise,
// Nack all carry Commit), takes the minimum with its own, and announces it as
// the release point in the Slot field of every Accept and Heartbeat. Each
// replica drops the values below min(release point, applied) and, once that
// prefix is most of its in-memory log, shifts the log down so the slot
// states themselves are freed too.
//
// While a member is down its reported commit index stands still, and so does
// the release point. Checkpoints bound that case: every replica also drops
// the values below its own newest durable checkpoint (snapshot.go), and a
// member that asks for them later is sent the checkpoint instead.
//
// Releasing never affects safety: a request for a released value is not
// answered with it (a Prepare from below the release point gets no promise, an
// Accept entry below it gets no vote, a catch-up request below it gets a
// checkpoint if one covers it and no reply otherwise), and not answering is
// always safe in Paxos.

// minShift is the fewest released slots worth shifting the log down for
// (with a window above it, the window is). The shift copies the retained
// suffix, so it runs only when the released prefix is both this long and at
// least half the log, which keeps its cost amortized constant per slot. It is
// small enough that the simulator's short runs with small windows shift often.
const minShift = 64

// noteDurableCommit records member from's durable commit index c, reported in
// a message that left from only once its state was durable.
func (n *Node) noteDurableCommit(from wire.ReplicaID, c wire.Slot) {
	if i := n.index[from]; n.peerCommit[i] < c {
		n.peerCommit[i] = c
	}
	if n.role == Leader && c > n.commit && n.commit < n.nextSlot {
		// A peer knows slots chosen that this leader re-proposed and has
		// not seen chosen: they were chosen in an earlier ballot, and the
		// peer may have released them (a checkpoint), so it votes for them
		// no more. Learn them instead (onCatchUp).
		n.requestCatchUp(from, min(c, n.nextSlot))
	}
}

// releasePoint is the slot below which, as far as this replica knows, every
// member holds every chosen value durably: the minimum of its own durable
// commit index and every peer's reported one.
func (n *Node) releasePoint() wire.Slot {
	r := n.durableCommit
	n.forEachPeer(n.membersFrom(n.commit)&^n.self, func(p wire.ReplicaID) {
		r = min(r, n.peerCommit[n.index[p]])
	})
	return r
}

// release drops the values of the slots below upTo (or below this
// replica's newest checkpoint, if that is higher), or below applied if that
// is lower: every value below applied was handed out in Ready.Apply already.
// The caller guarantees that every member holds every chosen value below upTo
// durably (a release point). No *slotState may be held across a call.
func (n *Node) release(upTo wire.Slot) {
	upTo = min(max(upTo, n.snapshot), n.applied)
	if upTo <= n.released {
		return
	}
	contract.Require(upTo <= n.commit, "release beyond the commit index")
	for s := n.released; s < upTo; s++ {
		n.at(s).value = wire.Value{}
	}
	n.released = upTo
	k := int(upTo - n.base)
	if k < max(minShift, n.cfg.Window) || k < len(n.log)/2 {
		return
	}
	kept := len(n.log) - k
	if cap(n.log) > 4*max(kept, minShift) {
		// The log once grew far beyond what it holds now (a member was down):
		// give that memory back instead of keeping the large array.
		n.log = append(make([]slotState, 0, 2*max(kept, minShift)), n.log[k:]...)
	} else {
		copy(n.log, n.log[k:])
		clear(n.log[kept:])
		n.log = n.log[:kept]
	}
	n.base = upTo
	n.pruneHistory()
	contract.Ensure(n.base <= n.released && n.released <= n.applied, "release left base, released and applied out of order")
}
