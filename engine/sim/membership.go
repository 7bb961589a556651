package sim

import (
	"slices"

	"github.com/vestalabs/vesta/engine/paxos"
	"github.com/vestalabs/vesta/engine/wire"
)

// Membership changes in the simulated cluster.
//
// While faults run, a leader now and then proposes a change (paxos
// membership.go) drawn from what its newest configuration allows: add a
// spare as a learner, promote a learner, remove a voter or a learner, or
// replace a voter with a learner or a spare at once. A spare starts knowing
// only how the cluster began and learns the rest from its peers (catch-up or
// a checkpoint). A replica that learns it was removed stops for good; it is
// never added again (a replica that is gone comes back only under a new ID).
//
// The checker does not trust any replica's view of the configuration: it
// derives which replicas vote in each slot from the values learned, with α,
// and judges "chosen" by those voters alone.

// changeEvery is the mean number of a leader's ticks between changes.
const changeEvery = 40

func (o Options) alpha() int { return 2 * o.Window }

// maybeChangeMembership proposes a random change at a leader, now and then,
// while faults run.
func (c *cluster) maybeChangeMembership(r *replica) {
	if c.opts.NoMembership || !c.faulty || r.node.Status().Role != paxos.Leader || c.rng.IntN(changeEvery) != 0 {
		return
	}
	ms := r.node.Memberships()
	m := ms[len(ms)-1]
	voters, learners := slices.Clone(m.Voters), slices.Clone(m.Learners)
	var spares []wire.ReplicaID
	for _, p := range c.replicas {
		if !p.removed && !p.retiring && !m.IsMember(p.id) {
			spares = append(spares, p.id)
		}
	}
	pick := func(ids []wire.ReplicaID) wire.ReplicaID { return ids[c.rng.IntN(len(ids))] }
	without := func(ids []wire.ReplicaID, id wire.ReplicaID) []wire.ReplicaID {
		return slices.DeleteFunc(slices.Clone(ids), func(x wire.ReplicaID) bool { return x == id })
	}
	minVoters, maxVoters := max(2, c.opts.Replicas-1), c.opts.Replicas+1
	var what string
	var gone wire.ReplicaID
	switch k := c.rng.IntN(5); {
	case k == 0 && len(spares) > 0:
		x := pick(spares)
		learners, what = append(learners, x), "add learner"
	case k == 1 && len(learners) > 0 && len(voters) < maxVoters:
		x := pick(learners)
		voters, learners, what = append(voters, x), without(learners, x), "promote"
	case k == 2 && len(voters) > minVoters:
		gone = pick(voters)
		voters, what = without(voters, gone), "remove voter"
	case k == 3 && len(learners) > 0:
		gone = pick(learners)
		learners, what = without(learners, gone), "remove learner"
	case k == 4 && len(learners)+len(spares) > 0:
		// Replace a voter at once, with a learner or a spare that may
		// know nothing yet.
		x := pick(append(slices.Clone(learners), spares...))
		gone = pick(voters)
		voters, learners, what = append(without(voters, gone), x), without(learners, x), "replace"
	default:
		return
	}
	s, err := r.node.ProposeMembership(voters, learners)
	if err != nil {
		c.tracef("r%d membership change (%s) refused: %v", r.id, what, err)
		return
	}
	if gone != 0 {
		// Never added again, whether or not this change is chosen.
		c.replicas[gone-1].retiring = true
	}
	c.res.MembershipChanges++
	c.tracef("r%d proposes membership change (%s) in slot %d: voters %v learners %v", r.id, what, s, voters, learners)
}

// otherTarget picks a replica for a client to try, other than not, among
// those not removed: a client library learns the member set from the
// cluster and stops asking replicas that left it.
func (c *cluster) otherTarget(not int) int {
	var ok []int
	for i, r := range c.replicas {
		if i != not && !r.removed {
			ok = append(ok, i)
		}
	}
	if len(ok) == 0 {
		return not
	}
	return ok[c.rng.IntN(len(ok))]
}

// retireIfRemoved stops r for good once it learns it was removed.
func (c *cluster) retireIfRemoved(r *replica) bool {
	if !r.up || !r.node.Status().Removed {
		return false
	}
	r.up, r.removed, r.node = false, true, nil
	r.gen++
	c.res.Removed++
	c.tracef("r%d learned it was removed: stopped", r.id)
	return true
}

// finalMembership is the newest configuration of the replica that has
// learned the most: who must have converged by the end of the run.
func (c *cluster) finalMembership() paxos.Membership {
	var best *replica
	for _, r := range c.replicas {
		if r.up && (best == nil || r.node.Status().Commit > best.node.Status().Commit) {
			best = r
		}
	}
	if best == nil {
		return paxos.Membership{Voters: c.ids}
	}
	ms := best.node.Memberships()
	return ms[len(ms)-1]
}

// allIDs lists every replica of the run, spares included: the identity a
// simulated pmem log records (a spare's log is its own, not a member's).
func (c *cluster) allIDs() []wire.ReplicaID {
	ids := make([]wire.ReplicaID, len(c.replicas))
	for i, r := range c.replicas {
		ids[i] = r.id
	}
	return ids
}
