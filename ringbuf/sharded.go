package ringbuf

import (
	"math/rand/v2"
	"sync/atomic"
)

// Sharded is the front end of a many-to-one submission path: N MPSC rings
// drained by one consumer, so producers running on different cores rarely
// contend on one ring's tail.
//
// Choosing a shard: TryPush and PushBatch pick a shard at random with
// math/rand/v2's top-level generator, which draws from per-thread runtime
// state: no shared word is written to choose, unlike a round-robin counter,
// which would itself be the contended cache line that sharding is meant to
// remove. Go offers no cheap core or goroutine identity to shard by. With k
// producers running at once (k <= GOMAXPROCS) on N = GOMAXPROCS shards, a
// push collides with another on the same tail with probability about
// (k-1)/N, and a collision costs one CAS retry, not a lock. If the chosen
// shard is full, the push tries the following shards in turn, so a push
// fails only if every shard was full when it looked.
//
// Order: items pushed through TryPush and PushBatch may land on different
// shards, so Sharded keeps no order between them, not even for one producer
// (a batch stays contiguous and ordered within its shard, but may be split
// across shards when its shard fills). A producer that needs its items in
// push order uses a Producer handle, which sticks to one shard.
//
// Concurrency contract: pushes (TryPush, PushBatch, and Producer methods)
// are safe from any number of goroutines; PopBatch, Wait, Arm, C and Disarm
// are for the single consumer; Len, Cap and Shards are safe from anywhere.
// One waiter covers all shards: a push to any shard wakes the consumer.
type Sharded[T any] struct {
	shards []*mpsc[T] // separately allocated, so their hot words never share lines
	w      waiter
	next   int // consumer only: the shard PopBatch starts at
	_      pad
	rr     atomic.Uint32 // Producer assignment only, not on the push path
}

// NewSharded returns shards rings of capacity items each (rounded up to a
// power of two); shards <= 0 means runtime.GOMAXPROCS(0). It panics if
// capacity is not in [1, 1<<30] or shards exceeds 1<<16.
func NewSharded[T any](shards, capacity int) *Sharded[T] {
	if shards <= 0 {
		shards = defaultShards()
	}
	if shards > 1<<16 {
		panic("ringbuf: more than 1<<16 shards")
	}
	s := &Sharded[T]{shards: make([]*mpsc[T], shards)}
	for i := range s.shards {
		s.shards[i] = new(mpsc[T])
		s.shards[i].init(capacity)
	}
	s.w.init()
	return s
}

// Shards returns the number of shards.
func (s *Sharded[T]) Shards() int { return len(s.shards) }

// Cap returns the total capacity, shards times the capacity of one.
func (s *Sharded[T]) Cap() int { return len(s.shards) * len(s.shards[0].buf) }

// Len returns the number of items pushed or being pushed and not yet popped,
// summed over shards: a snapshot, not a consistent cut.
func (s *Sharded[T]) Len() int {
	n := 0
	for _, q := range s.shards {
		n += q.len()
	}
	return n
}

// pick returns a random shard index without writing shared state
// (Lemire's multiply-shift reduction of a 32-bit random number).
func (s *Sharded[T]) pick() int {
	return int(uint64(rand.Uint32()) * uint64(len(s.shards)) >> 32)
}

// TryPush appends v to a random shard, or to the next shard that has room,
// and reports false only if every shard was full. Any goroutine.
func (s *Sharded[T]) TryPush(v T) bool {
	i := s.pick()
	for range len(s.shards) {
		if s.shards[i].tryPush(v) {
			s.w.notify()
			return true
		}
		if i++; i == len(s.shards) {
			i = 0
		}
	}
	return false
}

// PushBatch appends as many leading items of vs as fit, starting at a
// random shard and spilling into the next ones, and returns how many. Each
// shard receives a contiguous, ordered part of vs. Any goroutine.
func (s *Sharded[T]) PushBatch(vs []T) int {
	n := 0
	i := s.pick()
	for range len(s.shards) {
		if n == len(vs) {
			break
		}
		n += s.shards[i].pushBatch(vs[n:])
		if i++; i == len(s.shards) {
			i = 0
		}
	}
	if n > 0 {
		s.w.notify()
	}
	return n
}

// PopBatch moves up to len(dst) ready items into dst and returns how many;
// 0 means no item is ready. It drains shards in turn, each oldest first,
// starting one shard further on every call so that a small dst does not
// starve the last shards. Consumer only.
func (s *Sharded[T]) PopBatch(dst []T) int {
	n := 0
	i := s.next
	for range len(s.shards) {
		if n == len(dst) {
			break
		}
		n += s.shards[i].popBatch(dst[n:])
		if i++; i == len(s.shards) {
			i = 0
		}
	}
	if s.next++; s.next == len(s.shards) {
		s.next = 0
	}
	return n
}

func (s *Sharded[T]) empty() bool {
	for _, q := range s.shards {
		if !q.empty() {
			return false
		}
	}
	return true
}

// Wait blocks the consumer until an item is ready in some shard or stop is
// closed, and reports whether an item is ready. A nil stop waits for an item
// only. Consumer only.
func (s *Sharded[T]) Wait(stop <-chan struct{}) bool { return s.w.wait(s, stop) }

// Arm reports true if no shard has an item ready and the consumer is now
// registered as sleeping (it may block on C()), false if an item is ready
// (nothing to undo). After any wakeup the consumer calls Disarm and drains;
// a wakeup from C() may be spurious. See SPSC.Arm. Consumer only.
func (s *Sharded[T]) Arm() bool { return s.w.armIfEmpty(s) }

// C returns the channel a consumer that Armed blocks on.
func (s *Sharded[T]) C() <-chan struct{} { return s.w.ch }

// Disarm ends a sleep that Arm started. Consumer only.
func (s *Sharded[T]) Disarm() { s.w.disarm() }

// Producer is a handle that pushes into one fixed shard of a Sharded, so
// the items pushed through one handle are popped in the order they were
// pushed. A full shard makes its pushes fail even when other shards have
// room: that is the price of order. Handles are assigned shards round-robin.
//
// A Producer is a small value; copies push to the same shard. It is safe
// for concurrent use, but only pushes that do not overlap in time are
// ordered with respect to each other.
type Producer[T any] struct {
	s *Sharded[T]
	q *mpsc[T]
}

// Producer returns a handle bound to the next shard in round-robin order.
// Any goroutine; it writes one shared counter, so make handles once per
// session or connection, not per push.
func (s *Sharded[T]) Producer() Producer[T] {
	i := int((s.rr.Add(1) - 1) % uint32(len(s.shards)))
	return Producer[T]{s: s, q: s.shards[i]}
}

// TryPush appends v to the handle's shard and reports false if it is full.
func (p Producer[T]) TryPush(v T) bool {
	if !p.q.tryPush(v) {
		return false
	}
	p.s.w.notify()
	return true
}

// PushBatch appends as many leading items of vs as fit in the handle's
// shard, contiguously and in order, and returns how many.
func (p Producer[T]) PushBatch(vs []T) int {
	n := p.q.pushBatch(vs)
	if n > 0 {
		p.s.w.notify()
	}
	return n
}
