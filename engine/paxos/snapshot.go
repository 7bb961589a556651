package paxos

import (
	"github.com/vestalabs/vesta/engine/wire"
	"github.com/vestalabs/vesta/internal/contract"
)

// Checkpoints, compaction and state transfer.
//
// The core never sees a checkpoint's bytes: the caller writes the state
// machine's image to a durable file and reports its slot with Compact; the
// caller moves images between replicas and reports one it restored with
// InstallSnapshot. The core decides what a checkpoint lets go and who needs
// one:
//
//   - Compact(s): a durable checkpoint here covers every slot below s. The
//     values below s are released (release.go) whatever the other members
//     hold, so a member that is down no longer holds this replica's memory
//     back, and the caller may compact its durable log below s.
//   - A catch-up request from below the released prefix is answered with
//     Ready.SendSnapshot when this replica's checkpoint reaches past the
//     asker's commit index: the caller sends the checkpoint.
//   - InstallSnapshot(s): the caller restored the state machine from a
//     durable checkpoint of slot s (received from a peer). Every slot below s
//     is chosen and applied in that image; this replica's commit index,
//     applied index and log start jump to s, and catch-up resumes from there.
//
// Why this is safe. A checkpoint of slot s holds the state after applying
// the chosen values of every slot below s, so slots below s are chosen here
// (s <= commit) and never change again. Forgetting their values and votes
// changes no answer that matters for safety: a Prepare from below this
// replica's commit index is refused anyway (onPrepare), an Accept for a slot
// below the released prefix gets no vote (not voting is safe), and a
// catch-up request below it gets a checkpoint, whose slots are chosen facts,
// not votes. Votes at or above s stay in the log. After a restart the caller
// restores the newest valid checkpoint and passes its slot in
// Persisted.Snapshot; the durable log supplies the rest.

// Compact reports that a checkpoint covering every slot below s is durable
// here (written, synced and renamed into place). s must not exceed the
// applied index: a checkpoint is an image of applied state. Values below s
// are released at once; the caller may then compact its durable log below s
// (storage.Compactor). A slot at or below the current snapshot changes
// nothing.
func (n *Node) Compact(s wire.Slot) {
	contract.Require(s <= n.applied, "checkpoint beyond the applied index")
	if s <= n.snapshot {
		return
	}
	n.snapshot = s
	n.release(s)
	n.checkInvariants()
}

// InstallSnapshot reports that the caller restored the state machine from a
// durable checkpoint covering every slot below s, and that no Apply handed
// out earlier is still pending (the caller drained them first, or discarded
// them: the image already holds their effects). It returns false and changes
// nothing when the checkpoint brings nothing new (s is not beyond the commit
// index): the caller should not have restored it, and should check
// NeedsSnapshot first.
//
// Every slot below s becomes chosen and applied; the log's entries below s
// are dropped and those at or above it kept (they may be votes already
// revealed). A candidate or leader steps down first: a replica that learns
// of chosen slots beyond its commit index this way is behind, and leads
// nothing until it has caught up.
//
// ms are the configurations the checkpoint recorded (MembershipsAt): the
// one governing s and those chosen below s that govern later slots. They
// replace what this replica knew, which ended below s.
func (n *Node) InstallSnapshot(s wire.Slot, ms []Membership) bool {
	if !n.NeedsSnapshot(s) {
		return false
	}
	contract.Require(len(ms) > 0 && ms[0].From <= s, "a checkpoint without the configuration of its slot")
	if n.bugs&BugInstallOffByOne != 0 {
		s++
	}
	if n.role != Follower {
		n.stepDown()
	}
	n.preVoting = false
	if s >= n.end() {
		n.log = n.log[:0]
	} else {
		k := int(s - n.base)
		kept := len(n.log) - k
		copy(n.log, n.log[k:])
		clear(n.log[kept:])
		n.log = n.log[:kept]
	}
	n.base, n.released, n.snapshot, n.commit, n.applied = s, s, s, s, s
	err := n.setHistory(ms)
	contract.Invariantf(err == nil, "checkpoint's configurations: %v", err)
	n.membershipChanged = true
	// The checkpoint is durable: its slot is as good as a durable commit.
	n.durableCommit = max(n.durableCommit, s)
	n.catchUpInFlight, n.catchUpMisses = false, 0
	n.advanceCommit()
	n.checkInvariants()
	contract.Ensure(n.commit >= s && n.applied == s && n.base == s, "install left commit, applied or base elsewhere")
	return true
}

// NeedsSnapshot reports whether a checkpoint of slot s would bring this
// replica forward: whether s is beyond its commit index.
func (n *Node) NeedsSnapshot(s wire.Slot) bool { return s > n.commit }
