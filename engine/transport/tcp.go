package transport

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/vestalabs/vesta/engine/wire"
	"github.com/vestalabs/vesta/internal/contract"
	"github.com/vestalabs/vesta/internal/nbwrite"
)

// TCPConfig configures a TCP transport. Zero durations and sizes take the
// defaults named on each field.
type TCPConfig struct {
	// ClusterID is carried by every frame; frames of another cluster close
	// their connection.
	ClusterID uint64
	// ID is this replica's ID (not zero).
	ID wire.ReplicaID
	// Listener accepts the peers' connections. If nil, NewTCP listens on
	// ListenAddr. The transport closes it on Close.
	Listener   net.Listener
	ListenAddr string
	// Peers maps every other replica to the address to dial for it. Only
	// these replicas may connect in, and only to them can Send deliver.
	Peers map[wire.ReplicaID]string
	// Logger receives connection events and the reasons connections were
	// closed. Nil means slog.Default().
	Logger *slog.Logger

	// MaxFrameSize bounds frames both ways (wire.DefaultMaxFrameSize).
	MaxFrameSize int
	// MaxQueueBytes bounds each peer's queue of encoded frames (4 MiB). A
	// frame that does not fit is dropped, unless the queue is empty.
	MaxQueueBytes int
	// MaxBulkBytes bounds each peer's lane of bulk frames (2 MiB), apart
	// from MaxQueueBytes; the same rule drops what does not fit.
	MaxBulkBytes int
	// ReadBufferSize is the size of the read buffers values are decoded in
	// place from (256 KiB); a larger frame gets a buffer of its own size.
	ReadBufferSize int

	DialTimeout      time.Duration // one dial attempt (1 s)
	HandshakeTimeout time.Duration // hello and its acknowledgement, either side (2 s)
	// WriteTimeout bounds one gathered write (5 s); a peer that takes longer
	// to drain its socket is treated as gone and redialled. Negative: none.
	WriteTimeout time.Duration
	// Reconnection waits between BackoffMin (20 ms) and BackoffMax (2 s),
	// doubling after each failure, each wait drawn uniformly from its upper
	// half.
	BackoffMin, BackoffMax time.Duration
}

func (c *TCPConfig) setDefaults() {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defDur := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.MaxFrameSize, wire.DefaultMaxFrameSize)
	def(&c.MaxQueueBytes, 4<<20)
	def(&c.MaxBulkBytes, 2<<20)
	def(&c.ReadBufferSize, 256<<10)
	defDur(&c.DialTimeout, time.Second)
	defDur(&c.HandshakeTimeout, 2*time.Second)
	defDur(&c.WriteTimeout, 5*time.Second)
	defDur(&c.BackoffMin, 20*time.Millisecond)
	defDur(&c.BackoffMax, 2*time.Second)
	if c.BackoffMax < c.BackoffMin {
		c.BackoffMax = c.BackoffMin
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Control frames of the handshake (wire.FrameControl and up). A dialer sends
// hello{from, to}; the acceptor checks the frame (magic, version, cluster,
// CRC), that from is one of its peers and to is itself, and answers
// helloAck{from, to} from its side. Only then does the dialer send messages.
// Connections carry messages one way, dialer to acceptor.
//
// An acceptor that refuses a sound hello (of another cluster, from a replica
// it does not know, or for another replica) first answers with a refusal
// frame (FrameRefusal, see refusal.go), then closes: otherwise only the
// refusing side would know why, and the refused replica would redial forever
// seeing nothing but dropped connections. A hello that is not sound (bad
// magic, version or CRC, not a hello) gets no answer: whatever sent it does
// not speak this protocol. A dialer that predates refusals reads the refusal
// as a malformed ack and fails its dial, as it did when the connection
// closed. A refusal is only ever read by a dialer during its handshake; a
// control frame anywhere else is refused by wire.Decode.
const (
	frameHello    = wire.FrameControl
	frameHelloAck = wire.FrameControl + 1
	frameRefusal  = FrameRefusal
	helloSize     = 8
	helloFrame    = wire.HeaderSize + helloSize
	refusalSize   = RefusalSize
	refusalFrame  = wire.HeaderSize + refusalSize
)

// Reasons, beyond wire.Reason's, that TCP closes a connection for (the keys
// of Stats.Closed). Malformed input and refused handshakes are logged at
// Warn, ordinary disconnects at Info.
const (
	ReasonBadHandshake   = "bad_handshake"   // first frame not a well-formed hello
	ReasonUnknownPeer    = "unknown_peer"    // hello from a replica not in Peers
	ReasonWrongReplica   = "wrong_replica"   // hello addressed to another replica
	ReasonSenderMismatch = "sender_mismatch" // message From differs from the hello's
	ReasonMisrouted      = "misrouted"       // message To is not this replica
	ReasonSuperseded     = "superseded"      // the same peer connected again
	ReasonPeerClosed     = "peer_closed"     // EOF from the peer
	ReasonReadError      = "read_error"      // other read failure (reset, timeout)
	ReasonWriteError     = "write_error"     // outbound write failed or timed out

	// ReasonForeignCluster is wire.ClusterError's Reason: a frame or hello
	// of another cluster. Also a reason a peer refuses our hello.
	ReasonForeignCluster = "foreign_cluster"
	// ReasonRefusedOther labels a refusal whose code this version does not
	// know (Stats.HandshakesRefused only).
	ReasonRefusedOther = "other"
)

// chunkSize is the size of the buffers frames are encoded into; the writer
// sends all filled chunks of a peer with one writev.
const chunkSize = 64 << 10

// TCP is a Transport over TCP: one connection per peer and direction. It
// dials every peer for its own outbound traffic (one writer goroutine per
// peer, which gathers every queued frame into one writev per wake-up and
// redials with backoff) and accepts its peers' connections (one reader
// goroutine per connection, which decodes in place and calls the handler
// with everything one read brought).
//
// Every connection starts with a handshake carrying the cluster ID and both
// replica IDs. A frame that fails any check (foreign cluster, bad CRC,
// unknown version, oversized, unknown type, a sender other than the
// handshake's) closes its connection with the reason logged and counted; the
// valid messages before it in the same read are delivered, nothing from it
// or after it is. A refused hello (another cluster, an unknown replica, a
// hello for another replica) is also answered with the reason, so that the
// refused dialer counts it (Stats.HandshakesRefused) and logs it as an error
// naming both sides, at once and then at most once a minute per peer.
//
// The outbound side does not read after the handshake, so it learns that its
// peer went away from its next write; the frames of the write before that
// may be lost without an error, like any message in flight.
type TCP struct {
	cfg     TCPConfig
	codec   wire.Codec
	handler Handler
	log     *slog.Logger
	ln      net.Listener
	peers   map[wire.ReplicaID]*peer // read-only after NewTCP
	stats   Counters

	life Lifecycle // goroutines, connections, Close

	inMu    sync.Mutex
	inbound map[wire.ReplicaID]*inConn // the current inbound connection of each peer
}

var _ Transport = (*TCP)(nil)

// NewTCP starts a TCP transport: it listens, and starts dialing every peer.
func NewTCP(cfg TCPConfig, h Handler) (*TCP, error) {
	if cfg.ID == 0 {
		return nil, errors.New("transport: replica ID 0 is not valid")
	}
	if h == nil {
		return nil, errors.New("transport: nil handler")
	}
	if _, ok := cfg.Peers[cfg.ID]; ok {
		return nil, fmt.Errorf("transport: replica %d lists itself as a peer", cfg.ID)
	}
	cfg.setDefaults()
	if cfg.MaxFrameSize < refusalFrame {
		return nil, fmt.Errorf("transport: MaxFrameSize %d is below the handshake frames' %d", cfg.MaxFrameSize, refusalFrame)
	}
	ln := cfg.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", cfg.ListenAddr); err != nil {
			return nil, fmt.Errorf("transport: %w", err)
		}
	}
	t := &TCP{
		cfg:     cfg,
		codec:   wire.Codec{ClusterID: cfg.ClusterID, MaxFrameSize: cfg.MaxFrameSize},
		handler: h,
		log:     cfg.Logger.With("replica", cfg.ID, "cluster", cfg.ClusterID),
		ln:      ln,
		peers:   make(map[wire.ReplicaID]*peer, len(cfg.Peers)),
		inbound: make(map[wire.ReplicaID]*inConn),
	}
	t.life.Init()
	for id, addr := range cfg.Peers {
		if id == 0 {
			ln.Close()
			return nil, errors.New("transport: peer with replica ID 0")
		}
		p := &peer{t: t, id: id, addr: addr, wake: make(chan struct{}, 1), up: make(chan struct{}, 1)}
		p.writeFn = func(fd uintptr) bool {
			p.dn, p.derr = nbwrite.Once(fd, p.dbuf)
			return true // one attempt: never wait for the socket
		}
		t.peers[id] = p
	}
	t.life.Go(func() { t.life.AcceptLoop(t.ln, t.log, t.serveInbound) })
	for _, p := range t.peers {
		t.life.Go(p.run)
	}
	return t, nil
}

// Addr is the address the transport accepts connections on.
func (t *TCP) Addr() net.Addr { return t.ln.Addr() }

// Stats implements Transport.
func (t *TCP) Stats() Stats { return t.stats.Snapshot() }

// Send implements Transport: each message is encoded at once into its peer's
// queue, so msgs is free for reuse when Send returns. Every message's From
// must be this replica's ID.
func (t *TCP) Send(msgs []wire.Message) {
	var buf [8]*peer
	flush := buf[:0] // peers whose queue this call made non-empty
	for i := range msgs {
		m := &msgs[i]
		contract.Requiref(m.From == t.cfg.ID, "transport %d: Send of a %v from %d", t.cfg.ID, m.Type, m.From)
		p := t.peers[m.To]
		if p == nil {
			t.stats.DroppedNoPeer.Add(1)
			continue
		}
		if m.Type.Bulk() {
			if p.enqueueBulk(m) {
				p.signal() // the writer goroutine writes bulk frames, never a sender
			}
			continue
		}
		if p.enqueue(m) && !slices.Contains(flush, p) {
			flush = append(flush, p)
		}
	}
	for _, p := range flush {
		p.flush()
	}
}

// Close implements Transport.
func (t *TCP) Close() error {
	_, err := t.life.Close(t.ln)
	return err
}

func (t *TCP) track(c net.Conn) bool { return t.life.Track(c) }
func (t *TCP) untrack(c net.Conn)    { t.life.Untrack(c) }
func (t *TCP) closing() bool         { return t.life.Closing() }

// closeFor closes c for reason, counting and logging it. Malformed input and
// refused handshakes are warnings; the rest are ordinary events.
func (t *TCP) closeFor(c net.Conn, peer wire.ReplicaID, dir, reason string, err error) {
	t.untrack(c)
	if t.closing() {
		return // our own Close; not the peer's doing
	}
	level := slog.LevelWarn
	switch reason {
	case ReasonPeerClosed, ReasonReadError, ReasonWriteError, ReasonSuperseded:
		level = slog.LevelInfo
	}
	attrs := []any{"peer", peer, "dir", dir, "remote", addrString(c), "reason", reason}
	if err != nil {
		attrs = append(attrs, "err", err.Error())
	}
	t.log.Log(context.Background(), level, "transport: connection closed", attrs...)
	t.stats.CountClosed(reason) // after the log line, so a counted close is a logged one
}

func addrString(c net.Conn) string {
	if a := c.RemoteAddr(); a != nil {
		return a.String()
	}
	return "?"
}

// ---- inbound ----

// serveInbound runs the acceptor's half of the handshake, then reads c until
// it fails.
func (t *TCP) serveInbound(c net.Conn) {
	from, reason, err := t.acceptHello(c)
	if err != nil {
		t.closeFor(c, from, "in", reason, err)
		return
	}
	me := &inConn{c: c, done: make(chan struct{})}
	t.inMu.Lock()
	old := t.inbound[from]
	t.inbound[from] = me
	t.inMu.Unlock()
	if old != nil {
		// The peer reconnected; the old connection is dead or soon will be.
		// Its reader counts it as superseded. Wait for the reader to finish
		// its last handler call, so calls for one peer stay sequential.
		old.c.Close()
		select {
		case <-old.done:
		case <-t.life.Done():
		}
	}
	t.log.Info("transport: peer connected", "peer", from, "dir", "in", "remote", addrString(c))
	t.peerUp(from)
	reason, err = t.readLoop(c, from)
	close(me.done)
	t.inMu.Lock()
	if t.inbound[from] == me {
		delete(t.inbound, from)
	} else if reason == ReasonReadError || reason == ReasonPeerClosed {
		reason = ReasonSuperseded
	}
	t.inMu.Unlock()
	t.closeFor(c, from, "in", reason, err)
}

// inConn is a peer's current inbound connection.
type inConn struct {
	c    net.Conn
	done chan struct{} // closed when its reader calls the handler no more
}

// acceptHello reads and checks the dialer's hello and acknowledges it, or
// refuses it: it returns the reason to close c for, with the hello's sender
// when the hello was sound. A sound hello that is refused is answered with a
// refusal frame first (see frameRefusal).
func (t *TCP) acceptHello(c net.Conn) (wire.ReplicaID, string, error) {
	c.SetDeadline(time.Now().Add(t.cfg.HandshakeTimeout))
	var b [helloFrame]byte
	if _, err := io.ReadFull(c, b[:wire.HeaderSize]); err != nil {
		return 0, ReasonBadHandshake, fmt.Errorf("reading hello: %w", err)
	}
	codec := t.codec
	h, err := codec.ReadHeader(b[:])
	var foreign *wire.ClusterError
	if errors.As(err, &foreign) {
		// Perhaps a replica of another cluster. Check the rest of its hello
		// with its own cluster ID: if it is sound, it is told why it is
		// refused, in a frame its codec reads.
		codec.ClusterID = h.ClusterID
		h, err = codec.ReadHeader(b[:])
	}
	if err != nil {
		return 0, wire.Reason(err), err
	}
	if h.Type != frameHello || h.PayloadLen != helloSize {
		return 0, ReasonBadHandshake, fmt.Errorf("first frame has type %#02x and %d payload bytes, want a hello (%#02x, %d)",
			h.Type, h.PayloadLen, frameHello, helloSize)
	}
	if _, err := io.ReadFull(c, b[wire.HeaderSize:]); err != nil {
		return 0, ReasonBadHandshake, fmt.Errorf("reading hello: %w", err)
	}
	if _, _, err := codec.OpenFrame(b[:]); err != nil {
		return 0, wire.Reason(err), err
	}
	from := wire.ReplicaID(binary.LittleEndian.Uint32(b[wire.HeaderSize:]))
	to := wire.ReplicaID(binary.LittleEndian.Uint32(b[wire.HeaderSize+4:]))
	if foreign != nil {
		t.refuse(c, codec, from, RefuseForeignCluster)
		return from, ReasonForeignCluster, fmt.Errorf("hello from replica %d of cluster %d, this is cluster %d: %w",
			from, foreign.Got, foreign.Want, foreign)
	}
	if _, ok := t.peers[from]; !ok {
		t.refuse(c, codec, from, RefuseUnknownPeer)
		return from, ReasonUnknownPeer, fmt.Errorf("hello from replica %d, which is not a peer", from)
	}
	if to != t.cfg.ID {
		t.refuse(c, codec, from, RefuseWrongReplica)
		return from, ReasonWrongReplica, fmt.Errorf("hello for replica %d reached replica %d", to, t.cfg.ID)
	}
	ack := encodeHello(t.codec, frameHelloAck, t.cfg.ID, from)
	if _, err := c.Write(ack); err != nil {
		return from, ReasonBadHandshake, fmt.Errorf("writing hello ack: %w", err)
	}
	c.SetDeadline(time.Time{})
	return from, "", nil
}

// refuse tells the dialer of a sound hello from replica to why it is
// refused, in a frame of codec (the dialer's cluster). Best effort: the
// connection is closed next either way, and the handshake deadline bounds
// the write.
func (t *TCP) refuse(c net.Conn, codec wire.Codec, to wire.ReplicaID, code uint8) {
	p := RefusalPayload(t.cfg.ID, to, t.cfg.ClusterID, code)
	f, err := codec.AppendFrame(make([]byte, 0, refusalFrame), frameRefusal, p[:])
	contract.Ensuref(err == nil, "refusal frame: %v", err)
	c.Write(f) // an error here is the dialer's loss only; the close is logged
}

func encodeHello(codec wire.Codec, typ uint8, from, to wire.ReplicaID) []byte {
	var p [helloSize]byte
	binary.LittleEndian.PutUint32(p[0:], uint32(from))
	binary.LittleEndian.PutUint32(p[4:], uint32(to))
	f, err := codec.AppendFrame(make([]byte, 0, helloFrame), typ, p[:])
	contract.Ensuref(err == nil, "hello frame: %v", err)
	return f
}

// minRead is the least free space worth a read system call; below it a
// reader moves to a fresh buffer.
const minRead = 16 << 10

// readLoop reads frames from c and delivers them until a read fails or a
// frame fails a check; it returns the reason to close c for.
//
// Buffer discipline: buf[start:end] has been read but not delivered.
// Delivered bytes (buf[:start] once shared) belong to the handler; the loop
// only ever writes past end, and moves to a fresh buffer, copying the
// undelivered tail, when the frame in progress does not fit.
func (t *TCP) readLoop(c net.Conn, from wire.ReplicaID) (string, error) {
	dec := wire.Decoder{Codec: t.codec}
	buf := make([]byte, t.cfg.ReadBufferSize)
	start, end := 0, 0
	shared := false
	need := wire.HeaderSize // bytes from start the next step needs
	low := min(minRead, t.cfg.ReadBufferSize/2)
	for {
		if len(buf)-start < need || (shared && len(buf)-end < low) {
			nb := make([]byte, max(t.cfg.ReadBufferSize, need))
			end = copy(nb, buf[start:end])
			buf, start, shared = nb, 0, false
		}
		n, rerr := c.Read(buf[end:])
		end += n

		var batch []wire.Message
		var bytes int
		var reason string
		var ferr error
		need = wire.HeaderSize
		for end-start >= wire.HeaderSize {
			h, err := dec.ReadHeader(buf[start:end])
			if err != nil {
				reason, ferr = wire.Reason(err), err
				break
			}
			size := h.FrameSize()
			if end-start < size {
				need = size
				break
			}
			m, _, err := dec.Decode(buf[start : start+size])
			if err != nil {
				reason, ferr = wire.Reason(err), err
				break
			}
			if m.From != from {
				reason, ferr = ReasonSenderMismatch, fmt.Errorf("%v from %d on replica %d's connection", m.Type, m.From, from)
				break
			}
			if m.To != t.cfg.ID {
				reason, ferr = ReasonMisrouted, fmt.Errorf("%v for replica %d reached replica %d", m.Type, m.To, t.cfg.ID)
				break
			}
			batch = append(batch, m)
			start += size
			bytes += size
		}
		if len(batch) > 0 {
			shared = true
			t.stats.FramesReceived.Add(uint64(len(batch)))
			t.stats.BytesReceived.Add(uint64(bytes))
			t.stats.Deliveries.Add(1)
			t.handler(batch)
		}
		if ferr != nil {
			return reason, ferr
		}
		if rerr != nil {
			if errors.Is(rerr, io.EOF) {
				if end > start {
					return ReasonPeerClosed, fmt.Errorf("EOF inside a frame (%d bytes of it read)", end-start)
				}
				return ReasonPeerClosed, nil
			}
			return ReasonReadError, rerr
		}
	}
}

// ---- outbound ----

// backoff waits d before the next dial, less if the peer connects to us
// meanwhile (a replica that restarts would otherwise wait out a backoff of
// up to BackoffMax to hear from this one, and might start an election
// first); false if Close came first.
func (p *peer) backoff(d time.Duration) bool {
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return true
	case <-p.up:
		return true
	case <-p.t.life.Done():
		return false
	}
}

// peerUp tells peer id's writer goroutine that the peer just connected to
// this replica: if it is waiting to redial, it redials now.
func (t *TCP) peerUp(id wire.ReplicaID) {
	if p := t.peers[id]; p != nil {
		select {
		case p.up <- struct{}{}:
		default:
		}
	}
}

// peer is the outbound side of one peer: its queue of encoded frames and the
// writer goroutine that drains it.
//
// Whoever writes to the connection holds the single-writer token (writing):
// the writer goroutine, or a sender that found the queue empty, the token
// free and the connection up (flush). Taking and releasing the token and
// looking at the queue happen under mu, so frames leave in queue order, one
// writer at a time, and whoever releases the token with frames queued wakes
// the writer goroutine.
type peer struct {
	t    *TCP
	id   wire.ReplicaID
	addr string
	wake chan struct{} // capacity 1: "there may be something to write"
	// up (capacity 1) says the peer just connected to us, so it is up: a
	// writer goroutine waiting out a dial backoff redials at once.
	up chan struct{}

	mu     sync.Mutex
	queue  []chunk // frames waiting, oldest first
	spare  []chunk // the other queue slice, swapped in by takeLocked
	free   [][]byte
	queued int // bytes in queue
	// The bulk lane: one encoded frame each, oldest first, written by the
	// writer goroutine when queue is empty.
	bulk       [][]byte
	bulkQueued int  // bytes in bulk
	writing    bool // the single-writer token
	// The writer goroutine's connection while it is up, for direct writes;
	// nil while it is down or failed. Only the writer goroutine sets it.
	conn net.Conn
	raw  syscall.RawConn
	// A direct write's failure, for the writer goroutine to close the
	// connection for and count.
	failErr    error
	failFrames int

	iov      net.Buffers // the writer goroutine's scratch
	refusals RefusalLog  // the writer goroutine's

	// The direct write's arguments and results (held with the token), and
	// its callback, built once so that a direct write allocates nothing.
	dbuf    []byte
	dn      int
	derr    error
	writeFn func(fd uintptr) bool
}

type chunk struct {
	b      []byte // whole frames
	frames int
}

// enqueue encodes m at the tail of the queue, or drops it; true if the queue
// was empty before it, so the caller must flush.
func (p *peer) enqueue(m *wire.Message) bool {
	t := p.t
	size := wire.FrameSize(m)
	p.mu.Lock()
	if p.queued > 0 && p.queued+size > t.cfg.MaxQueueBytes {
		p.mu.Unlock()
		t.stats.DroppedQueueFull.Add(1)
		return false
	}
	if len(p.queue) == 0 || cap(p.queue[len(p.queue)-1].b)-len(p.queue[len(p.queue)-1].b) < size {
		var b []byte
		if n := len(p.free); n > 0 && size <= chunkSize {
			b, p.free = p.free[n-1], p.free[:n-1]
		} else {
			b = make([]byte, 0, max(chunkSize, size))
		}
		p.queue = append(p.queue, chunk{b: b})
	}
	c := &p.queue[len(p.queue)-1]
	var err error
	c.b, err = t.codec.Append(c.b, m)
	if err != nil {
		p.mu.Unlock()
		t.stats.DroppedUnencodable.Add(1)
		t.log.Error("transport: dropped a message the codec refused", "peer", p.id, "type", m.Type, "err", err)
		return false
	}
	c.frames++
	p.queued += size
	first := p.queued == size
	p.mu.Unlock()
	return first
}

// enqueueBulk encodes a bulk message m into a buffer of its own at the tail
// of the bulk lane, or drops it; true if it was queued.
func (p *peer) enqueueBulk(m *wire.Message) bool {
	t := p.t
	size := wire.FrameSize(m)
	b, err := t.codec.Append(make([]byte, 0, size), m)
	if err != nil {
		t.stats.DroppedUnencodable.Add(1)
		t.log.Error("transport: dropped a message the codec refused", "peer", p.id, "type", m.Type, "err", err)
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bulkQueued > 0 && p.bulkQueued+len(b) > t.cfg.MaxBulkBytes {
		t.stats.DroppedQueueFull.Add(1)
		return false
	}
	p.bulk = append(p.bulk, b)
	p.bulkQueued += len(b)
	return true
}

// takeBulkLocked removes the oldest bulk frame, as a queue of one chunk.
func (p *peer) takeBulkLocked() []chunk {
	b := p.bulk[0]
	p.bulk[0] = nil
	p.bulk = p.bulk[1:]
	if len(p.bulk) == 0 {
		p.bulk = nil
	}
	p.bulkQueued -= len(b)
	q := append(p.spare[:0], chunk{b: b, frames: 1})
	p.spare = nil // q is it until recycleLocked hands it back
	return q
}

// signal wakes the writer goroutine, or leaves it a wake-up.
func (p *peer) signal() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// flush sends what a Send queued, after the queue was empty: if no one
// holds the token and the connection is up, the sender writes the frames
// itself, one non-blocking write system call, sparing the writer
// goroutine's wake-up (two per request on the replication path). Whatever
// that leaves (the token busy, the connection down, more than one chunk, a
// full socket buffer, a partial write, a failure to close the connection
// for) is the writer goroutine's, and it is woken. flush never waits: not
// for the socket, a dial or a backoff.
func (p *peer) flush() {
	p.mu.Lock()
	if !nbwrite.Supported || p.writing || p.raw == nil || len(p.queue) != 1 {
		p.mu.Unlock()
		p.signal()
		return
	}
	p.writing = true
	q := p.takeLocked()
	conn, raw := p.conn, p.raw
	p.mu.Unlock()

	c := q[0]
	n, err := p.writeDirect(conn, raw, c.b)
	t := p.t
	if n > 0 {
		t.stats.WriteCalls.Add(1)
		t.stats.DirectCalls.Add(1)
		t.stats.BytesSent.Add(uint64(n))
	}
	p.mu.Lock()
	switch {
	case err == nil && n == len(c.b):
		t.stats.FramesSent.Add(uint64(c.frames))
	case err == nil || nbwrite.Retryable(err):
		// The socket buffer is full: the rest goes first, by the writer
		// goroutine, which may wait for the peer. Its frames are counted as
		// sent when the rest is.
		p.queue = append(p.queue, chunk{})
		copy(p.queue[1:], p.queue)
		p.queue[0] = chunk{b: c.b[n:], frames: c.frames}
		p.queued += len(c.b) - n
		q[0] = chunk{} // its buffer is back in the queue
	default:
		// The connection failed: nobody knows which of these frames the
		// peer got. The writer goroutine closes the connection, counts the
		// loss and redials; no direct write uses it meanwhile.
		p.conn, p.raw = nil, nil
		p.failErr, p.failFrames = err, c.frames
	}
	p.recycleLocked(q)
	p.writing = false
	more := len(p.queue) > 0 || p.failErr != nil
	p.mu.Unlock()
	if more {
		p.signal()
	}
}

// writeDirect makes one non-blocking write of b to conn (through raw); the
// caller holds the token. A write deadline the writer goroutine left behind
// that has passed since is cleared: this write cannot block, and the writer
// goroutine sets its own before each of its writes.
func (p *peer) writeDirect(conn net.Conn, raw syscall.RawConn, b []byte) (int, error) {
	p.dbuf, p.dn, p.derr = b, 0, nil
	err := raw.Write(p.writeFn)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		conn.SetWriteDeadline(time.Time{})
		err = raw.Write(p.writeFn)
	}
	n := p.dn
	if err == nil {
		err = p.derr
	}
	p.dbuf, p.dn, p.derr = nil, 0, nil
	return n, err
}

// takeLocked removes every queued chunk; the caller hands them back with
// recycleLocked.
func (p *peer) takeLocked() []chunk {
	q := p.queue
	p.queue, p.spare = p.spare[:0], nil
	p.queued = 0
	return q
}

func (p *peer) recycleLocked(q []chunk) {
	for i := range q {
		if cap(q[i].b) == chunkSize && len(p.free) < 4 {
			p.free = append(p.free, q[i].b[:0])
		}
		q[i] = chunk{}
	}
	p.spare = q[:0]
}

// run is the writer goroutine: connect, then write whatever is queued, one
// gathered write per wake-up; on failure, its own or a direct write's,
// redial with backoff.
func (p *peer) run() {
	t := p.t
	var conn net.Conn
	defer func() {
		p.mu.Lock()
		p.conn, p.raw = nil, nil
		p.mu.Unlock()
		if conn != nil {
			t.untrack(conn)
		}
	}()
	backoff := t.cfg.BackoffMin
	failures := 0
	connected := false
	for {
		if conn == nil {
			c, err := p.dial()
			if err != nil {
				if t.closing() {
					return
				}
				t.stats.DialFailures.Add(1)
				failures++
				var r *Refusal
				if errors.As(err, &r) {
					// Configuration, not the network: an error, and
					// counted, or this replica idles silently.
					t.stats.CountRefused(p.id, r.Reason)
					if ok, n := p.refusals.Note(time.Now(), r); ok {
						t.log.Error("transport: "+r.Error(), "peer", p.id, "addr", p.addr, "reason", r.Reason,
							"peer_replica", r.Replica, "peer_cluster", r.Cluster, "refusals", n)
					}
				} else {
					// Say so once per outage at Info; then only at Debug.
					level := slog.LevelDebug
					if failures == 1 {
						level = slog.LevelInfo
					}
					t.log.Log(context.Background(), level, "transport: cannot reach peer", "peer", p.id, "addr", p.addr, "err", err.Error(), "failures", failures)
				}
				// Uniform in the upper half of the current step: spreads
				// the redials of many replicas that lost a peer together.
				wait := backoff/2 + rand.N(backoff/2+1)
				if !p.backoff(wait) {
					return
				}
				backoff = min(2*backoff, t.cfg.BackoffMax)
				continue
			}
			conn, backoff, failures = c, t.cfg.BackoffMin, 0
			p.refusals.Reset()
			t.stats.Connects.Add(1)
			if connected {
				t.stats.Reconnects.Add(1)
			}
			connected = true
			t.log.Info("transport: peer connected", "peer", p.id, "dir", "out", "remote", addrString(conn))
			var raw syscall.RawConn
			if sc, ok := conn.(syscall.Conn); ok && nbwrite.Supported {
				if r, err := sc.SyscallConn(); err == nil {
					raw = r
				}
			}
			p.mu.Lock()
			p.conn, p.raw = conn, raw
			p.mu.Unlock()
		}

		p.mu.Lock()
		if ferr := p.failErr; ferr != nil {
			frames := p.failFrames
			p.failErr, p.failFrames = nil, 0
			p.mu.Unlock()
			if t.closing() {
				return
			}
			t.stats.DroppedOnDisconnect.Add(uint64(frames))
			t.closeFor(conn, p.id, "out", ReasonWriteError, ferr)
			conn = nil
			continue
		}
		if p.writing || (len(p.queue) == 0 && len(p.bulk) == 0) {
			// Nothing to write, or a sender is writing; it wakes us if it
			// leaves anything.
			p.mu.Unlock()
			select {
			case <-p.wake:
				continue
			case <-t.life.Done():
				return
			}
		}
		p.writing = true
		var q []chunk
		if len(p.queue) > 0 {
			q = p.takeLocked()
		} else {
			// Protocol frames first: a bulk frame goes out only when none
			// waits, one per write, so the next Accept waits for at most it.
			q = p.takeBulkLocked()
		}
		p.mu.Unlock()

		p.iov = p.iov[:0]
		frames := 0
		for i := range q {
			p.iov = append(p.iov, q[i].b)
			frames += q[i].frames
		}
		if t.cfg.WriteTimeout > 0 {
			conn.SetWriteDeadline(time.Now().Add(t.cfg.WriteTimeout))
		}
		iov := p.iov // WriteTo consumes the slice it is called on
		n, err := iov.WriteTo(conn)
		p.mu.Lock()
		p.recycleLocked(q)
		p.writing = false
		if err != nil {
			p.conn, p.raw = nil, nil
		}
		p.mu.Unlock()
		if err != nil {
			if t.closing() {
				return
			}
			// Nobody knows which frames the peer got; they are all lost as
			// far as this side can tell.
			t.stats.DroppedOnDisconnect.Add(uint64(frames))
			t.closeFor(conn, p.id, "out", ReasonWriteError, err)
			conn = nil
			continue
		}
		t.stats.WriteCalls.Add(1)
		t.stats.FramesSent.Add(uint64(frames))
		t.stats.BytesSent.Add(uint64(n))
	}
}

// dial connects to the peer and runs the dialer's half of the handshake. A
// peer that refuses the hello and says why yields a *refusal.
func (p *peer) dial() (net.Conn, error) {
	t := p.t
	d := net.Dialer{Timeout: t.cfg.DialTimeout}
	c, err := d.DialContext(t.life.Context(), "tcp", p.addr)
	if err != nil {
		return nil, err
	}
	if !t.track(c) {
		return nil, net.ErrClosed
	}
	fail := func(err error) (net.Conn, error) {
		t.untrack(c)
		return nil, err
	}
	c.SetDeadline(time.Now().Add(t.cfg.HandshakeTimeout))
	if _, err := c.Write(encodeHello(t.codec, frameHello, t.cfg.ID, p.id)); err != nil {
		return fail(fmt.Errorf("sending hello: %w", err))
	}
	var b [refusalFrame]byte
	if _, err := io.ReadFull(c, b[:wire.HeaderSize]); err != nil {
		return fail(fmt.Errorf("peer closed the handshake without saying why (see its log): %w", err))
	}
	h, err := t.codec.ReadHeader(b[:])
	if err != nil {
		return fail(fmt.Errorf("bad hello ack: %w", err))
	}
	if !(h.Type == frameHelloAck && h.PayloadLen == helloSize) && !(h.Type == frameRefusal && h.PayloadLen == refusalSize) {
		return fail(fmt.Errorf("hello answered by a frame of type %#02x with %d payload bytes, want an ack (%#02x, %d) or a refusal (%#02x, %d)",
			h.Type, h.PayloadLen, frameHelloAck, helloSize, frameRefusal, refusalSize))
	}
	f := b[:h.FrameSize()]
	if _, err := io.ReadFull(c, f[wire.HeaderSize:]); err != nil {
		return fail(fmt.Errorf("reading hello ack: %w", err))
	}
	if _, _, err := t.codec.OpenFrame(f); err != nil {
		return fail(fmt.Errorf("bad hello ack: %w", err))
	}
	pl := f[wire.HeaderSize:]
	from := wire.ReplicaID(binary.LittleEndian.Uint32(pl[0:]))
	to := wire.ReplicaID(binary.LittleEndian.Uint32(pl[4:]))
	if to != t.cfg.ID {
		return fail(fmt.Errorf("hello answered (type %#02x) for replica %d, not for us (%d)", h.Type, to, t.cfg.ID))
	}
	if h.Type == frameRefusal {
		r, err := ParseRefusal(pl, p.id, p.addr, t.cfg.ID, t.cfg.ClusterID)
		if err != nil {
			return fail(err)
		}
		return fail(r)
	}
	if from != p.id {
		return fail(fmt.Errorf("hello ack from replica %d; expected %d", from, p.id))
	}
	c.SetDeadline(time.Time{})
	return c, nil
}
