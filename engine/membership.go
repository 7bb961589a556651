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
// from). It fails with ErrNotLeader on a replica that does not lead, with
// paxos.ErrChangeInProgress while an earlier change is not chosen, and
// with ErrOutcomeUnknown-like context errors if the change's fate is not
// known in time: then look at Memberships before retrying.
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
			return Membership{}, fmt.Errorf("vesta: the membership change proposed in slot %d was not chosen (another value was): %w", res.slot, ErrOutcomeUnknown)
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
	return Membership{Epoch: 1, Alpha: uint64(c.alpha()), Voters: slices.Clone(c.Members)}
}

func (c *Config) alpha() int {
	if c.Alpha == 0 {
		return paxos.DefaultAlpha
	}
	return c.Alpha
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
