package rdma

import (
	"errors"
	"log/slog"
	"net"
	"time"

	"github.com/vestalabs/vesta/engine/transport"
	"github.com/vestalabs/vesta/engine/wire"
)

// ErrUnavailable is New's error in a build without the rdma tag.
var ErrUnavailable = errors.New("rdma: built without the rdma build tag")

// Config configures an RDMA transport. Zero values take the defaults named.
type Config struct {
	ClusterID uint64
	ID        wire.ReplicaID // this replica (not zero)
	// Listener accepts the side-channel connections of peers with lower
	// IDs; if nil, New listens on ListenAddr. Closed by Close.
	Listener   net.Listener
	ListenAddr string
	// Peers maps every other replica to its side-channel address. This
	// replica dials the peers with higher IDs and is dialed by the others.
	Peers  map[wire.ReplicaID]string
	Logger *slog.Logger // slog.Default()
	// Dial, if set, is asked before each dial of a peer (one this replica
	// dials: a higher ID); while it answers false the peer is not dialed
	// (asked again every DialGateInterval). vestad's -transport auto uses
	// it to leave alone peers whose link it routes over TCP.
	Dial func(peer wire.ReplicaID) bool

	Device   string // RDMA device name ("": the first)
	Port     uint8  // its port (1)
	GIDIndex int    // GID index; 0 means find the RoCE v2 IPv4-mapped one (or use 0 on InfiniBand)

	MaxFrameSize   int // frame limit both ways (wire.DefaultMaxFrameSize)
	MaxQueueBytes  int // per peer bound of queued frames (4 MiB)
	SlotSize       int // bytes per receive and send slot (64 KiB)
	RecvSlots      int // receives posted per connection: the peer's credits (32)
	SendSlots      int // sends in flight per connection (32)
	ReadBufferSize int // stream reassembly buffer (256 KiB; a larger frame gets its own)

	// Spin is how long a connection's goroutine keeps polling after its
	// last completion before it sleeps on the completion channel (50 µs).
	// Negative: never spin.
	Spin time.Duration

	DialTimeout      time.Duration // side-channel dial (1 s)
	HandshakeTimeout time.Duration // parameter exchange, either side (5 s)
	// Reconnection waits between BackoffMin (20 ms) and BackoffMax (2 s),
	// doubling after each failure.
	BackoffMin, BackoffMax time.Duration
}

// DialGateInterval is how often a peer that Config.Dial refuses is asked
// about again.
const DialGateInterval = 100 * time.Millisecond

// Reasons a connection is closed for (Stats.Closed keys), beyond
// wire.Reason's labels for malformed frames. Those the TCP transport has
// too are its own.
const (
	ReasonPeerClosed     = transport.ReasonPeerClosed     // the side channel closed
	ReasonSuperseded     = transport.ReasonSuperseded     // the peer connected anew
	ReasonSenderMismatch = transport.ReasonSenderMismatch // a frame's From is not the peer
	ReasonMisrouted      = transport.ReasonMisrouted      // a frame's To is not this replica
	ReasonBadHandshake   = transport.ReasonBadHandshake   // a side-channel frame that is not the handshake's
	ReasonQPError        = "qp_error"                     // a work request completed with an error
	ReasonVerbsError     = "verbs_error"                  // a verbs call failed
	// ReasonBadCredit: the peer returned more credits than it has
	// receives, or the device reported more bytes than a receive holds.
	ReasonBadCredit = "bad_credit"

	// Refusal reasons (Stats.HandshakesRefused, and Stats.Closed on the
	// refusing side), as TCP's: transport.RefusalReason.
	ReasonForeignCluster = transport.ReasonForeignCluster
	ReasonUnknownPeer    = transport.ReasonUnknownPeer
	ReasonWrongReplica   = transport.ReasonWrongReplica
	ReasonWrongDirection = transport.ReasonWrongDirection // the higher ID dialed
	ReasonRefusedOther   = transport.ReasonRefusedOther
)

// LinkStats are one peer link's counters since the transport started
// (Transport.Links), for vestad's /status and metrics.
type LinkStats struct {
	Peer wire.ReplicaID
	Up   bool // a connection is established now
	// Frames and bytes handed to SENDs (sent) and delivered to the handler
	// (received) on this link.
	FramesSent, BytesSent         uint64
	FramesReceived, BytesReceived uint64
	// Completions polled on this link's completion queue (sends and
	// receives alike).
	Completions uint64
	// CreditStalls counts the times the sender had frames queued and no
	// credit left to send them (it waits for the peer to repost).
	CreditStalls uint64
	// Connects counts connections established; Reconnects those after the
	// first.
	Connects, Reconnects uint64
}
