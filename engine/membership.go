package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/vestalabs/vesta/engine/checkpoint"
	"github.com/vestalabs/vesta/engine/paxos"
	"github.com/vestalabs/vesta/engine/wire"
)

// Membership changes (the protocol's side is engine/paxos, membership.go).
//
// ChangeMembership proposes a new member set at the leader; the change is a
// value chosen in some slot s and governs from s+α. The applier follows the
// configuration as it applies (so a checkpoint of slot s records the
// configurations from s on, and a state machine that implements
// MembershipObserver hears of each change in slot order); the core loop
// stops a replica that learns it was removed, with ErrRemoved.

// ErrRemoved is the cause a replica stops with once it learns that a
// membership change removed it and that the remaining members no longer
// need it. errors.Is(err, ErrStopped) holds too.
var ErrRemoved = errors.New("vesta: this replica was removed from the cluster")

// ErrChangeNotChosen is returned by ChangeMembership when the slot its
// change was proposed in was filled with another value (leadership moved
// before the change was chosen): the change was not made, and nothing
// changed; retry it (RSL's AbortChangeConfiguration outcome).
var ErrChangeNotChosen = errors.New("vesta: the membership change was not made (leadership moved before it was chosen); nothing changed, retry it")

// LearnerCatchUpSlots is how close, in slots, a learner's durable commit
// index must be to the leader's before AddMember and ReplaceMember make it
// a voter: a voter far behind would slow every quorum it is needed in.
const LearnerCatchUpSlots = 1024

// MembershipObserver is implemented by a state machine that wants to hear
// of membership changes: MembershipChanged is called on the applier
// goroutine, in slot order with Apply, with the slot the change was chosen
// in and the configuration it makes (which governs from m.From on).
type MembershipObserver interface {
	MembershipChanged(slot wire.Slot, m paxos.Membership)
}

// Membership is a configuration of the cluster: see paxos.Membership.
type Membership = paxos.Membership

// Memberships returns the configurations this replica knows as of what it
// applied, oldest first: the one governing its applied index, then any
// chosen change that governs later slots.
func (r *Replica) Memberships() []Membership {
	if p := r.members.Load(); p != nil {
		return slices.Clone(*p)
	}
	return nil
}

// ChangeMembership asks the leader to change the member set to voters and
// learners, and waits until the change is chosen and applied here. It
// returns the new configuration (with its epoch and the slot it governs
// from). Its results:
//   - the configuration: the change is made, and governs from its From;
//   - ErrNotLeader on a replica that does not lead: ask the leader;
//   - paxos.ErrChangeInProgress while an earlier change is not chosen:
//     wait, and retry;
//   - ErrChangeNotChosen: leadership moved and the change's slot holds
//     another value: nothing changed; retry;
//   - the context's error: its fate is not known yet: look at Memberships
//     before retrying.
//
// AddMember, RemoveMember and ReplaceMember build on it.
func (r *Replica) ChangeMembership(ctx context.Context, voters, learners []wire.ReplicaID) (Membership, error) {
	req := memberReq{voters: voters, learners: learners, done: make(chan memberRes, 1)}
	select {
	case r.memberChanges <- req:
	case <-r.stopping:
		return Membership{}, r.stoppedErr()
	case <-ctx.Done():
		return Membership{}, ctx.Err()
	}
	var res memberRes
	select {
	case res = <-req.done:
	case <-ctx.Done():
		return Membership{}, ctx.Err()
	}
	if res.err != nil {
		return Membership{}, res.err
	}
	tick := time.NewTicker(r.cfg.TickInterval)
	defer tick.Stop()
	for {
		if wire.Slot(r.applier.applied.Load()) > res.slot {
			ms := r.Memberships()
			for _, m := range ms {
				if m.From == res.slot+wire.Slot(m.Alpha) {
					return m, nil
				}
			}
			return Membership{}, fmt.Errorf("slot %d: %w", res.slot, ErrChangeNotChosen)
		}
		select {
		case <-tick.C:
		case <-r.done:
			return Membership{}, r.stoppedErr()
		case <-ctx.Done():
			return Membership{}, fmt.Errorf("vesta: membership change in slot %d not applied yet: %w", res.slot, ctx.Err())
		}
	}
}

type memberReq struct {
	voters, learners []wire.ReplicaID
	done             chan memberRes
}

type memberRes struct {
	slot wire.Slot
	err  error
}

// proposeMembership runs a ChangeMembership request. Core loop only.
func (r *Replica) proposeMembership(req memberReq) {
	s, err := r.node.ProposeMembership(req.voters, req.learners)
	if errors.Is(err, paxos.ErrNotLeader) {
		err = ErrNotLeader
	}
	req.done <- memberRes{slot: s, err: err}
	if err == nil {
		r.log.Info("membership change proposed", "slot", uint64(s), "voters", req.voters, "learners", req.learners)
	}
}

// checkRemoved stops the replica once the protocol says it was removed.
// Core loop only.
func (r *Replica) checkRemoved(st *paxos.Status) {
	if st.Removed {
		r.log.Info("removed from the cluster by a membership change; stopping", "commit", uint64(st.Commit))
		r.fail(ErrRemoved)
	}
}

// membershipTracker follows the configuration as the applier applies.
// Applier goroutine only, but for the published copy.
type membershipTracker struct {
	history   []Membership
	published *atomic.Pointer[[]Membership]
}

func (t *membershipTracker) set(ms []Membership) {
	t.history = slices.Clone(ms)
	cp := slices.Clone(ms)
	t.published.Store(&cp)
}

// apply takes a chosen change in slot s.
func (t *membershipTracker) apply(s wire.Slot, v wire.Value) (Membership, error) {
	m, err := paxos.NextMembership(t.history[len(t.history)-1], s, v)
	if err != nil {
		return Membership{}, err
	}
	t.set(append(paxos.MembershipsAt(t.history, s), m))
	return m, nil
}

// historyOf decodes a checkpoint's membership section; a version 1 file
// has none, and its cluster's members are the bootstrap ones.
func historyOf(cfg *Config, meta checkpoint.Meta) ([]Membership, error) {
	if len(meta.Memberships) == 0 {
		return []Membership{cfg.bootstrapMembership()}, nil
	}
	ms, err := paxos.DecodeMemberships(meta.Memberships)
	if err != nil {
		return nil, err
	}
	if ms[0].From > meta.Slot {
		return nil, fmt.Errorf("its oldest configuration governs from slot %d, after its slot %d", ms[0].From, meta.Slot)
	}
	return ms, nil
}

// bootstrapMembership is the configuration a cluster is created with.
func (c *Config) bootstrapMembership() Membership {
	pc := c.paxosConfig(0)
	return pc.Bootstrap()
}

// knows reports whether id is a replica this one may talk state transfer
// with: one of Config.Members or of a configuration it knows.
func (r *Replica) knows(id wire.ReplicaID) bool {
	if slices.Contains(r.cfg.Members, id) {
		return true
	}
	for _, m := range r.Memberships() {
		if m.IsMember(id) {
			return true
		}
	}
	return false
}

// newest returns this replica's newest configuration.
func (r *Replica) newest() Membership {
	ms := r.Memberships()
	return ms[len(ms)-1]
}

// AddMember adds replica id, at the leader: as a learner first; with voter,
// it then waits until id has caught up within LearnerCatchUpSlots of the
// leader's commit index and makes it a voter. Start id (Config.Join) before
// or after calling it. A member already is one: adding it as a voter
// promotes a learner.
func (r *Replica) AddMember(ctx context.Context, id wire.ReplicaID, voter bool) (Membership, error) {
	m := r.newest()
	if !m.IsMember(id) {
		var err error
		if m, err = r.ChangeMembership(ctx, m.Voters, append(slices.Clone(m.Learners), id)); err != nil {
			return Membership{}, fmt.Errorf("vesta: adding %d as a learner: %w", id, err)
		}
	}
	if !voter || m.IsVoter(id) {
		return m, nil
	}
	if err := r.waitCaughtUp(ctx, id); err != nil {
		return Membership{}, err
	}
	m = r.newest()
	return r.ChangeMembership(ctx, append(slices.Clone(m.Voters), id), without(m.Learners, id))
}

// RemoveMember removes replica id (voter or learner), at the leader. The
// removed replica stops (ErrRemoved) once it knows the others no longer
// need it.
func (r *Replica) RemoveMember(ctx context.Context, id wire.ReplicaID) (Membership, error) {
	m := r.newest()
	if !m.IsMember(id) {
		return m, nil
	}
	return r.ChangeMembership(ctx, without(m.Voters, id), without(m.Learners, id))
}

// ReplaceMember replaces voter old with replica nw, at the leader: nw joins
// as a learner (unless it is a member already), catches up within
// LearnerCatchUpSlots, then one change makes it a voter in old's place.
// Start nw with Config.Join: a replica whose directory was lost comes back
// only this way, under a new ID, never under its old one (it would have
// forgotten its promises).
func (r *Replica) ReplaceMember(ctx context.Context, old, nw wire.ReplicaID) (Membership, error) {
	m := r.newest()
	if !m.IsVoter(old) {
		return Membership{}, fmt.Errorf("vesta: cannot replace %d: not a voter in %v", old, m)
	}
	if !m.IsMember(nw) {
		if _, err := r.AddMember(ctx, nw, false); err != nil {
			return Membership{}, err
		}
	}
	if err := r.waitCaughtUp(ctx, nw); err != nil {
		return Membership{}, err
	}
	m = r.newest()
	voters := without(m.Voters, old)
	if !slices.Contains(voters, nw) {
		voters = append(voters, nw)
	}
	return r.ChangeMembership(ctx, voters, without(m.Learners, nw))
}

// waitCaughtUp waits until this leader sees id's durable commit index
// within LearnerCatchUpSlots of its own.
func (r *Replica) waitCaughtUp(ctx context.Context, id wire.ReplicaID) error {
	tick := time.NewTicker(r.cfg.TickInterval)
	defer tick.Stop()
	for {
		st := r.Status()
		if st.Role != "leader" {
			return fmt.Errorf("vesta: waiting for %d to catch up: %w", id, ErrNotLeader)
		}
		for _, p := range st.Peers {
			if p.ID == id && p.CommitLag <= LearnerCatchUpSlots && p.LastContact < r.cfg.TickInterval*time.Duration(r.cfg.ElectionTicks) {
				return nil
			}
		}
		select {
		case <-tick.C:
		case <-r.done:
			return r.stoppedErr()
		case <-ctx.Done():
			return fmt.Errorf("vesta: %d has not caught up with the leader within %d slots: %w (is it started, with Config.Join?)", id, LearnerCatchUpSlots, ctx.Err())
		}
	}
}

func without(ids []wire.ReplicaID, id wire.ReplicaID) []wire.ReplicaID {
	return slices.DeleteFunc(slices.Clone(ids), func(x wire.ReplicaID) bool { return x == id })
}
