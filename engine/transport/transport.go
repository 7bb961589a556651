// Package transport moves protocol messages between replicas.
//
// The replica runtime talks to a Transport: it hands outbound messages to
// Send, many at once, and receives inbound messages through the Handler it
// gave at construction, many at once. Batches cross goroutines, never single
// messages: a hand-off costs more than a message's whole budget at the rates
// the engine aims for.
//
// Two implementations live here: Mem connects transports inside one process
// (in-process clusters and tests), and TCP connects processes. The RDMA
// transport (package rdma) implements the same contract.
//
// # Sending
//
// Send never blocks. It puts each message on the bounded queue of the peer
// named by its To field; when that queue is full, or no such peer is
// configured, the message is dropped and counted (Stats): the protocol
// retransmits what matters, and a replica whose core loop blocked on a slow
// peer would stall the whole cluster. A message can also be lost after Send
// returns, when a connection breaks; nothing is retransmitted below the
// protocol. Messages to one peer leave in the order they were sent, with one
// exception: bulk messages (wire.MsgType.Bulk: the chunks of a state
// transfer) may be overtaken by protocol messages sent after them. TCP keeps
// them on a lane of their own, bounded apart from the protocol's queue, and
// writes a bulk frame only when no protocol frame is waiting, so a transfer
// delays an Accept by at most the one bulk frame being written. Bulk
// messages keep their order among themselves.
//
// The caller keeps ownership of msgs: Send has encoded (TCP) or copied (Mem)
// what it needs before it returns, except Mem shares Value.Data, which by the
// wire.Value contract nobody modifies.
//
// # Receiving
//
// The Handler is called from the transport's own goroutines with batches of
// messages that passed every check (framing, cluster, checksum, sender):
// nothing malformed reaches it. Calls carrying messages from one peer are
// sequential and in the peer's send order; calls for different peers may run
// concurrently. While the handler runs, its goroutine reads nothing more, so
// a slow handler pushes back on its peer (whose queue then fills and drops);
// the handler should hand the batch to the core loop and return.
//
// The batch is the handler's: the slice, its Messages, their Entries and
// Ranges, and the bytes their Value.Data point into. The transport never reads
// or writes any of it again after the call, so the handler may keep all of it
// without copying. Value.Data from TCP aliases the connection's read buffer,
// which the transport abandons rather than reuses; keeping one small value
// keeps its read buffer (up to TCPConfig.ReadBufferSize) alive, so copy
// values that are kept long and are small compared with that buffer.
//
// The handler must not call Close.
package transport

import (
	"maps"
	"sync"
	"sync/atomic"

	"github.com/vestalabs/vesta/engine/wire"
)

// Handler receives a batch of inbound messages; see the package comment for
// when it is called and who owns the batch.
type Handler func(batch []wire.Message)

// Transport is what the replica runtime sends and receives through.
type Transport interface {
	// Send enqueues msgs for their recipients (Message.To) without blocking;
	// see the package comment.
	Send(msgs []wire.Message)
	// Stats returns a snapshot of the transport's counters.
	Stats() Stats
	// Close stops every goroutine of the transport, closes its connections,
	// and returns once none is left; the handler is not called after Close
	// returns. Queued messages are discarded. Close is idempotent.
	Close() error
}

// Stats are a transport's counters since it started. Frames are messages on
// the wire; for Mem, bytes are what the frames would occupy on the wire.
type Stats struct {
	FramesSent, BytesSent         uint64 // handed to the connection (TCP) or the peer's inbox (Mem)
	WriteCalls                    uint64 // TCP: gathered writes; FramesSent/WriteCalls is the frames per system call
	FramesReceived, BytesReceived uint64 // passed every check and handed to the handler
	Deliveries                    uint64 // handler calls

	DroppedQueueFull    uint64 // Send found the peer's queue full
	DroppedNoPeer       uint64 // Send named no configured (or no live, for Mem) peer
	DroppedUnencodable  uint64 // the codec refused the message (larger than MaxFrameSize)
	DroppedOnDisconnect uint64 // TCP: dequeued, then lost with a connection that failed

	Connects     uint64 // TCP: outbound connections established (handshake done)
	Reconnects   uint64 // TCP: of those, the ones after a peer's first
	DialFailures uint64 // TCP: dial or handshake attempts that failed

	// Closed counts connections closed, by reason: a wire.Reason label for a
	// malformed frame ("bad_crc", "foreign_cluster", "oversized", ...), or one
	// of the transport's own (see TCP).
	Closed map[string]uint64
	// HandshakesRefused counts TCP dials that the peer refused and said why,
	// by peer and reason (ReasonForeignCluster, ReasonUnknownPeer,
	// ReasonWrongReplica, ReasonRefusedOther): the peer, or this replica, is
	// misconfigured. Each is also a DialFailure.
	HandshakesRefused map[PeerReason]uint64
}

// PeerReason keys Stats.HandshakesRefused.
type PeerReason struct {
	Peer   wire.ReplicaID
	Reason string
}

// Counters are the counters behind Stats, shared by every transport here
// and by package rdma: each field counts what the Stats field of its name
// says. The methods are safe for concurrent use.
type Counters struct {
	FramesSent, BytesSent, WriteCalls         atomic.Uint64
	FramesReceived, BytesReceived, Deliveries atomic.Uint64
	DroppedQueueFull, DroppedNoPeer           atomic.Uint64
	DroppedUnencodable, DroppedOnDisconnect   atomic.Uint64
	Connects, Reconnects, DialFailures        atomic.Uint64
	DirectCalls                               atomic.Uint64 // TCP: of WriteCalls, those made by a sender (tests look); not in Stats

	mu      sync.Mutex
	closed  map[string]uint64
	refused map[PeerReason]uint64
}

// CountRefused counts a dial that peer refused for reason.
func (c *Counters) CountRefused(peer wire.ReplicaID, reason string) {
	c.mu.Lock()
	if c.refused == nil {
		c.refused = make(map[PeerReason]uint64)
	}
	c.refused[PeerReason{peer, reason}]++
	c.mu.Unlock()
}

// CountClosed counts a connection closed for reason.
func (c *Counters) CountClosed(reason string) {
	c.mu.Lock()
	if c.closed == nil {
		c.closed = make(map[string]uint64)
	}
	c.closed[reason]++
	c.mu.Unlock()
}

// Snapshot returns the counters as Stats (maps never nil).
func (c *Counters) Snapshot() Stats {
	c.mu.Lock()
	closed := maps.Clone(c.closed)
	refused := maps.Clone(c.refused)
	c.mu.Unlock()
	if closed == nil {
		closed = map[string]uint64{}
	}
	if refused == nil {
		refused = map[PeerReason]uint64{}
	}
	return Stats{
		FramesSent: c.FramesSent.Load(), BytesSent: c.BytesSent.Load(), WriteCalls: c.WriteCalls.Load(),
		FramesReceived: c.FramesReceived.Load(), BytesReceived: c.BytesReceived.Load(), Deliveries: c.Deliveries.Load(),
		DroppedQueueFull: c.DroppedQueueFull.Load(), DroppedNoPeer: c.DroppedNoPeer.Load(),
		DroppedUnencodable: c.DroppedUnencodable.Load(), DroppedOnDisconnect: c.DroppedOnDisconnect.Load(),
		Connects: c.Connects.Load(), Reconnects: c.Reconnects.Load(), DialFailures: c.DialFailures.Load(),
		Closed: closed, HandshakesRefused: refused,
	}
}
