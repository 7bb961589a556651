package engine

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/vestalabs/vesta/engine/checkpoint"
	"github.com/vestalabs/vesta/engine/wire"
)

// applier applies chosen entries to the state machine in slot order and
// completes the callers of batches this replica proposed. It also owns the
// state machine's checkpoints (checkpoints.go): it takes them between
// applies, and restores one received from a peer in its place in the
// queue.
type applier struct {
	r       *Replica
	mu      sync.Mutex
	queue   []applyWork
	signal  chan struct{}
	quit    chan struct{}
	done    chan struct{}
	applied atomic.Uint64 // every slot below is applied
	// backlog counts the entries handed over and not yet applied; the
	// core loop stops taking new commands while it is at the limit.
	backlog atomic.Int64
	// Checkpoints, applier goroutine only: the value bytes applied since
	// the last checkpoint, and whether one is being written.
	sinceCheckpoint int64
	// firstCheckpointLate delays this replica's first checkpoint by that
	// many bytes (checkpointPhase), so replicas take theirs at different
	// moments; cleared by the first.
	firstCheckpointLate int64
	// lastCheckpoint is when the last checkpoint was started (or the
	// applier started), for Checkpoints.Interval.
	lastCheckpoint time.Time
	writing        atomic.Bool
	// readsWait holds confirmed reads whose index is not applied yet.
	readsWait []*readCall
	forced    atomic.Bool // a Checkpoint call wants one now
	// members follows the configuration as changes are applied.
	members membershipTracker
}

// applyWork is one item of the applier's queue: chosen entries to apply,
// or a checkpoint to restore the state machine from (state transfer).
type applyWork struct {
	entries []wire.Entry
	restore *checkpoint.Info
	reads   []*readCall // confirmed reads, served once their index is applied
}

func newApplier(r *Replica) *applier {
	return &applier{r: r, signal: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{}), lastCheckpoint: time.Now()}
}

// enqueue hands chosen entries over; called by the core loop, in slot order.
// The core loop never applies itself: a slow Apply must not hold up its
// ticks, heartbeats and votes (a 1.5 s Apply on the core loop used to let
// the others elect a new leader while this one still thought it led).
func (a *applier) enqueue(entries []wire.Entry) {
	a.mu.Lock()
	a.queue = append(a.queue, applyWork{entries: entries})
	a.mu.Unlock()
	a.backlog.Add(int64(len(entries)))
	a.poke()
}

// enqueueRestore queues a restore of the state machine from a durable
// checkpoint, after every entry queued so far (the checkpoint's image holds
// their effects already; applying them first is harmless) and before any
// queued later, which continue from the checkpoint's slot.
func (a *applier) enqueueRestore(info checkpoint.Info) {
	a.mu.Lock()
	a.queue = append(a.queue, applyWork{restore: &info})
	a.mu.Unlock()
	a.poke()
}

func (a *applier) poke() {
	select {
	case a.signal <- struct{}{}:
	default:
	}
}

func (a *applier) run() {
	defer close(a.done)
	var work []applyWork
	var cmds, results [][]byte
	for {
		select {
		case <-a.quit:
			return
		case <-a.signal:
		}
		a.maybeCheckpoint() // a Checkpoint call may have woken it with nothing to apply
		a.mu.Lock()
		work, a.queue = a.queue, work[:0]
		a.mu.Unlock()
		for _, w := range work {
			if w.reads != nil {
				a.readsWait = append(a.readsWait, w.reads...)
				a.serveReads()
				continue
			}
			if w.restore != nil {
				if err := a.restore(*w.restore); err != nil {
					a.r.fail(err)
					return
				}
				continue
			}
			entries := w.entries
			for _, e := range entries {
				select {
				case <-a.quit:
					return
				default:
				}
				cmds, results = a.apply(e, cmds, results)
			}
			a.serveReads()
			k, limit := int64(len(entries)), int64(a.r.cfg.MaxApplyBacklog)
			if left := a.backlog.Add(-k); left < limit && left+k >= limit {
				a.r.wakeCore() // below the limit again: the core loop takes commands
			}
			a.maybeCheckpoint()
		}
		clear(work) // enqueue's poke is buffered: work queued meanwhile is seen next
	}
}

func (a *applier) apply(e wire.Entry, cmds, results [][]byte) ([][]byte, [][]byte) {
	defer a.applied.Store(uint64(e.Slot) + 1)
	a.sinceCheckpoint += int64(len(e.Value.Data))
	if e.Value.Kind == wire.ValueConfig {
		m, err := a.members.apply(e.Slot, e.Value)
		if err != nil {
			a.r.log.Error("skipping a malformed membership change", "slot", e.Slot, "err", err)
			return cmds, results
		}
		a.r.log.Info("membership changed", "slot", uint64(e.Slot), "membership", m.String())
		if obs, ok := a.r.sm.(MembershipObserver); ok {
			obs.MembershipChanged(e.Slot, m)
		}
		return cmds, results
	}
	if e.Value.Kind != wire.ValueBatch {
		return cmds, results
	}
	h, cmds, err := decodeBatch(e.Value.Data, cmds)
	if err != nil {
		// Every replica holds the same chosen bytes, so every replica skips
		// it alike; say so loudly, since only a foreign proposer makes one.
		a.r.log.Error("skipping a malformed chosen batch", "slot", e.Slot, "err", err)
		return cmds, results
	}
	if cap(results) < len(cmds) {
		results = make([][]byte, len(cmds))
	}
	results = results[:len(cmds)]
	start := time.Now()
	a.r.sm.Apply(e.Slot, cmds, results)
	if d := time.Since(start); d > a.r.cfg.TickInterval*time.Duration(a.r.cfg.HeartbeatTicks) {
		a.r.slowApply(e.Slot, len(cmds), d)
	}
	a.r.m.applied.Add(float64(len(cmds)))
	a.r.m.appliedIndex.Set(float64(e.Slot + 1))
	a.r.completeBatch(h, results)
	clear(results) // the callers own them now
	return cmds, results
}

func (a *applier) stop() error {
	close(a.quit)
	<-a.done
	return nil
}
