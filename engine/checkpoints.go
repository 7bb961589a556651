package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/vestalabs/vesta/engine/checkpoint"
	"github.com/vestalabs/vesta/engine/paxos"
	"github.com/vestalabs/vesta/engine/storage"
	"github.com/vestalabs/vesta/engine/wire"
)

// Checkpoints in the runtime.
//
// Who does what:
//
//   - The applier takes a checkpoint between applies once
//     Checkpoints.Bytes of chosen values were applied since the last one:
//     a Freezer's frozen view is written by a goroutine of its own while
//     applies go on; any other state machine's Snapshot runs on the
//     applier, and applies wait.
//   - Writing a checkpoint (checkpoint.Write) makes it durable: temporary
//     file, sync, rename, directory sync.
//   - The core loop then learns of it (checkpointDone): the protocol core
//     releases everything below it (paxos.Node.Compact), old checkpoints are
//     pruned to Keep, and the durable log is compacted below the oldest
//     checkpoint kept, so recovery can fall back to any kept checkpoint and
//     find the log after it. A checkpoint received from a peer (transfer.go)
//     takes the same path once installed.
//   - On restart (recoverCheckpoint) the newest checkpoint that verifies
//     whole is restored before the log is replayed; a damaged newer one is
//     skipped with a logged reason.

// checkpointResult is what the core loop learns when a checkpoint written
// here is durable, or could not be written.
type checkpointResult struct {
	info checkpoint.Info
	err  error
	// held is how long applies waited for it (the freeze, or the whole
	// Snapshot of a state machine that cannot freeze); took is how long
	// writing it took.
	held, took time.Duration
}

// maybeCheckpoint takes a checkpoint if enough was applied since the last
// one and none is being written. Applier goroutine only.
func (a *applier) maybeCheckpoint() {
	ck := &a.r.cfg.Checkpoints
	if ck.Dir == "" || a.writing.Load() {
		return
	}
	if a.forced.Swap(false) || a.sinceCheckpoint >= ck.Bytes+a.firstCheckpointLate {
		a.takeCheckpoint()
		return
	}
	if a.sinceCheckpoint <= 0 {
		return
	}
	if ck.Interval > 0 && time.Since(a.lastCheckpoint) >= ck.Interval {
		a.takeCheckpoint()
		return
	}
	if fill := a.r.logFill(); (fill >= fillCheckpoint && a.sinceCheckpoint >= ck.Bytes/8) || fill >= fillThrottle {
		a.takeCheckpoint()
	}
}

// takeCheckpoint takes a checkpoint of everything applied so far. Applier
// goroutine only.
func (a *applier) takeCheckpoint() {
	a.sinceCheckpoint, a.firstCheckpointLate = 0, 0
	a.lastCheckpoint = time.Now()
	a.writing.Store(true)
	meta := a.r.checkpointMeta(wire.Slot(a.applied.Load()), a.members.history)
	start := time.Now()
	if f, ok := a.r.sm.(Freezer); ok {
		view := f.Freeze()
		held := time.Since(start)
		a.r.background.Add(1)
		go func() {
			defer a.r.background.Done()
			a.r.writeCheckpoint(meta, held, func(w io.Writer) error { _, err := view.WriteTo(w); return err })
		}()
		return
	}
	a.r.writeCheckpoint(meta, -1, a.r.sm.Snapshot)
}

// restore replaces the state machine's state with a checkpoint received
// from a peer. Applier goroutine only.
func (a *applier) restore(info checkpoint.Info) error {
	start := time.Now()
	rd, err := checkpoint.Open(a.r.cfg.Checkpoints.FS, info.Path)
	if err != nil {
		return fmt.Errorf("vesta: restoring the state machine from checkpoint %s: %w", info.Path, err)
	}
	defer rd.Close()
	history, err := historyOf(&a.r.cfg, info.Meta)
	if err != nil {
		return fmt.Errorf("vesta: checkpoint %s: membership section: %w", info.Path, err)
	}
	if err := a.r.sm.Restore(rd); err != nil {
		return fmt.Errorf("vesta: restoring the state machine from checkpoint %s: %w", info.Path, err)
	}
	a.applied.Store(uint64(info.Meta.Slot))
	a.members.set(history)
	if obs, ok := a.r.sm.(MembershipObserver); ok {
		obs.MembershipChanged(info.Meta.Slot, history[len(history)-1])
	}
	a.sinceCheckpoint = 0
	a.r.m.appliedIndex.Set(float64(info.Meta.Slot))
	a.r.log.Info("state machine restored from a checkpoint sent by a peer", "slot", uint64(info.Meta.Slot),
		"bytes", info.Meta.Size, "took", time.Since(start))
	return nil
}

// checkpointMeta is the header of a checkpoint of this replica at slot.
// history is the applier's configuration history.
func (r *Replica) checkpointMeta(slot wire.Slot, history []Membership) checkpoint.Meta {
	from := paxos.MembershipsAt(history, slot)
	members := slices.Clone(from[0].Voters)
	slices.Sort(members)
	var promised wire.Ballot
	if st := r.status.Load(); st != nil {
		promised = st.promised
	}
	return checkpoint.Meta{ClusterID: r.cfg.ClusterID, Replica: r.cfg.ID, Slot: slot, Ballot: promised, Members: members,
		Memberships: paxos.EncodeMemberships(from)}
}

// writeCheckpoint writes a checkpoint and hands the outcome to the core
// loop. It runs on the applier goroutine or on its own.
func (r *Replica) writeCheckpoint(meta checkpoint.Meta, held time.Duration, fill func(io.Writer) error) {
	start := time.Now()
	info, err := checkpoint.Write(r.cfg.Checkpoints.FS, r.cfg.Checkpoints.Dir, meta, fill)
	took := time.Since(start)
	if err == nil {
		r.m.checkpointSeconds.Observe(took.Seconds())
	}
	if held < 0 {
		held = took // written on the applier: applies waited throughout
	}
	select {
	case r.checkpointDone <- checkpointResult{info: info, err: err, held: held, took: took}:
	case <-r.stopping:
	}
}

// checkpointed takes a checkpoint made durable here (core loop only).
func (r *Replica) checkpointed(res checkpointResult) {
	r.applier.writing.Store(false)
	defer r.completeWaiters(res)
	if res.err != nil {
		// The log is not compacted, so nothing is lost; the next
		// checkpoint is tried after as many bytes again.
		r.m.checkpointFailures.Inc()
		r.log.Error("checkpoint failed; the log is not compacted until one succeeds", "err", res.err)
		return
	}
	r.m.checkpoints.Inc()
	r.log.Info("checkpoint written", "slot", uint64(res.info.Meta.Slot), "bytes", res.info.Meta.Size, "file", res.info.Path,
		"applies_held", res.held, "took", res.took)
	r.compactTo(res.info)
}

// compactTo releases what a durable checkpoint covers: the protocol core's
// values below it, older checkpoints beyond Keep, and the durable log below
// the oldest checkpoint kept. Core loop only.
func (r *Replica) compactTo(info checkpoint.Info) {
	slot := info.Meta.Slot
	if uint64(slot) < r.newestCheckpoint.Load() {
		return // an older one, written while a newer arrived from a peer
	}
	if slot > r.node.Status().Snapshot {
		r.node.Compact(slot)
	}
	r.newestCheckpoint.Store(uint64(slot))
	r.m.checkpointSlot.Set(float64(slot))
	ck := &r.cfg.Checkpoints
	if err := checkpoint.PruneCheckpoints(ck.FS, ck.Dir, ck.Keep); err != nil {
		r.log.Warn("could not remove old checkpoints", "dir", ck.Dir, "err", err)
	}
	infos, err := checkpoint.List(ck.FS, ck.Dir)
	if err != nil {
		r.log.Warn("could not list checkpoints", "dir", ck.Dir, "err", err)
		return
	}
	below := slot
	for _, in := range infos {
		if in.Err == nil && in.Meta.Slot < below {
			below = in.Meta.Slot
		}
	}
	if below < slot && r.logFill() >= fillThrottle {
		// The log is nearly full: free it up to the newest checkpoint. A
		// damaged newest checkpoint then has no log to fall back on, which
		// beats a replica that stops for a full log.
		r.log.Warn("log nearly full: compacting below the newest checkpoint, not the older one kept", "slot", uint64(slot))
		below = slot
	}
	r.compactLog(below)
}

// compactLog has the durable log release its records below slot, on the
// goroutine that owns the log.
func (r *Replica) compactLog(below wire.Slot) {
	if _, ok := r.store.(storage.Compactor); !ok || below == 0 {
		return
	}
	if r.inline {
		r.doCompactLog(below)
		return
	}
	r.writer.compact(below)
}

// doCompactLog compacts the log; it runs where the log is owned (the core
// loop for an inline log, else the log writer). A failure is logged, not
// fatal: compaction only gives space back.
func (r *Replica) doCompactLog(below wire.Slot) {
	c, ok := r.store.(storage.Compactor)
	if !ok {
		return
	}
	start := time.Now()
	if err := c.Compact(below); err != nil {
		r.m.compactFailures.Inc()
		r.log.Error("log compaction failed", "below", uint64(below), "err", err)
		return
	}
	r.m.compactions.Inc()
	r.log.Debug("log compacted", "below", uint64(below), "took", time.Since(start))
}

// recoverCheckpoint restores the state machine from the newest checkpoint
// that verifies whole, before the log is replayed, and returns its slot (0
// without one).
func recoverCheckpoint(cfg *Config, sm StateMachine) (wire.Slot, []Membership, error) {
	ck := &cfg.Checkpoints
	if ck.Dir == "" {
		return 0, nil, nil
	}
	// What a crash left mid-write or mid-transfer goes; nothing else
	// writes in the directory yet.
	if err := checkpoint.Prune(ck.FS, ck.Dir, ck.Keep); err != nil {
		cfg.Logger.Warn("could not remove old or partial checkpoints", "dir", ck.Dir, "err", err)
	}
	rd, err := checkpoint.OpenNewestValid(ck.FS, ck.Dir, cfg.Logger)
	if errors.Is(err, checkpoint.ErrNoCheckpoint) {
		return 0, nil, nil
	}
	if err != nil {
		return 0, nil, fmt.Errorf("vesta: reading checkpoints: %w", err)
	}
	defer rd.Close()
	meta := rd.Meta()
	history, err := historyOf(cfg, meta)
	if err != nil {
		return 0, nil, fmt.Errorf("vesta: checkpoint %s: membership section: %w", rd.Info().Path, err)
	}
	if meta.ClusterID != cfg.ClusterID {
		return 0, nil, fmt.Errorf("vesta: checkpoint %s is of cluster %d, this replica is of cluster %d: a checkpoint directory of another cluster",
			rd.Info().Path, meta.ClusterID, cfg.ClusterID)
	}
	if err := sm.Restore(rd); err != nil {
		return 0, nil, fmt.Errorf("vesta: restoring the state machine from checkpoint %s: %w", rd.Info().Path, err)
	}
	cfg.Logger.Info("state machine restored from checkpoint", "replica", cfg.ID, "slot", uint64(meta.Slot), "file", rd.Info().Path)
	if obs, ok := sm.(MembershipObserver); ok {
		obs.MembershipChanged(meta.Slot, history[len(history)-1])
	}
	return meta.Slot, history, nil
}

// Backpressure from a log with a fixed capacity (the pmem log: storage
// logs that report Fill). Checkpoints keep such a log from filling as long
// as they keep up with the load; where they do not (a log small for the
// state machine's image, a slow disk), the replica slows down instead of
// failing for a full log:
//
//   - from fillCheckpoint on, a checkpoint is taken as soon as an eighth of
//     Checkpoints.Bytes was applied since the last one, not a whole Bytes
//     (a log that checkpoints every third of its capacity and compacts
//     below the older of two checkpoints is at most about two thirds full
//     in steady state: the threshold is above that);
//   - from fillThrottle on, a leader takes no new commands (they queue,
//     then get ErrBusy), so the cluster writes no more than it compacts; a
//     checkpoint is taken as soon as anything new was applied, and the log
//     is compacted below the newest checkpoint instead of the older one
//     kept (so the replica can always free its log, even when nothing more
//     is applied);
//   - from fillRefuse on, a replica does not step Accepts or catch-up
//     replies with entries: it casts no vote and learns no value it might
//     not be able to persist (not voting is safe, and the leader resends);
//     heartbeats still bring the commit index, so it applies what it holds,
//     checkpoints and compacts, and votes again (or, if it fell behind its
//     peers' logs meanwhile, receives a checkpoint).
//
// Each is counted and logged at a rate limit. A log that fills all the same
// fails the replica, with a cause that names the log.
const (
	fillCheckpoint = 0.75
	fillThrottle   = 0.85
	fillRefuse     = 0.95
)

// filler is a log with a fixed capacity; Fill is safe from any goroutine.
type filler interface {
	Fill() (used, capacity int64)
}

// logFill is the fraction of the log's capacity in use; 0 for a log
// without a fixed capacity, or without checkpoints.
func (r *Replica) logFill() float64 {
	f, ok := r.store.(filler)
	if !ok || r.cfg.Checkpoints.Dir == "" {
		// Without checkpoints nothing frees the log: slowing down would
		// only hide that it fills, and it fails with a named cause instead.
		return 0
	}
	used, capacity := f.Fill()
	if capacity <= 0 {
		return 0
	}
	return float64(used) / float64(capacity)
}

// throttled reports whether a leader must take no new commands because its
// log is nearly full; it says so once a second at most.
func (r *Replica) throttled() bool {
	fill := r.logFill()
	if fill < fillThrottle {
		r.m.logThrottled.Set(0)
		return false
	}
	r.m.logThrottled.Set(1)
	if n, ok := r.fullLog.Allow(time.Now()); ok {
		r.log.Warn("log nearly full: taking no new commands until a checkpoint frees space (checkpoints do not keep up: a larger log or -checkpoint-bytes helps)",
			"fill", fmt.Sprintf("%.0f%%", 100*fill), "suppressed", n)
	}
	return true
}

// refusesVotes reports whether an Accept or a catch-up reply with entries
// must not be stepped: the log is too full to be sure its entries can be
// persisted. A replica that falls behind this way catches up from a
// checkpoint once its peers' logs moved past it.
func (r *Replica) refusesVotes(m wire.Message) bool {
	if (m.Type != wire.MsgAccept && m.Type != wire.MsgCatchUp) || len(m.Entries) == 0 || r.logFill() < fillRefuse {
		return false
	}
	r.m.acceptsRefusedFull.Inc()
	if n, ok := r.fullLog.Allow(time.Now()); ok {
		r.log.Warn("log nearly full: not voting until a checkpoint frees space", "from", m.From, "suppressed", n)
	}
	return true
}

// ErrNoCheckpoints is returned by Checkpoint on a replica configured
// without a checkpoint directory.
var ErrNoCheckpoints = errors.New("vesta: checkpoints are off (Config.Checkpoints.Dir is empty)")

// checkpointWaiter is a Checkpoint call waiting for a checkpoint that
// covers at least slot.
type checkpointWaiter struct {
	slot wire.Slot
	done chan checkpointResult
}

// Checkpoint takes a checkpoint now, of everything applied when it is
// called, and returns its slot once it is durable (and the log compacted
// below the checkpoints kept). With nothing applied since the newest
// checkpoint, it returns that one's slot at once. Operators use it before
// maintenance (vestactl checkpoint); the replica takes checkpoints on its
// own as Config.Checkpoints.Bytes says.
func (r *Replica) Checkpoint(ctx context.Context) (wire.Slot, error) {
	if r.cfg.Checkpoints.Dir == "" {
		return 0, ErrNoCheckpoints
	}
	applied := wire.Slot(r.applier.applied.Load())
	if applied <= wire.Slot(r.newestCheckpoint.Load()) {
		return wire.Slot(r.newestCheckpoint.Load()), nil
	}
	w := &checkpointWaiter{slot: applied, done: make(chan checkpointResult, 1)}
	r.waitMu.Lock()
	r.waiters = append(r.waiters, w)
	r.waitMu.Unlock()
	r.applier.forced.Store(true)
	r.applier.poke()
	select {
	case res := <-w.done:
		return res.info.Meta.Slot, res.err
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-r.done:
		return 0, r.stoppedErr()
	}
}

// completeWaiters hands a checkpoint's outcome to the Checkpoint calls it
// satisfies; those that need a later one ask the applier for it. Core loop
// only, after the checkpoint is durable.
func (r *Replica) completeWaiters(res checkpointResult) {
	r.waitMu.Lock()
	defer r.waitMu.Unlock()
	keep := r.waiters[:0]
	for _, w := range r.waiters {
		if res.err != nil || res.info.Meta.Slot >= w.slot {
			w.done <- res
		} else {
			keep = append(keep, w)
		}
	}
	clear(r.waiters[len(keep):])
	r.waiters = keep
	if len(keep) > 0 {
		r.applier.forced.Store(true)
		r.applier.poke()
	}
}

// checkpointPhase staggers the replicas' checkpoints: replica i of n (in ID
// order) takes its first one i/n of Checkpoints.Bytes later than the first,
// and so each one after, since all apply the same values. A checkpoint costs
// its replica tens of ms of CPU; taken by all at the same slot, as they
// were, they slowed the whole cluster at once (a quorum needs only one
// follower that is not busy).
func checkpointPhase(cfg *Config) int64 {
	members := slices.Clone(cfg.Members)
	slices.Sort(members)
	i := max(slices.Index(members, cfg.ID), 0) // a replica that joined is not among them
	return cfg.Checkpoints.Bytes / int64(len(members)) * int64(i)
}
