//go:build rdma

package rdma

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vestalabs/vesta/cgo/verbs"
	"github.com/vestalabs/vesta/engine/transport"
	"github.com/vestalabs/vesta/engine/wire"
	"github.com/vestalabs/vesta/internal/contract"
)

// Available reports whether this build has the RDMA transport.
const Available = true

// Transport is a transport.Transport over RDMA; see the package comment.
type Transport struct {
	cfg     Config
	codec   wire.Codec
	handler transport.Handler
	log     *slog.Logger
	ln      net.Listener
	dev     *verbs.Context
	pd      *verbs.PD
	path    verbs.Path
	peers   map[wire.ReplicaID]*peer // read-only after New
	st      transport.Counters
	life    transport.Lifecycle // goroutines, side channels, Close
}

var _ transport.Transport = (*Transport)(nil)

// New opens the RDMA device, listens on the side channel and starts
// connecting to every peer. It fails when there is no usable device: the
// caller may then fall back to TCP.
func New(cfg Config, h transport.Handler) (*Transport, error) {
	if cfg.ID == 0 {
		return nil, errors.New("rdma: replica ID 0 is not valid")
	}
	if h == nil {
		return nil, errors.New("rdma: nil handler")
	}
	if _, ok := cfg.Peers[cfg.ID]; ok {
		return nil, fmt.Errorf("rdma: replica %d lists itself as a peer", cfg.ID)
	}
	for id := range cfg.Peers {
		if id == 0 {
			return nil, errors.New("rdma: peer with replica ID 0")
		}
	}
	cfg.setDefaults()
	dev, err := verbs.Open(cfg.Device)
	if err != nil {
		return nil, fmt.Errorf("rdma: %w", err)
	}
	fail := func(err error) (*Transport, error) {
		dev.Close()
		return nil, err
	}
	pa, err := dev.QueryPort(cfg.Port)
	if err != nil {
		return fail(fmt.Errorf("rdma: %w", err))
	}
	if pa.State != verbs.PortActive {
		return fail(fmt.Errorf("rdma: %s port %d is %v", dev.Name(), cfg.Port, pa.State))
	}
	gidx := cfg.GIDIndex
	if gidx == 0 && pa.LinkLayer == verbs.LinkLayerEthernet {
		if gidx, _, err = dev.RoCEv2IPv4GID(cfg.Port); err != nil {
			return fail(fmt.Errorf("rdma: %w", err))
		}
	}
	pd, err := dev.AllocPD()
	if err != nil {
		return fail(fmt.Errorf("rdma: %w", err))
	}
	ln := cfg.Listener
	if ln == nil {
		if ln, err = net.Listen("tcp", cfg.ListenAddr); err != nil {
			pd.Close()
			return fail(fmt.Errorf("rdma: side channel: %w", err))
		}
	}
	t := &Transport{
		cfg:     cfg,
		codec:   wire.Codec{ClusterID: cfg.ClusterID, MaxFrameSize: cfg.MaxFrameSize},
		handler: h,
		log:     cfg.Logger.With("replica", cfg.ID, "cluster", cfg.ClusterID, "transport", "rdma"),
		ln:      ln,
		dev:     dev,
		pd:      pd,
		// One RNR retry: credits mean a receive is always posted before a
		// SEND arrives, so a receiver-not-ready NAK is a bug, and it
		// should break the connection (counted as qp_error), not stall.
		path:  verbs.Path{Port: cfg.Port, GIDIndex: gidx, RNRRetry: 1},
		peers: make(map[wire.ReplicaID]*peer, len(cfg.Peers)),
	}
	t.life.Init()
	for id, addr := range cfg.Peers {
		t.peers[id] = &peer{t: t, id: id, addr: addr, dialer: cfg.ID < id,
			wake: make(chan struct{}, 1), accepted: make(chan struct{}, 1)}
	}
	t.log.Info("rdma transport up", "device", dev.Name(), "port", cfg.Port, "gid_index", gidx, "side_channel", ln.Addr().String())
	t.life.Go(func() { t.life.AcceptLoop(ln, t.log, t.acceptHello) })
	for _, p := range t.peers {
		t.life.Go(p.run)
	}
	return t, nil
}

// Addr is the side channel's address.
func (t *Transport) Addr() net.Addr { return t.ln.Addr() }

// Device is the name of the RDMA device in use.
func (t *Transport) Device() string { return t.dev.Name() }

// Stats implements transport.Transport.
func (t *Transport) Stats() transport.Stats { return t.st.Snapshot() }

// Send implements transport.Transport: each message is encoded into its
// peer's queue at once, so msgs is free when Send returns.
func (t *Transport) Send(msgs []wire.Message) {
	var buf [8]*peer
	woken := buf[:0]
	for i := range msgs {
		m := &msgs[i]
		contract.Requiref(m.From == t.cfg.ID, "rdma %d: Send of a %v from %d", t.cfg.ID, m.Type, m.From)
		p := t.peers[m.To]
		if p == nil {
			t.st.DroppedNoPeer.Add(1)
			continue
		}
		if p.enqueue(m) {
			found := false
			for _, q := range woken {
				found = found || q == p
			}
			if !found {
				woken = append(woken, p)
			}
		}
	}
	for _, p := range woken {
		p.signal()
	}
}

// Close implements transport.Transport. The connections are torn down (and
// their registered memory freed) before it returns; then the protection
// domain and the device are closed.
func (t *Transport) Close() error {
	first, err := t.life.Close(t.ln)
	if !first {
		return nil
	}
	for _, p := range t.peers {
		if pc := p.takePending(); pc != nil {
			pc.nc.Close()
		}
	}
	if e := t.pd.Close(); e != nil && err == nil {
		err = e
	}
	if e := t.dev.Close(); e != nil && err == nil {
		err = e
	}
	return err
}

func (t *Transport) track(c net.Conn) bool { return t.life.Track(c) }
func (t *Transport) untrack(c net.Conn)    { t.life.Untrack(c) }
func (t *Transport) closing() bool         { return t.life.Closing() }

// ---- accepting ----

// acceptHello reads and checks a dialer's hello and hands the side channel
// to the peer's goroutine, which sets the connection up. A sound hello that
// is refused is answered with the engine's refusal frame first, as TCP
// answers its own.
func (t *Transport) acceptHello(c net.Conn) {
	h, p, err := readFrame(c, t.codec, t.cfg.HandshakeTimeout, true)
	var hl hello
	if err == nil && h.Type != frameHello {
		err = fmt.Errorf("first frame has type %#x, not an RDMA hello (%#x)", h.Type, frameHello)
	}
	if err == nil {
		hl, err = parseHello(p)
	}
	if err != nil {
		t.untrack(c)
		if t.closing() {
			return
		}
		reason := wire.Reason(err)
		if reason == "" {
			reason = ReasonBadHandshake
		}
		t.log.Warn("bad RDMA hello", "remote", c.RemoteAddr().String(), "reason", reason, "err", err)
		t.st.CountClosed(reason)
		return
	}
	refuse := func(code uint8, reason string, err error) {
		t.log.Warn("refused an RDMA connection", "from", hl.From, "remote", c.RemoteAddr().String(), "reason", reason, "err", err)
		t.st.CountClosed(reason)
		codec := t.codec
		codec.ClusterID = h.ClusterID // the dialer's: its codec reads why
		pl := transport.RefusalPayload(t.cfg.ID, hl.From, t.cfg.ClusterID, code)
		writeFrame(c, codec, transport.FrameRefusal, pl[:], t.cfg.HandshakeTimeout)
		t.untrack(c)
	}
	pr := t.peers[hl.From]
	switch {
	case h.ClusterID != t.cfg.ClusterID:
		refuse(transport.RefuseForeignCluster, ReasonForeignCluster,
			fmt.Errorf("hello from replica %d of cluster %d, this is cluster %d", hl.From, h.ClusterID, t.cfg.ClusterID))
	case pr == nil:
		refuse(transport.RefuseUnknownPeer, ReasonUnknownPeer, fmt.Errorf("hello from replica %d, which is not a peer", hl.From))
	case hl.To != t.cfg.ID:
		refuse(transport.RefuseWrongReplica, ReasonWrongReplica, fmt.Errorf("hello for replica %d reached replica %d", hl.To, t.cfg.ID))
	case pr.dialer:
		refuse(transport.RefuseWrongDirection, ReasonWrongDirection, fmt.Errorf("replica %d dials replica %d, not the other way", t.cfg.ID, hl.From))
	default:
		pr.offer(&pendingConn{nc: c, hello: hl})
	}
}

// ---- peers ----

// peer is one other replica: its queue of encoded frames, which survives
// reconnections, and the goroutine that (re)connects and runs the
// connection.
type peer struct {
	t      *Transport
	id     wire.ReplicaID
	addr   string
	dialer bool          // this replica dials (lower ID)
	wake   chan struct{} // capacity 1: Send queued something

	// accepted (capacity 1) says pending holds a side channel the peer
	// dialed, for the acceptor side's goroutine.
	accepted chan struct{}

	mu      sync.Mutex
	q       []*chunk // encoded frames, oldest first
	free    [][]byte
	queued  int
	pending *pendingConn

	connects int                  // the peer goroutine's
	refusals transport.RefusalLog // the peer goroutine's
	ls       linkCounters
}

// linkCounters are a peer link's LinkStats, updated by its goroutine and
// read by Links.
type linkCounters struct {
	up                            atomic.Bool
	framesSent, bytesSent         atomic.Uint64
	framesReceived, bytesReceived atomic.Uint64
	completions, creditStalls     atomic.Uint64
	connects, reconnects          atomic.Uint64
}

// Links returns each peer link's counters, by peer ID.
func (t *Transport) Links() []LinkStats {
	out := make([]LinkStats, 0, len(t.peers))
	for id, p := range t.peers {
		l := &p.ls
		out = append(out, LinkStats{Peer: id, Up: l.up.Load(),
			FramesSent: l.framesSent.Load(), BytesSent: l.bytesSent.Load(),
			FramesReceived: l.framesReceived.Load(), BytesReceived: l.bytesReceived.Load(),
			Completions: l.completions.Load(), CreditStalls: l.creditStalls.Load(),
			Connects: l.connects.Load(), Reconnects: l.reconnects.Load()})
	}
	return out
}

// chunk is a buffer of whole frames; off bytes of it are posted.
type chunk struct {
	b      []byte
	off    int
	frames int
}

type pendingConn struct {
	nc    net.Conn
	hello hello
}

// chunkSize is the size of the buffers frames are encoded into.
const chunkSize = 64 << 10

// enqueue encodes m at the tail of the queue, or drops it; true if the queue
// was empty.
func (p *peer) enqueue(m *wire.Message) bool {
	t := p.t
	size := wire.FrameSize(m)
	if size > t.cfg.MaxFrameSize {
		t.st.DroppedUnencodable.Add(1)
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.queued > 0 && p.queued+size > t.cfg.MaxQueueBytes {
		t.st.DroppedQueueFull.Add(1)
		return false
	}
	wasEmpty := len(p.q) == 0
	var c *chunk
	if n := len(p.q); n > 0 && p.q[n-1].off == 0 && cap(p.q[n-1].b)-len(p.q[n-1].b) >= size {
		c = p.q[n-1]
	} else {
		var b []byte
		if n := len(p.free); n > 0 && size <= chunkSize {
			b, p.free = p.free[n-1][:0], p.free[:n-1]
		} else {
			b = make([]byte, 0, max(chunkSize, size))
		}
		c = &chunk{b: b}
		p.q = append(p.q, c)
	}
	nb, err := t.codec.Append(c.b, m)
	if err != nil {
		if len(c.b) == 0 {
			p.q = p.q[:len(p.q)-1]
		}
		t.st.DroppedUnencodable.Add(1)
		return false
	}
	p.queued += len(nb) - len(c.b)
	c.b = nb
	c.frames++
	return wasEmpty
}

func (p *peer) signal() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// offer hands an accepted side channel to the peer's goroutine, replacing
// (and closing) one it has not taken yet.
func (p *peer) offer(pc *pendingConn) {
	p.mu.Lock()
	if old := p.pending; old != nil {
		p.t.untrack(old.nc)
	}
	p.pending = pc
	p.mu.Unlock()
	select {
	case p.accepted <- struct{}{}:
	default:
	}
}

func (p *peer) takePending() *pendingConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	pc := p.pending
	p.pending = nil
	return pc
}

// dropPartial discards the head chunk when part of it was posted on a
// connection that is gone: its rest cannot start a new stream. Its frames
// count as lost.
func (p *peer) dropPartial() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.q) > 0 && p.q[0].off > 0 {
		c := p.q[0]
		p.queued -= len(c.b)
		p.t.st.DroppedOnDisconnect.Add(uint64(c.frames))
		p.q = p.q[1:]
	}
}

func (p *peer) run() {
	t := p.t
	backoff := t.cfg.BackoffMin
	failures := 0
	for !t.closing() {
		var c *conn
		var err error
		if p.dialer && t.cfg.Dial != nil && !t.cfg.Dial(p.id) {
			if !t.life.Sleep(DialGateInterval) {
				return
			}
			continue
		}
		if p.dialer {
			c, err = p.dial()
		} else {
			select {
			case <-p.accepted:
			case <-t.life.Done():
				return
			}
			pc := p.takePending()
			if pc == nil {
				continue
			}
			c, err = p.accept(pc)
		}
		if err != nil {
			if t.closing() {
				return
			}
			t.st.DialFailures.Add(1)
			failures++
			var r *transport.Refusal
			if errors.As(err, &r) {
				// Configuration, not the network: an error, counted, and
				// logged as TCP logs it (at once, then once a minute).
				t.st.CountRefused(p.id, r.Reason)
				if ok, n := p.refusals.Note(time.Now(), r); ok {
					t.log.Error("rdma: "+r.Error(), "peer", p.id, "reason", r.Reason,
						"peer_replica", r.Replica, "peer_cluster", r.Cluster, "refusals", n)
				}
			} else {
				// Once per outage at Info; then only at Debug.
				lvl := slog.LevelDebug
				if failures == 1 {
					lvl = slog.LevelInfo
				}
				t.log.Log(context.Background(), lvl, "rdma connection setup failed", "peer", p.id, "err", err, "failures", failures)
			}
			if p.dialer {
				if !t.life.Sleep(backoff) {
					return
				}
				backoff = min(2*backoff, t.cfg.BackoffMax)
			}
			continue
		}
		backoff, failures = t.cfg.BackoffMin, 0
		p.refusals.Reset()
		t.st.Connects.Add(1)
		p.ls.connects.Add(1)
		if p.connects > 0 {
			t.st.Reconnects.Add(1)
			p.ls.reconnects.Add(1)
		}
		p.connects++
		p.ls.up.Store(true)
		t.log.Info("rdma connection up", "peer", p.id, "local", c.local.String(), "remote", c.remote.String())
		reason, err := c.run()
		p.ls.up.Store(false)
		c.teardown()
		p.dropPartial()
		if t.closing() {
			return
		}
		t.st.CountClosed(reason)
		lvl := slog.LevelInfo
		if reason != ReasonPeerClosed && reason != ReasonSuperseded {
			lvl = slog.LevelWarn
		}
		t.log.Log(context.Background(), lvl, "rdma connection closed", "peer", p.id, "reason", reason, "err", err)
	}
}

// dial connects to the peer's side channel and sets the connection up.
func (p *peer) dial() (*conn, error) {
	t := p.t
	d := net.Dialer{Timeout: t.cfg.DialTimeout}
	nc, err := d.DialContext(t.life.Context(), "tcp", p.addr)
	if err != nil {
		return nil, err
	}
	if !t.track(nc) {
		return nil, net.ErrClosed
	}
	c, err := p.newConn(nc)
	if err != nil {
		t.untrack(nc)
		return nil, err
	}
	if err := c.dialHandshake(); err != nil {
		c.teardown()
		return nil, err
	}
	return c, nil
}

// accept sets the connection up on a side channel the peer dialed.
func (p *peer) accept(pc *pendingConn) (*conn, error) {
	c, err := p.newConn(pc.nc)
	if err != nil {
		p.t.untrack(pc.nc)
		return nil, err
	}
	if err := c.acceptHandshake(pc.hello); err != nil {
		c.teardown()
		return nil, err
	}
	return c, nil
}

func (c *Config) setDefaults() {
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
	if c.Port == 0 {
		c.Port = 1
	}
	def(&c.MaxFrameSize, wire.DefaultMaxFrameSize)
	def(&c.MaxQueueBytes, 4<<20)
	def(&c.SlotSize, 64<<10)
	def(&c.RecvSlots, 32)
	def(&c.SendSlots, 32)
	def(&c.ReadBufferSize, 256<<10)
	defDur(&c.Spin, 50*time.Microsecond)
	defDur(&c.DialTimeout, time.Second)
	defDur(&c.HandshakeTimeout, 5*time.Second)
	defDur(&c.BackoffMin, 20*time.Millisecond)
	defDur(&c.BackoffMax, 2*time.Second)
	if c.BackoffMax < c.BackoffMin {
		c.BackoffMax = c.BackoffMin
	}
	if c.RecvSlots < minRecvSlots {
		c.RecvSlots = minRecvSlots // see minRecvSlots
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}
