// Package ringbuf provides bounded, lock-free rings for the engine's hot
// hand-offs, generic over the element type.
//
//   - SPSC: one producer goroutine, one consumer goroutine. Two atomic
//     indices on separate cache lines; each side caches the other's index and
//     reloads it only when the cached value says the ring is full (producer)
//     or holds fewer items than asked for (consumer).
//   - MPSC: any number of producers, one consumer. A producer claims a
//     range of positions with one CAS on the tail and publishes it with one
//     atomic store in a per-position mark, whatever the batch size; it never
//     takes a lock. (Per-slot sequence numbers, as in Vyukov's bounded queue,
//     cost an atomic store per item and made batches no cheaper than items.)
//   - Sharded: N MPSC rings behind one consumer, for the engine's submission
//     path, so that producers on different cores do not all CAS one tail.
//
// All three move items one at a time (TryPush) or in batches (PushBatch,
// PopBatch); batches amortize the cache-line transfers that dominate a
// hand-off between cores, which is why the engine hands off batches.
//
// # Full and empty
//
// Rings are bounded and never block a producer: a push into a full ring
// fails (TryPush returns false, PushBatch pushes what fits), and the caller
// chooses between refusing (ErrBusy), retrying and shedding. The consumer
// may sleep while the ring is empty, without costing producers a system
// call or a channel operation per push: see Wait, Arm, C and Disarm, and the
// lost-wakeup argument on waiter.
//
// # Ownership
//
// A pushed value belongs to the ring until popped, then to the consumer.
// The ring clears a slot when its value is popped, so it keeps no pointer
// alive for the garbage collector after hand-off.
package ringbuf

import "runtime"

// cacheLine is the padding between fields that different cores write. It is
// two 64-byte lines, not one: x86 cores since Sandy Bridge (and AMD Zen)
// prefetch adjacent line pairs, so fields 64 bytes apart can still
// false-share. The cost is a few hundred bytes per ring.
const cacheLine = 128

type pad [cacheLine]byte

// maxCapacity bounds capacities so that index arithmetic never overflows an
// int and a mistaken size fails loudly instead of allocating gigabytes.
const maxCapacity = 1 << 30

// roundCapacity returns the power of two at or above n; it panics on n < 1
// or n > maxCapacity, which is a programming error.
func roundCapacity(n int) int {
	if n < 1 || n > maxCapacity {
		panic("ringbuf: capacity out of range [1, 1<<30]")
	}
	c := 1
	for c < n {
		c <<= 1
	}
	return c
}

// defaultShards is the shard count of NewSharded(0, …): one per P.
func defaultShards() int { return runtime.GOMAXPROCS(0) }
