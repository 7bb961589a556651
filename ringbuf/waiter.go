package ringbuf

import "sync/atomic"

// waiter lets a ring's single consumer sleep while the ring is empty and be
// woken by the next push, without a channel operation or system call on the
// pushes that find the consumer awake.
//
// Protocol (the consumer is the only goroutine that calls arm and disarm):
//
//	consumer                              producer
//	  c1: sleeping = 1   (arm)              p1: publish the item (atomic store)
//	  c2: re-check the ring (atomic load)   p2: if sleeping == 1 and
//	  c3: if still empty, block on ch           CAS(sleeping, 1, 0): poke ch
//	  c4: sleeping = 0   (disarm)
//
// No lost wakeup: Go's sync/atomic operations are sequentially consistent
// (the memory model puts them all in one total order), so of the pairs
// (c1 store, c2 load) and (p1 store, p2 load) at least one load sees the
// other side's store. If c2 sees the item, the consumer does not block. If
// it does not, then c1 precedes p2 in that order and p2 reads sleeping == 1
// unless something set it back to 0 since: either the consumer itself (c4,
// it is awake) or another producer's successful CAS, which pokes ch. A poke
// is a non-blocking send into a channel of capacity 1: if the channel is
// already full a token is pending, which wakes the consumer just as well.
// So a consumer blocked at c3 always has a token coming.
//
// Spurious wakeups: a token can outlive the sleep it was meant for (a
// producer pokes after the consumer found the item at c2 and disarmed), so a
// later sleep may return at once. The consumer therefore re-checks the ring
// after every wakeup; a spurious wakeup costs one loop, never an item.
//
// Cost to a producer whose consumer is awake: one atomic load of a line that
// is written only when the consumer goes to sleep, so it stays shared in
// every core's cache. The CAS (one producer per sleep wins it) and the
// channel send happen only when the consumer sleeps.
type waiter struct {
	_        pad
	sleeping atomic.Uint32
	ch       chan struct{}
	_        pad
}

func (w *waiter) init() { w.ch = make(chan struct{}, 1) }

// notify is called by a producer after it published at least one item.
func (w *waiter) notify() {
	if w.sleeping.Load() != 0 && w.sleeping.CompareAndSwap(1, 0) {
		select {
		case w.ch <- struct{}{}:
		default: // a token is already pending
		}
	}
}

// emptier is the consumer's view of its ring (an interface rather than a
// func value so that passing a ring does not allocate a closure). empty must
// read, with an atomic load, the word a producer's publication writes.
type emptier interface{ empty() bool }

// arm announces that the consumer is about to sleep. The consumer must
// re-check the ring after arm and before blocking.
func (w *waiter) arm() { w.sleeping.Store(1) }

// disarm withdraws the announcement; the consumer calls it whenever it
// stops sleeping, for whatever reason.
func (w *waiter) disarm() { w.sleeping.Store(0) }

// armIfEmpty runs steps c1 and c2: it reports true, armed, if the ring is
// still empty (the caller then blocks on ch), or false, disarmed, if not.
func (w *waiter) armIfEmpty(r emptier) bool {
	w.arm()
	if !r.empty() {
		w.disarm()
		return false
	}
	return true
}

// wait blocks until r is non-empty or stop is closed, and reports whether r
// is non-empty. A nil stop waits for an item only.
func (w *waiter) wait(r emptier, stop <-chan struct{}) bool {
	for r.empty() {
		if !w.armIfEmpty(r) {
			return true
		}
		select {
		case <-w.ch:
			w.disarm()
		case <-stop:
			w.disarm()
			return !r.empty()
		}
	}
	return true
}
