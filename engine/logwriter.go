package engine

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/vestalabs/vesta/engine/paxos"
	"github.com/vestalabs/vesta/engine/wire"
)

// logWriter makes Readys durable with group commit: it appends every Ready
// queued while the previous sync ran, syncs once, then sends their
// SendAfterPersist messages and tells the core loop how many are durable.
type logWriter struct {
	r      *Replica
	mu     sync.Mutex
	queue  []*paxos.Ready
	signal chan struct{}
	quit   chan struct{}
	done   chan struct{}
	// compactBelow, if not zero, asks the writer to compact the log below
	// it (set by the core loop; the writer owns the log).
	compactBelow atomic.Uint64
}

// compact asks the writer to compact the log below slot, between syncs.
func (w *logWriter) compact(below wire.Slot) {
	w.compactBelow.Store(uint64(below))
	select {
	case w.signal <- struct{}{}:
	default:
	}
}

func newLogWriter(r *Replica) *logWriter {
	return &logWriter{r: r, signal: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{})}
}

// enqueue hands a Ready over; called by the core loop, in Ready order.
func (w *logWriter) enqueue(rd *paxos.Ready) {
	w.mu.Lock()
	w.queue = append(w.queue, rd)
	w.mu.Unlock()
	select {
	case w.signal <- struct{}{}:
	default:
	}
}

func (w *logWriter) run() {
	defer close(w.done)
	var batch []*paxos.Ready
	for {
		select {
		case <-w.quit:
			return
		case <-w.signal:
		}
		w.mu.Lock()
		batch, w.queue = w.queue, batch[:0]
		w.mu.Unlock()
		if below := w.compactBelow.Swap(0); below != 0 {
			w.r.doCompactLog(wire.Slot(below))
		}
		if len(batch) == 0 {
			continue
		}
		if err := w.persist(batch); err != nil {
			w.r.fail(err)
			return
		}
		for _, rd := range batch {
			if len(rd.SendAfterPersist) > 0 {
				w.r.tr.Send(rd.SendAfterPersist)
			}
		}
		w.r.durable.Add(int64(len(batch)))
		select {
		case w.r.durableSignal <- struct{}{}:
		default:
		}
		clear(batch)
	}
}

// persist appends the Readys' records in order and syncs once.
func (w *logWriter) persist(batch []*paxos.Ready) error {
	start := time.Now()
	dirty := false
	for _, rd := range batch {
		if len(rd.Entries) == 0 && !rd.SaveHardState {
			continue
		}
		if err := w.r.store.Append(rd.Entries, rd.HardState, rd.SaveHardState); err != nil {
			return err
		}
		dirty = true
	}
	if !dirty {
		return nil
	}
	if err := w.r.store.Sync(); err != nil {
		return err
	}
	w.r.m.syncSeconds.Observe(time.Since(start).Seconds())
	w.r.m.syncReadys.Observe(float64(len(batch)))
	return nil
}

func (w *logWriter) stop() error {
	close(w.quit)
	<-w.done
	return nil
}
