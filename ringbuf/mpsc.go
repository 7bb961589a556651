package ringbuf

import "sync/atomic"

// slot is one cell of an mpsc ring. For the slot at index i, seq moves
// through, lap by lap (pos = a position with pos&mask == i, cap = capacity):
//
//	pos        free: the producer that claims position pos may write it
//	pos+1      full: holds the item of position pos, the consumer may read it
//	pos+cap    free again, for position pos+cap (set by the consumer)
//
// So a producer at position pos sees seq == pos (its turn), seq < pos (the
// item of pos-cap is still unread: the ring is full) or seq > pos (another
// producer took pos already). seq is the only synchronization for val.
type slot[T any] struct {
	seq atomic.Uint64
	val T
}

// mpsc is the bounded multi-producer single-consumer ring under MPSC and
// Sharded (which share one waiter across rings, so the ring has none).
type mpsc[T any] struct {
	slots []slot[T]
	mask  uint64
	_     pad
	tail  atomic.Uint64 // next position to claim; CAS by producers
	_     pad
	head  atomic.Uint64 // next position to pop; stored by the consumer only
	cons  solo
	_     pad
}

func (q *mpsc[T]) init(capacity int) {
	// At least 2: with one slot, "full for position p" (seq p+1) and "free
	// for position p+1" (seq p+1) would be the same state.
	c := max(roundCapacity(capacity), 2)
	q.slots = make([]slot[T], c)
	q.mask = uint64(c - 1)
	for i := range q.slots {
		q.slots[i].seq.Store(uint64(i))
	}
}

// turn compares the seq of position p's slot with p: 0 free for p, -1 still
// holding the item of p-cap (full), +1 already claimed past p.
func (q *mpsc[T]) turn(p uint64) int {
	d := int64(q.slots[p&q.mask].seq.Load() - p)
	switch {
	case d == 0:
		return 0
	case d < 0:
		return -1
	default:
		return 1
	}
}

func (q *mpsc[T]) tryPush(v T) bool {
	pos := q.tail.Load()
	for {
		switch q.turn(pos) {
		case 0:
			if q.tail.CompareAndSwap(pos, pos+1) {
				s := &q.slots[pos&q.mask]
				s.val = v
				s.seq.Store(pos + 1) // publishes val
				return true
			}
		case -1:
			// The slot still holds the item of pos-cap: at the moment of the
			// load, head <= pos-cap and tail >= pos, so the ring was full.
			return false
		}
		pos = q.tail.Load() // another producer claimed pos: catch up
	}
}

// room returns the largest k in [1, want] such that the slot of position
// pos+k-1 is free for that position, 0 if the ring is full, or stale if pos
// is behind the tail.
//
// Why one slot stands for all below it: the consumer frees slots in
// position order, so if the slot of pos+k-1 was freed for its position (the
// item of pos+k-1-cap was read), every position in [pos, pos+k-1] was freed
// too, and none of them was claimed by another producer as long as tail is
// still pos, which the caller's CAS checks. The slot seq read here
// synchronizes with the consumer's store, so it orders the consumer's reads
// of all those slots before our writes. Free-ness is monotone in k and only
// grows over time (until the tail moves), which makes the binary search
// sound.
func (q *mpsc[T]) room(pos, want uint64) (k uint64, stale bool) {
	switch q.turn(pos + want - 1) {
	case 0:
		return want, false
	case 1:
		return 0, true
	}
	switch q.turn(pos) {
	case -1:
		return 0, false // full
	case 1:
		return 0, true
	}
	lo, hi := uint64(0), want-1 // turn(pos+lo) was 0, turn(pos+hi) was -1
	for hi-lo > 1 {
		mid := lo + (hi-lo)/2
		switch q.turn(pos + mid) {
		case 0:
			lo = mid
		case -1:
			hi = mid
		default:
			return 0, true
		}
	}
	return lo + 1, false
}

func (q *mpsc[T]) pushBatch(vs []T) int {
	if len(vs) == 0 {
		return 0
	}
	want := uint64(min(len(vs), len(q.slots)))
	pos := q.tail.Load()
	for {
		k, stale := q.room(pos, want)
		if !stale {
			if k == 0 {
				return 0
			}
			if q.tail.CompareAndSwap(pos, pos+k) {
				for i := range k {
					s := &q.slots[(pos+i)&q.mask]
					s.val = vs[i]
					s.seq.Store(pos + i + 1)
				}
				return int(k)
			}
		}
		pos = q.tail.Load()
	}
}

func (q *mpsc[T]) popBatch(dst []T) int {
	q.cons.enter("ring consumer")
	h := q.head.Load()
	size := uint64(len(q.slots))
	n := 0
	var zero T
	for n < len(dst) {
		s := &q.slots[h&q.mask]
		if s.seq.Load() != h+1 {
			break // empty, or the producer of h has claimed but not yet published
		}
		dst[n] = s.val
		s.val = zero
		s.seq.Store(h + size) // frees the slot for position h+size
		h++
		n++
	}
	if n > 0 {
		q.head.Store(h)
	}
	q.cons.exit()
	return n
}

func (q *mpsc[T]) empty() bool {
	h := q.head.Load()
	return q.slots[h&q.mask].seq.Load() != h+1
}

func (q *mpsc[T]) len() int {
	h := q.head.Load()
	t := q.tail.Load() // loaded after head, so t >= h
	return int(min(t-h, uint64(len(q.slots))))
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
// out in the order it pushed them, and a batch stays contiguous.
//
// Progress: producers are lock-free (a failed CAS means another producer
// succeeded). The consumer reads positions in order, so a producer that has
// claimed a position but not yet written it (preempted between its CAS and
// its store, a few instructions) holds back the items behind it until it
// resumes; the consumer sees the ring as empty meanwhile and is woken by
// that producer's publication. Nothing is lost or reordered.
//
// Slots are 8 bytes plus the element; neighbouring slots share cache lines,
// which costs some transfers between producers writing adjacent slots. The
// engine pushes pointers, where a slot is 16 bytes.
type MPSC[T any] struct {
	q mpsc[T]
	w waiter
}

// NewMPSC returns an empty ring holding up to capacity items, rounded up to
// a power of two, and at least 2 (see slot). It panics if capacity is not in [1, 1<<30].
func NewMPSC[T any](capacity int) *MPSC[T] {
	m := &MPSC[T]{}
	m.q.init(capacity)
	m.w.init()
	return m
}

// Cap returns the ring's capacity.
func (m *MPSC[T]) Cap() int { return len(m.q.slots) }

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
