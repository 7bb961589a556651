package engine

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/vestalabs/vesta/engine/paxos"
	"github.com/vestalabs/vesta/engine/wire"
)

// LeadershipVeto is implemented by a state machine that may refuse to let
// its replica lead (RSL's CanBecomePrimary): a replica whose state machine
// says no does not campaign, and one that leads hands leadership to the
// most caught-up peer. The core loop asks every tick, concurrently with
// Apply: CanBecomeLeader must be cheap and safe to call from any goroutine.
type LeadershipVeto interface {
	CanBecomeLeader() bool
}

// LeaderChange is what Config.OnLeaderChange receives: who leads now (0:
// nobody known), and whether it is this replica.
type LeaderChange struct {
	Leader wire.ReplicaID
	IsSelf bool
}

// PeerHealth is a peer's health as the leader sees it (Status.Peers).
type PeerHealth struct {
	ID wire.ReplicaID `json:"id"`
	// LastContact is how long ago the leader last heard from it.
	LastContact time.Duration `json:"last_contact_ns"`
	// CommitLag is how many slots its durable commit index is behind the
	// leader's.
	CommitLag uint64 `json:"commit_lag"`
	// Outstanding counts the slots sent to it and not acknowledged.
	Outstanding int `json:"outstanding"`
}

// TransferLeadership hands leadership to replica to, or with to 0 to the
// most caught-up peer, and waits until another replica leads. It fails with
// a *NotLeaderError on a replica that does not lead, an error naming a
// replica that is not a peer, or the context's error (the handover is given
// up after an election timeout if the target does not take over: a target
// whose state machine vetoes leading never does).
func (r *Replica) TransferLeadership(ctx context.Context, to wire.ReplicaID) (wire.ReplicaID, error) {
	req := handoverReq{to: to, done: make(chan error, 1)}
	select {
	case r.handovers <- req:
	case <-r.stopping:
		return 0, r.stoppedErr()
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	select {
	case err := <-req.done:
		if err != nil {
			return 0, err
		}
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	tick := time.NewTicker(r.cfg.TickInterval)
	defer tick.Stop()
	for {
		if l := r.Leader(); l != 0 && l != r.cfg.ID {
			return l, nil
		}
		select {
		case <-tick.C:
		case <-r.done:
			return 0, r.stoppedErr()
		case <-ctx.Done():
			return 0, fmt.Errorf("vesta: leadership not handed over (to %d): %w", to, ctx.Err())
		}
	}
}

type handoverReq struct {
	to   wire.ReplicaID
	done chan error
}

// startHandover runs a TransferLeadership request. Core loop only.
func (r *Replica) startHandover(req handoverReq) {
	err := r.node.TransferLeadership(req.to)
	if err == paxos.ErrNotLeader {
		err = &NotLeaderError{Leader: r.node.Status().Leader}
	}
	if err == nil {
		r.log.Info("handing leadership over", "to", r.node.HandingOver())
	}
	req.done <- err
}

// onTick asks the state machine's veto and publishes peer health. Core
// loop only, once a tick.
func (r *Replica) onTick() {
	if v, ok := r.sm.(LeadershipVeto); ok {
		r.node.SetCanLead(v.CanBecomeLeader())
	}
	st := r.node.Status()
	r.checkRemoved(&st)
	if st.Role != paxos.Leader {
		if r.peers.Load() != nil {
			r.peers.Store(nil)
		}
		return
	}
	r.healthTicks++
	if r.healthTicks < r.cfg.HeartbeatTicks {
		return
	}
	r.healthTicks = 0
	peers := r.node.Peers()
	out := make([]PeerHealth, 0, len(peers))
	for _, p := range peers {
		h := PeerHealth{ID: p.ID, LastContact: time.Duration(p.LastContact) * r.cfg.TickInterval, Outstanding: p.Outstanding}
		if st.Commit > p.Commit {
			h.CommitLag = uint64(st.Commit - p.Commit)
		}
		out = append(out, h)
		id := fmt.Sprint(p.ID)
		r.m.peerLastContact.WithLabelValues(id).Set(h.LastContact.Seconds())
		r.m.peerCommitLag.WithLabelValues(id).Set(float64(h.CommitLag))
		r.m.peerOutstanding.WithLabelValues(id).Set(float64(h.Outstanding))
	}
	r.peers.Store(&out)
}

// notifier calls Config.OnLeaderChange in order, on a goroutine of its own,
// so a slow callback holds up nothing but later notifications.
type notifier struct {
	mu    sync.Mutex
	queue []LeaderChange
	wake  chan struct{}
}

func (r *Replica) notifyLeader(leader wire.ReplicaID) {
	if r.cfg.OnLeaderChange == nil {
		return
	}
	n := &r.notify
	n.mu.Lock()
	n.queue = append(n.queue, LeaderChange{Leader: leader, IsSelf: leader == r.cfg.ID})
	n.mu.Unlock()
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

func (r *Replica) runNotifier() {
	defer r.background.Done()
	n := &r.notify
	for {
		select {
		case <-n.wake:
		case <-r.stopping:
			return
		}
		n.mu.Lock()
		q := n.queue
		n.queue = nil
		n.mu.Unlock()
		for _, c := range q {
			r.cfg.OnLeaderChange(c)
		}
	}
}
