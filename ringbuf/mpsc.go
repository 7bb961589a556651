package ringbuf

import "sync/atomic"

// mark publishes a claimed range of positions. For the range [pos, pos+n)
// that a producer claimed with one CAS on the tail, it writes the values,
// then n, then seq = pos+1 in the mark of position pos; the marks of the
// other positions in the range are left alone. The consumer, at a position
// h where it knows of no published range, reads the mark of h: seq == h+1
// means a range starts at h and is complete, and n says how long it is.
//
// A stale mark never passes for a fresh one: the mark at index h&mask was
// last set to p+1 for some earlier position p congruent to h, so p+1 <
// h+1. One atomic store per range rather than per item matters: on amd64
// a Go atomic store is an XCHG, a full fence of about 20 cycles, which made
// per-slot sequence numbers (Vyukov's bounded queue, the first version of
// this ring) cost 10–25 ns per item even in batches of 64.
type mark struct {
	seq atomic.Uint64
	n   uint64
}

// mpsc is the bounded multi-producer single-consumer ring under MPSC and
// Sharded (which share one waiter across rings, so the ring has none).
//
// Producers claim free space with a CAS on tail, judging free space by
// head, which the consumer stores once per PopBatch after it has read and
// cleared the values below it. So a producer that reads head = h and
// claims positions below h+cap writes only slots whose previous values the
// consumer has finished with (its head load synchronizes with the
// consumer's store).
type mpsc[T any] struct {
	buf   []T
	marks []mark
	mask  uint64
	_     pad
	tail  atomic.Uint64 // next position to claim; CAS by producers
	_     pad
	head  atomic.Uint64 // next position to pop; stored by the consumer only
	ready uint64        // consumer only: positions [head, ready) are published
	cons  solo
	_     pad
}

func (q *mpsc[T]) init(capacity int) {
	c := roundCapacity(capacity)
	q.buf = make([]T, c)
	q.marks = make([]mark, c) // seq 0 != h+1 for every h: nothing published
	q.mask = uint64(c - 1)
}

// claim reserves up to want positions (want >= 1) with one CAS and returns
// the first and how many; n == 0 means the ring was full.
func (q *mpsc[T]) claim(want uint64) (pos, n uint64) {
	size := uint64(len(q.buf))
	for {
		pos = q.tail.Load()
		used := int64(pos - q.head.Load()) // head loaded after tail
		if used < 0 {
			continue // pos is stale: the consumer has passed it meanwhile
		}
		if uint64(used) >= size {
			// At the head load, tail >= pos and head was h: the ring held at
			// least pos-h >= size items, so it was full.
			return pos, 0
		}
		n = min(want, size-uint64(used))
		if q.tail.CompareAndSwap(pos, pos+n) {
			return pos, n
		}
	}
}

// publish makes the claimed range [pos, pos+n) visible to the consumer.
func (q *mpsc[T]) publish(pos, n uint64) {
	m := &q.marks[pos&q.mask]
	m.n = n
	m.seq.Store(pos + 1)
}

func (q *mpsc[T]) tryPush(v T) bool {
	pos, n := q.claim(1)
	if n == 0 {
		return false
	}
	q.buf[pos&q.mask] = v
	q.publish(pos, 1)
	return true
}

func (q *mpsc[T]) pushBatch(vs []T) int {
	if len(vs) == 0 {
		return 0
	}
	pos, n := q.claim(uint64(len(vs)))
	if n == 0 {
		return 0
	}
	i := int(pos & q.mask)
	c := copy(q.buf[i:], vs[:n])
	copy(q.buf, vs[c:n])
	q.publish(pos, n)
	return int(n)
}

func (q *mpsc[T]) popBatch(dst []T) int {
	q.cons.enter("ring consumer")
	h := q.head.Load()
	r := q.ready
	n := 0
	for n < len(dst) {
		if h == r {
			m := &q.marks[h&q.mask]
			if m.seq.Load() != h+1 {
				break // empty, or the range at h is claimed but not yet published
			}
			r = h + m.n
		}
		k := int(min(r-h, uint64(len(dst)-n)))
		i := int(h & q.mask)
		c := copy(dst[n:n+k], q.buf[i:])
		copy(dst[n+c:n+k], q.buf)
		clear(q.buf[i : i+c]) // drop references for the collector
		clear(q.buf[:k-c])
		h += uint64(k)
		n += k
	}
	q.ready = r
	if n > 0 {
		q.head.Store(h) // hands the slots back to producers
	}
	q.cons.exit()
	return n
}

// empty is for the consumer only (it reads ready).
func (q *mpsc[T]) empty() bool {
	h := q.head.Load()
	return q.ready == h && q.marks[h&q.mask].seq.Load() != h+1
}

func (q *mpsc[T]) len() int {
	h := q.head.Load()
	t := q.tail.Load() // loaded after head, so t >= h
	return int(min(t-h, uint64(len(q.buf))))
}

// MPSC is a bounded ring for any number of producer goroutines and one
// consumer goroutine.
//
// Concurrency contract: TryPush and PushBatch are safe from any number of
// goroutines at once and never take a lock; PopBatch, Wait, Arm, C and
// Disarm are for the single consumer (contracts builds panic when two
// goroutines pop at once); Len and Cap are safe from anywhere.
//
// Order: items are popped in the order their pushes claimed positions (one
// CAS on the tail per push or per batch), so the items of one producer come
// out in the order it pushed them, and a batch stays contiguous. A push
// costs one CAS and one atomic store however many items it carries; a pop
// one atomic load per pushed batch it meets and one store.
//
// Progress: producers are lock-free (a failed CAS means another producer
// succeeded) and never wait for each other. The consumer reads positions in
// order, so a producer that has claimed positions but not yet published
// them (preempted between its CAS and its publishing store, that is during
// the copy of its items) holds back the items behind it until it resumes:
// the consumer sees no item meanwhile and is woken by that publication, and
// if the ring fills up meanwhile, pushes fail as full. Nothing is lost or
// reordered.
//
// Values sit in one array, so batches move with memmove; neighbouring
// pushes share cache lines, which costs some transfers between producers
// writing adjacent slots. Each position also has a 16-byte mark (see mark).
type MPSC[T any] struct {
	q mpsc[T]
	w waiter
}

// NewMPSC returns an empty ring holding up to capacity items, rounded up to
// a power of two. It panics if capacity is not in [1, 1<<30].
func NewMPSC[T any](capacity int) *MPSC[T] {
	m := &MPSC[T]{}
	m.q.init(capacity)
	m.w.init()
	return m
}

// Cap returns the ring's capacity.
func (m *MPSC[T]) Cap() int { return len(m.q.buf) }

// Len returns the number of items pushed or being pushed and not yet popped:
// a snapshot, stale by the time it returns when others run.
func (m *MPSC[T]) Len() int { return m.q.len() }

// TryPush appends v and reports true, or reports false if the ring is full.
// Any goroutine.
func (m *MPSC[T]) TryPush(v T) bool {
	if !m.q.tryPush(v) {
		return false
	}
	m.w.notify()
	return true
}

// PushBatch appends as many leading items of vs as fit, contiguously and in
// order, with one CAS, and returns how many. Any goroutine. The ring copies
// the items; vs stays the caller's.
func (m *MPSC[T]) PushBatch(vs []T) int {
	n := m.q.pushBatch(vs)
	if n > 0 {
		m.w.notify()
	}
	return n
}

// PopBatch moves up to len(dst) items, oldest first, into dst and returns
// how many; 0 means no item is ready. Consumer only.
func (m *MPSC[T]) PopBatch(dst []T) int { return m.q.popBatch(dst) }

func (m *MPSC[T]) empty() bool { return m.q.empty() }

// Wait blocks the consumer until an item is ready or stop is closed, and
// reports whether an item is ready. A nil stop waits for an item only.
// Consumer only.
func (m *MPSC[T]) Wait(stop <-chan struct{}) bool { return m.w.wait(m, stop) }

// Arm reports true if no item is ready and the consumer is now registered
// as sleeping (it may block on C()), false if an item is ready (nothing to
// undo). After any wakeup the consumer calls Disarm and drains; a wakeup
// from C() may be spurious. See SPSC.Arm. Consumer only.
func (m *MPSC[T]) Arm() bool { return m.w.armIfEmpty(m) }

// C returns the channel a consumer that Armed blocks on.
func (m *MPSC[T]) C() <-chan struct{} { return m.w.ch }

// Disarm ends a sleep that Arm started. Consumer only.
func (m *MPSC[T]) Disarm() { m.w.disarm() }
