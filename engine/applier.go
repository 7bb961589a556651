package engine

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/vestalabs/vesta/engine/wire"
)

// applier applies chosen entries to the state machine in slot order and
// completes the callers of batches this replica proposed.
type applier struct {
	r       *Replica
	mu      sync.Mutex
	queue   [][]wire.Entry
	signal  chan struct{}
	quit    chan struct{}
	done    chan struct{}
	applied atomic.Uint64 // every slot below is applied
	// backlog counts the entries handed over and not yet applied; the
	// core loop stops taking new commands while it is at the limit.
	backlog atomic.Int64
}

func newApplier(r *Replica) *applier {
	return &applier{r: r, signal: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{})}
}

// enqueue hands chosen entries over; called by the core loop, in slot order.
// The core loop never applies itself: a slow Apply must not hold up its
// ticks, heartbeats and votes (a 1.5 s Apply on the core loop used to let
// the others elect a new leader while this one still thought it led).
func (a *applier) enqueue(entries []wire.Entry) {
	a.mu.Lock()
	a.queue = append(a.queue, entries)
	a.mu.Unlock()
	a.backlog.Add(int64(len(entries)))
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
	var work [][]wire.Entry
	var cmds, results [][]byte
	for {
		select {
		case <-a.quit:
			return
		case <-a.signal:
		}
		a.mu.Lock()
		work, a.queue = a.queue, work[:0]
		a.mu.Unlock()
		for _, entries := range work {
			for _, e := range entries {
				select {
				case <-a.quit:
					return
				default:
				}
				cmds, results = a.apply(e, cmds, results)
			}
			k, limit := int64(len(entries)), int64(a.r.cfg.MaxApplyBacklog)
			if left := a.backlog.Add(-k); left < limit && left+k >= limit {
				a.r.wakeCore() // below the limit again: the core loop takes commands
			}
		}
		clear(work) // enqueue's poke is buffered: work queued meanwhile is seen next
	}
}

func (a *applier) apply(e wire.Entry, cmds, results [][]byte) ([][]byte, [][]byte) {
	defer a.applied.Store(uint64(e.Slot) + 1)
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
	a.r.sm.Apply(cmds, results)
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
