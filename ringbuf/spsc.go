package ringbuf

import "sync/atomic"

// SPSC is a bounded ring for exactly one producer goroutine and one
// consumer goroutine at a time.
//
// Concurrency contract: TryPush and PushBatch are called by the producer
// only, PopBatch, Wait, Arm, C and Disarm by the consumer only; the two may
// run concurrently with each other. Len and Cap are safe from any
// goroutine. "One producer" means no two pushes overlap: the role may pass
// between goroutines if the hand-over itself synchronizes (a mutex, a
// channel). Contracts builds panic when two goroutines overlap in one role.
//
// Each side owns one index on its own cache line and keeps a cached copy of
// the other side's index, so in steady state a push or pop writes only its
// own line plus the slots, and reads the other index only when the cached
// copy says the ring is full (producer) or short of items (consumer).
type SPSC[T any] struct {
	buf  []T
	mask uint64
	w    waiter

	// Consumer's line.
	head       atomic.Uint64 // next position to pop; written by the consumer
	tailCached uint64        // the consumer's last view of tail
	cons       solo
	_          pad

	// Producer's line.
	tail       atomic.Uint64 // next position to push; written by the producer
	headCached uint64        // the producer's last view of head
	prod       solo
	_          pad
}

// NewSPSC returns an empty ring holding up to capacity items, rounded up to
// a power of two. It panics if capacity is not in [1, 1<<30].
func NewSPSC[T any](capacity int) *SPSC[T] {
	c := roundCapacity(capacity)
	q := &SPSC[T]{buf: make([]T, c), mask: uint64(c - 1)}
	q.w.init()
	return q
}

// Cap returns the ring's capacity.
func (q *SPSC[T]) Cap() int { return len(q.buf) }

// Len returns the number of items in the ring. From a goroutine other than
// the two ends it is a snapshot that may be stale by the time it returns.
func (q *SPSC[T]) Len() int {
	h := q.head.Load()
	t := q.tail.Load() // loaded after head, so t >= h
	return int(min(t-h, uint64(len(q.buf))))
}

// TryPush appends v and reports true, or reports false if the ring is full.
// Producer only.
func (q *SPSC[T]) TryPush(v T) bool {
	q.prod.enter("SPSC producer")
	t := q.tail.Load()
	if t-q.headCached == uint64(len(q.buf)) {
		q.headCached = q.head.Load()
		if t-q.headCached == uint64(len(q.buf)) {
			q.prod.exit()
			return false
		}
	}
	q.buf[t&q.mask] = v
	q.tail.Store(t + 1) // publishes the slot
	q.prod.exit()
	q.w.notify()
	return true
}

// PushBatch appends as many leading items of vs as fit, in order, and
// returns how many. Producer only. The ring copies the items; vs stays the
// caller's.
func (q *SPSC[T]) PushBatch(vs []T) int {
	if len(vs) == 0 {
		return 0
	}
	q.prod.enter("SPSC producer")
	t := q.tail.Load()
	size := uint64(len(q.buf))
	free := size - (t - q.headCached)
	if free < uint64(len(vs)) {
		q.headCached = q.head.Load()
		free = size - (t - q.headCached)
	}
	n := int(min(free, uint64(len(vs))))
	if n == 0 {
		q.prod.exit()
		return 0
	}
	i := int(t & q.mask)
	c := copy(q.buf[i:], vs[:n])
	copy(q.buf, vs[c:n])
	q.tail.Store(t + uint64(n))
	q.prod.exit()
	q.w.notify()
	return n
}

// PopBatch moves up to len(dst) items, oldest first, into dst and returns
// how many; 0 means the ring was empty. Consumer only.
func (q *SPSC[T]) PopBatch(dst []T) int {
	if len(dst) == 0 {
		return 0
	}
	q.cons.enter("SPSC consumer")
	h := q.head.Load()
	avail := q.tailCached - h
	if avail < uint64(len(dst)) {
		q.tailCached = q.tail.Load()
		avail = q.tailCached - h
	}
	n := int(min(avail, uint64(len(dst))))
	if n == 0 {
		q.cons.exit()
		return 0
	}
	i := int(h & q.mask)
	c := copy(dst[:n], q.buf[i:])
	copy(dst[c:n], q.buf)
	clear(q.buf[i : i+c]) // drop references for the collector
	clear(q.buf[:n-c])
	q.head.Store(h + uint64(n)) // hands the slots back to the producer
	q.cons.exit()
	return n
}

func (q *SPSC[T]) empty() bool { return q.tail.Load() == q.head.Load() }

// Wait blocks the consumer until the ring is non-empty or stop is closed,
// and reports whether the ring is non-empty. A nil stop waits for an item
// only. It returns at once if the ring is non-empty. Consumer only.
func (q *SPSC[T]) Wait(stop <-chan struct{}) bool { return q.w.wait(q, stop) }

// Arm is Wait taken apart, for a consumer that sleeps in a select with other
// channels. Arm reports true if the ring is empty and the consumer is now
// registered as sleeping: it may block on C(). It reports false if the ring
// holds items (nothing to undo; drain it). After any wakeup, from C() or
// another case of the select, the consumer calls Disarm and drains the
// ring; a wakeup from C() may be spurious (the ring may be empty).
// Consumer only.
func (q *SPSC[T]) Arm() bool { return q.w.armIfEmpty(q) }

// C returns the channel a consumer that Armed blocks on.
func (q *SPSC[T]) C() <-chan struct{} { return q.w.ch }

// Disarm ends a sleep that Arm started. Consumer only.
func (q *SPSC[T]) Disarm() { q.w.disarm() }
