package engine

import (
	"context"
	"errors"
	"sync"

	"github.com/vestalabs/vesta/engine/paxos"
	"github.com/vestalabs/vesta/engine/wire"
)

// Reader is the read entry point of a state machine: reads that skip the
// log (Replica.Read) call it. The applier goroutine calls Read between two
// Apply calls, never during one, so a state machine needs no locking for it;
// it must not change the state. The result is the caller's.
type Reader interface {
	Read(query []byte) ([]byte, error)
}

// ErrReadsUnsupported is Replica.Read's error when the state machine does
// not implement Reader: propose the query through the log instead.
var ErrReadsUnsupported = errors.New("vesta: the state machine has no Read method (engine.Reader); propose reads through the log")

// ReadMode says how a read that skips the log is kept consistent.
type ReadMode uint8

const (
	// ReadIndex is linearizable: the leader takes its commit index, confirms
	// with one round to a quorum (shared by every read waiting) that it
	// still leads, waits until it has applied that far, and reads locally.
	// No log append, no clock assumption. Leader only.
	ReadIndex ReadMode = iota + 1
	// ReadLease is linearizable while clocks drift within
	// Config.MaxClockDriftPercent: a leader that holds its lease reads at
	// its commit index with no round at all; one that holds none runs a
	// read-index round. Leader only.
	ReadLease
)

func (m ReadMode) String() string {
	switch m {
	case ReadIndex:
		return "read-index"
	case ReadLease:
		return "lease"
	}
	return "read-mode?"
}

// readCall is one Read waiting for its index, then for the applier.
type readCall struct {
	mode   ReadMode
	query  []byte
	index  wire.Slot
	done   chan struct{}       // Read's
	cb     func([]byte, error) // ReadAsync's
	result []byte
	err    error
	// ReadAt's: answer at once even below index (stale), and what it got.
	stale    bool
	applied  wire.Slot
	wasStale bool
	gone     <-chan struct{} // ReadAt's context: a call given up leaves the wait list
}

func (c *readCall) complete(result []byte, err error) {
	if c.cb != nil {
		c.cb(result, err)
		return
	}
	c.result, c.err = result, err
	close(c.done)
}

// reads is the replica's read path. Read appends to queue; the core loop
// takes the queue, asks the protocol for read indexes (paxos
// Node.ReadIndex) and keeps the calls by read ID until their Ready.Reads or
// ReadsFailed; confirmed reads go to the applier, which serves them once it
// has applied their index.
type reads struct {
	mu     sync.Mutex
	queue  []*readCall
	closed bool

	// Core loop only.
	nextID  uint64
	waiting map[uint64]*readCall
}

// Read answers query from the state machine's Read without going through
// the log, with the consistency mode gives. It fails with a
// *NotLeaderError on a replica that does not lead (or stops leading before
// the read is confirmed: retry at the leader), ErrReadsUnsupported, ErrBusy,
// ErrStopped, the context's error, or the state machine's error.
func (r *Replica) Read(ctx context.Context, query []byte, mode ReadMode) ([]byte, error) {
	c := &readCall{query: query, done: make(chan struct{})}
	if err := r.submitRead(c, mode); err != nil {
		return nil, err
	}
	select {
	case <-c.done:
		return c.result, c.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// ReadAsync is Read without waiting: done is called exactly once with the
// result or the error, from an engine goroutine (or, for an error found at
// once, from the caller's), and must not block. query must not change until
// done is called.
func (r *Replica) ReadAsync(query []byte, mode ReadMode, done func(result []byte, err error)) {
	c := &readCall{query: query, cb: done}
	if err := r.submitRead(c, mode); err != nil {
		done(nil, err)
	}
}

func (r *Replica) submitRead(c *readCall, mode ReadMode) error {
	if _, ok := r.sm.(Reader); !ok {
		return ErrReadsUnsupported
	}
	if mode != ReadIndex && mode != ReadLease {
		return &ConfigError{"ReadMode", "unknown read mode " + mode.String()}
	}
	c.mode = mode
	rs := &r.reads
	rs.mu.Lock()
	switch {
	case rs.closed:
		rs.mu.Unlock()
		return r.stoppedErr()
	case len(rs.queue) >= r.cfg.MaxQueued:
		rs.mu.Unlock()
		return ErrBusy
	}
	rs.queue = append(rs.queue, c)
	first := len(rs.queue) == 1
	rs.mu.Unlock()
	if first {
		r.wakeCore()
	}
	return nil
}

// takeReads asks the protocol for an index for every read queued. Core
// loop only.
func (r *Replica) takeReads() {
	rs := &r.reads
	rs.mu.Lock()
	q := rs.queue
	rs.queue = nil
	rs.mu.Unlock()
	for _, c := range q {
		rs.nextID++
		ask := r.node.ReadIndex
		if c.mode == ReadLease {
			ask = r.node.LeaseRead
		}
		if !ask(rs.nextID) {
			c.complete(nil, &NotLeaderError{Leader: r.node.Status().Leader})
			continue
		}
		if rs.waiting == nil {
			rs.waiting = map[uint64]*readCall{}
		}
		rs.waiting[rs.nextID] = c
	}
	if len(q) > 0 {
		r.m.reads.Add(float64(len(q)))
	}
}

// readsReady hands confirmed reads to the applier and fails the others.
// Core loop only.
func (r *Replica) readsReady(confirmed []paxos.ReadState, failed []uint64) {
	rs := &r.reads
	var batch []*readCall
	for _, s := range confirmed {
		if c := rs.waiting[s.ID]; c != nil {
			delete(rs.waiting, s.ID)
			c.index = s.Index
			batch = append(batch, c)
		}
	}
	if len(batch) > 0 {
		r.applier.enqueueReads(batch)
	}
	if len(failed) == 0 {
		return
	}
	leader := r.node.Status().Leader
	for _, id := range failed {
		if c := rs.waiting[id]; c != nil {
			delete(rs.waiting, id)
			c.complete(nil, &NotLeaderError{Leader: leader})
		}
	}
}

// failReads fails every read not yet served, when the replica stops.
func (r *Replica) failReads(err error) {
	rs := &r.reads
	rs.mu.Lock()
	q := rs.queue
	rs.queue, rs.closed = nil, true
	rs.mu.Unlock()
	for _, c := range q {
		c.complete(nil, err)
	}
	for id, c := range rs.waiting {
		delete(rs.waiting, id)
		c.complete(nil, err)
	}
}

// serveReads runs the reads whose index is applied; the rest wait for
// later applies. Applier goroutine only.
func (a *applier) serveReads() {
	if len(a.readsWait) == 0 {
		return
	}
	applied := wire.Slot(a.applied.Load())
	rd := a.r.sm.(Reader)
	k := 0
	for _, c := range a.readsWait {
		if c.index > applied && !c.stale {
			select {
			case <-c.gone: // its caller gave up: it waits no more
				c.complete(nil, context.Canceled)
			default:
				a.readsWait[k] = c
				k++
			}
			continue
		}
		c.applied, c.wasStale = applied, c.index > applied
		res, err := rd.Read(c.query)
		c.complete(res, err)
	}
	clear(a.readsWait[k:])
	a.readsWait = a.readsWait[:k]
}

// enqueueReads queues confirmed reads behind the applies handed out so far.
func (a *applier) enqueueReads(batch []*readCall) {
	a.mu.Lock()
	a.queue = append(a.queue, applyWork{reads: batch})
	a.mu.Unlock()
	a.poke()
}

// ReadAt answers query from this replica's state machine, leader or not,
// once it has applied every slot below minSlot (RSL's bounded-staleness
// read): a caller that passes the applied slot of its last answer (the
// returned applied, or its own writes' slots) never reads older state than
// it saw. With allowStale it does not wait: it answers at once, and stale
// says whether this replica had not applied minSlot yet. The read is served
// by the applier between applies, without the protocol; it fails with
// ErrReadsUnsupported, ErrStopped or the context's error.
func (r *Replica) ReadAt(ctx context.Context, query []byte, minSlot wire.Slot, allowStale bool) (result []byte, applied wire.Slot, stale bool, err error) {
	if _, ok := r.sm.(Reader); !ok {
		return nil, 0, false, ErrReadsUnsupported
	}
	c := &readCall{query: query, index: minSlot, done: make(chan struct{}), stale: allowStale, gone: ctx.Done()}
	rs := &r.reads
	rs.mu.Lock()
	closed := rs.closed
	rs.mu.Unlock()
	if closed {
		return nil, 0, false, r.stoppedErr()
	}
	r.applier.enqueueReads([]*readCall{c})
	select {
	case <-c.done:
		return c.result, c.applied, c.wasStale, c.err
	case <-r.done: // stopped before the applier took it
		return nil, 0, false, r.stoppedErr()
	case <-ctx.Done():
		return nil, 0, false, ctx.Err()
	}
}
