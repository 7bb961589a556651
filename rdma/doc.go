// Package rdma is a Transport (engine/transport's contract) over RDMA
// reliable-connected queue pairs, through the libibverbs binding in
// cgo/verbs.
//
// # Build
//
// The implementation needs the rdma build tag (and rdma-core's headers);
// without it New returns ErrUnavailable, so that a program can fall back to
// TCP. Its tests need a device: `go run ./tools/vmlab test-rdma` runs them
// on soft-RoCE in a QEMU guest.
//
// # Design
//
// One RC queue pair per peer carries both directions. The replica with the
// lower ID dials the other's side channel (a TCP connection) and the two
// exchange their queue pair parameters there (verbs.Endpoint, the number
// and size of their receive slots) in frames of the engine's wire format
// (control types, cluster ID and CRC checked); the side channel then stays
// open as a liveness signal and carries nothing more. A broken connection
// (a failed work request, a closed side channel, a malformed frame, the
// peer connecting anew) is torn down completely, and the dialer redials
// with backoff.
//
// Frames are exactly TCP's (engine/wire), written as a byte stream: the
// sender cuts its queue of encoded frames into slot-sized SENDs (with
// immediate data) into receives its peer posted in advance, and the
// receiver reassembles the stream and decodes it like TCP's reader, so a
// frame may be larger than a slot. RC delivers in order and exactly once
// while the QP lives.
//
// Credits: each side posts RecvSlots receives and tells the peer how many;
// a SEND consumes one of the peer's receives, so a sender holds one credit
// per receive the peer has posted and not yet seen used. Every SEND's
// immediate data returns the credits of receives the sender reposted since
// its last report. A sender keeps its last credit for a credit-only SEND
// (no data, just the immediate), sent when a quarter of its receives were
// reposted and not yet reported, so two sides that both ran out of credits
// can always tell each other: no sender ever overruns its receiver, and
// the pair cannot deadlock.
//
// Each connection has one goroutine that owns its queue pair: it posts
// chains of SENDs (one cgo call per chain), polls many completions per
// call, delivers what arrived to the handler, reposts receives, spins for
// Config.Spin when idle and then sleeps on the completion channel (a
// helper goroutine waits on it and wakes the owner), or on Send's wake-up.
//
// Memory: receive and send slots are one mmap'd region each per
// connection (verbs.Region), registered with the device and freed with the
// connection. Received bytes are copied out of the slot into Go memory
// before the receive is reposted, so delivered messages alias nothing the
// device writes to (the transport contract: the batch is the handler's).
package rdma
