package engine

import (
	"sync"
	"sync/atomic"

	"github.com/vestalabs/vesta/engine/wire"
)

// applier applies chosen entries to the state machine in slot order and
// completes the callers of batches this replica proposed.
type applier struct {
	r     *Replica
	mu    sync.Mutex
	queue [][]wire.Entry
	busy  bool // someone (the applier or the core loop) is applying now
	// inline scratch, used by the core loop only while it holds busy
	icmds, iresults [][]byte
	signal          chan struct{}
	quit            chan struct{}
	done            chan struct{}
	applied         atomic.Uint64 // every slot below is applied
}

func newApplier(r *Replica) *applier {
	return &applier{r: r, signal: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{})}
}

// inlineLimit is the most entries the core loop applies itself when the
// applier is idle: a few, so an idle cluster answers without waking another
// goroutine, while a loaded one keeps applying off the core loop.
const inlineLimit = 4

// enqueue hands chosen entries over; called by the core loop, in slot order.
// When the applier is idle and nothing waits, a small batch is applied right
// here instead: one goroutine wake-up less on every request's path. Applies
// never run concurrently (busy), so the state machine sees one at a time.
func (a *applier) enqueue(entries []wire.Entry) {
	a.mu.Lock()
	if !a.busy && len(a.queue) == 0 && len(entries) <= inlineLimit {
		a.busy = true
		a.mu.Unlock()
		for _, e := range entries {
			a.icmds, a.iresults = a.apply(e, a.icmds, a.iresults)
		}
		a.mu.Lock()
		a.busy = false
		wake := len(a.queue) > 0
		a.mu.Unlock()
		if wake {
			a.poke()
		}
		return
	}
	a.queue = append(a.queue, entries)
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
	var work [][]wire.Entry
	var cmds, results [][]byte
	for {
		select {
		case <-a.quit:
			return
		case <-a.signal:
		}
		a.mu.Lock()
		if a.busy {
			// The core loop is applying inline; it pokes again when done.
			a.mu.Unlock()
			continue
		}
		work, a.queue = a.queue, work[:0]
		a.busy = len(work) > 0
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
		}
		clear(work)
		a.mu.Lock()
		a.busy = false
		more := len(a.queue) > 0
		a.mu.Unlock()
		if more {
			a.poke()
		}
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
	a.r.sm.Apply(cmds, results)
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
