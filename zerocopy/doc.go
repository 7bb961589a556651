// Package zerocopy owns the byte buffers of the hot path: a pool of
// buffers in size classes with an explicit ownership contract, a
// reference-counted frame for a buffer that several readers share, and a
// gathering writer that turns many small items into one writev.
//
// # Ownership
//
// Every pooled buffer has exactly one owner at a time, and only its owner
// may touch its bytes or give it back:
//
//   - Pool.Get hands out a Buf: the caller owns it exclusively, may read and
//     write its bytes, and must end ownership exactly once, with Release (back
//     to the pool) or Share (into a Frame). After that, the Buf handle and
//     every slice obtained from it are dead.
//   - A Frame is a buffer shared read-only by several holders, each holding
//     one reference. Ref creates a new reference for a new holder; each
//     holder calls Release once; the last Release returns the buffer to the
//     pool. Slices from Frame.Bytes are valid while the holder's reference
//     is.
//   - Ownership passes by handing over the handle (the giver stops using
//     it). A function that takes a Buf or Frame says in its doc whether it
//     takes the reference over or borrows it.
//
// Handles are small values (a pointer, plus a stamp in contracts builds);
// copying a handle does not create a reference.
//
// # Checks
//
// In builds with the contracts tag (every test run), each handle carries a
// stamp and each buffer a generation and the set of its live Frame
// references, so that a double Release, a Release of a reference twice, or
// any use of a handle after its release panics with a *contract.Violation,
// even when the buffer has meanwhile gone to a new owner. Released buffers
// are overwritten with poisonByte, so that a slice kept past release reads
// garbage. Pool.Outstanding counts buffers not yet returned, for leak
// checks. Without the tag, handles are one pointer and none of this runs.
package zerocopy
