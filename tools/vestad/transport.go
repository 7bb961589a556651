package main

// The replication transport: -transport tcp (the default: engine/transport's
// TCP, exactly as before), rdma (package rdma to every peer; no device is an
// error at start) or auto (RDMA to each peer where both ends have a device,
// TCP otherwise, decided per peer and logged).
//
// In rdma and auto modes the replica's -peers address is one listener that
// a demultiplexer shares out by the type of each connection's first frame
// (every frame starts with the engine's header, wire.HeaderSize bytes, whose
// byte 5 is the type): TCP's hello (wire.FrameControl) goes to the TCP
// transport, RDMA's side-channel hello (wire.FrameControl+0x10) to the RDMA
// transport, and a link probe (frameProbe, below) is answered here.
//
// Auto decides each link by probing: every replica asks every peer, on the
// peer's -peers address, whether it has an RDMA transport up, and routes
// that peer to RDMA when both have one. Both ends compute the same answer
// (it is symmetric), so they agree without a further round. Until a peer
// answers, its link is TCP (the TCP transport runs to every peer in auto
// mode, so nothing is lost while a peer is down or undecided); the probe is
// repeated every probeEvery, and a changed answer (a peer restarted with or
// without a device) moves the link and is logged. The RDMA transport dials
// only peers whose link is RDMA (rdma.Config.Dial), so a peer without a
// device is not redialled forever.

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vestalabs/vesta/engine/transport"
	"github.com/vestalabs/vesta/engine/wire"
	"github.com/vestalabs/vesta/rdma"
)

// Transport modes (-transport).
const (
	modeTCP  = "tcp"
	modeRDMA = "rdma"
	modeAuto = "auto"
)

// transportFlags are -transport and -rdma-device.
type transportFlags struct {
	mode   string
	device string // "": the first device
}

func addTransportFlags(fs *flag.FlagSet) func() (transportFlags, error) {
	mode := fs.String("transport", modeTCP, "replication `TRANSPORT`: tcp; rdma (RDMA to every peer: fails at start without a usable RDMA device, "+
		"and needs a vestad built with -tags rdma); or auto (RDMA to each peer where both ends have a device, TCP otherwise, decided per peer and logged)")
	device := fs.String("rdma-device", "", "`NAME` of the RDMA device for -transport rdma or auto (default: the first)")
	return func() (transportFlags, error) {
		switch *mode {
		case modeTCP, modeRDMA, modeAuto:
		default:
			return transportFlags{}, fmt.Errorf("-transport: %q is not tcp, rdma or auto", *mode)
		}
		return transportFlags{mode: *mode, device: *device}, nil
	}
}

// linkSet is the replica's transport with its per-peer links, for /status
// and the metrics.
type linkSet struct {
	mode  string
	tcp   *transport.TCP  // tcp and auto modes
	rd    *rdma.Transport // rdma mode; auto mode where this replica has a device
	noDev string          // auto without a device: why
	mux   *demux          // rdma and auto modes
	links map[wire.ReplicaID]*link
	log   *slog.Logger

	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

// link is one peer's route and the counters of what went over TCP on it in
// auto mode (RDMA counts its own: rdma.Transport.Links).
type link struct {
	id    wire.ReplicaID
	addr  string
	rdma  atomic.Bool // route to RDMA
	known atomic.Bool // auto: the peer answered a probe

	mu     sync.Mutex
	reason string

	framesSent, bytesSent         atomic.Uint64
	framesReceived, bytesReceived atomic.Uint64
}

func (l *link) set(toRDMA bool, reason string) (changed bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	changed = l.rdma.Load() != toRDMA || l.reason != reason
	l.rdma.Store(toRDMA)
	l.reason = reason
	return changed
}

func (l *link) why() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.reason
}

var _ transport.Transport = (*linkSet)(nil)

// newTransport builds the transport -transport asks for. others are the
// peers' -peers addresses.
func newTransport(cfg *config, others map[wire.ReplicaID]string, log *slog.Logger, h transport.Handler) (*linkSet, error) {
	addr := cfg.peers[cfg.id]
	ls := &linkSet{mode: cfg.transport.mode, links: map[wire.ReplicaID]*link{}, log: log}
	for id, a := range others {
		ls.links[id] = &link{id: id, addr: a}
	}
	if ls.mode == modeTCP || ls.mode == "" {
		ls.mode = modeTCP
		t, err := transport.NewTCP(transport.TCPConfig{ClusterID: cfg.clusterID, ID: cfg.id,
			ListenAddr: addr, Peers: others, Logger: log}, h)
		if err != nil {
			return nil, fmt.Errorf("-peers: replica %d's address %s: %w", cfg.id, addr, err)
		}
		ls.tcp = t
		for _, l := range ls.links {
			l.set(false, "-transport tcp")
		}
		return ls, nil
	}

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("-peers: replica %d's address %s: %w", cfg.id, addr, err)
	}
	ls.mux = newDemux(ln, cfg.clusterID, cfg.id, log)
	rcfg := rdma.Config{ClusterID: cfg.clusterID, ID: cfg.id, Listener: ls.mux.rdma, Peers: others,
		Logger: log, Device: cfg.transport.device}
	if ls.mode == modeAuto {
		rcfg.Dial = func(p wire.ReplicaID) bool { l := ls.links[p]; return l != nil && l.rdma.Load() }
	}
	rd, rerr := rdma.New(rcfg, h)
	if rerr != nil {
		ls.mux.rdma.Close()
	}
	if ls.mode == modeRDMA {
		if rerr != nil {
			ls.mux.close()
			return nil, fmt.Errorf("-transport rdma: %s (use -transport auto to fall back to TCP, or -transport tcp)", rdmaUnavailable(rerr))
		}
		ls.rd = rd
		ls.mux.tcp.Close() // nothing speaks TCP here
		for _, l := range ls.links {
			l.set(true, "-transport rdma")
		}
		ls.mux.hasRDMA.Store(true)
		ls.mux.device.Store(rd.Device())
		ls.mux.start()
		log.Info("replication over RDMA to every peer (-transport rdma)", "peers", len(others))
		return ls, nil
	}

	// auto
	tcpH := func(batch []wire.Message) {
		// Counted before the handler owns the batch.
		for i := range batch {
			if l := ls.links[batch[i].From]; l != nil {
				l.framesReceived.Add(1)
				l.bytesReceived.Add(uint64(wire.FrameSize(&batch[i])))
			}
		}
		h(batch)
	}
	t, err := transport.NewTCP(transport.TCPConfig{ClusterID: cfg.clusterID, ID: cfg.id,
		Listener: ls.mux.tcp, Peers: others, Logger: log}, tcpH)
	if err != nil {
		if rd != nil {
			rd.Close()
		}
		ls.mux.close()
		return nil, fmt.Errorf("-peers: replica %d's address %s: %w", cfg.id, addr, err)
	}
	ls.tcp = t
	if rerr != nil {
		ls.noDev = "no local RDMA device: " + rdmaUnavailable(rerr)
		log.Warn("-transport auto: this replica has no usable RDMA device; replicating over TCP to every peer", "why", rdmaUnavailable(rerr))
		for _, l := range ls.links {
			l.set(false, ls.noDev)
		}
	} else {
		ls.rd = rd
		ls.mux.hasRDMA.Store(true)
		ls.mux.device.Store(rd.Device())
		log.Info("-transport auto: this replica has an RDMA device; probing each peer", "device", rd.Device())
		for _, l := range ls.links {
			l.set(false, "probing the peer (TCP until it answers)")
		}
	}
	ls.mux.start()
	ctx, cancel := context.WithCancel(context.Background())
	ls.cancel = cancel
	if ls.rd != nil {
		for _, l := range ls.links {
			ls.wg.Add(1)
			go ls.probeLoop(ctx, cfg.clusterID, cfg.id, l)
		}
	}
	return ls, nil
}

// rdmaUnavailable says why there is no RDMA transport.
func rdmaUnavailable(err error) string {
	if errors.Is(err, rdma.ErrUnavailable) {
		return "this vestad was built without RDMA support (build it with -tags rdma, which needs rdma-core's libibverbs-dev)"
	}
	return "no usable RDMA device: " + err.Error()
}

// probeEvery is how often auto mode asks a peer again once it answered;
// before that, probes are retried after probeRetry.
const (
	probeEvery = 5 * time.Second
	probeRetry = 200 * time.Millisecond
)

func (ls *linkSet) probeLoop(ctx context.Context, cluster uint64, me wire.ReplicaID, l *link) {
	defer ls.wg.Done()
	for {
		has, dev, err := probePeer(ctx, cluster, me, l.id, l.addr)
		wait := probeRetry
		if err == nil {
			wait = probeEvery
			var reason string
			if has {
				reason = fmt.Sprintf("both ends have an RDMA device (peer's: %s)", dev)
			} else {
				reason = "the peer has no usable RDMA device"
			}
			first := !l.known.Swap(true)
			if l.set(has, reason) || first {
				tr := modeTCP
				if has {
					tr = modeRDMA
				}
				ls.log.Info("-transport auto: peer link", "peer", l.id, "transport", tr, "why", reason)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// Send implements transport.Transport: each message goes to its peer's
// route.
func (ls *linkSet) Send(msgs []wire.Message) {
	switch {
	case ls.rd == nil:
		if ls.mux != nil { // auto without a device: count the links
			for i := range msgs {
				if l := ls.links[msgs[i].To]; l != nil {
					l.framesSent.Add(1)
					l.bytesSent.Add(uint64(wire.FrameSize(&msgs[i])))
				}
			}
		}
		ls.tcp.Send(msgs)
		return
	case ls.tcp == nil:
		ls.rd.Send(msgs)
		return
	}
	allRDMA := true
	for i := range msgs {
		if l := ls.links[msgs[i].To]; l == nil || !l.rdma.Load() {
			allRDMA = false
			break
		}
	}
	if allRDMA {
		ls.rd.Send(msgs)
		return
	}
	var toRDMA, toTCP []wire.Message
	for i := range msgs {
		l := ls.links[msgs[i].To]
		if l != nil && l.rdma.Load() {
			toRDMA = append(toRDMA, msgs[i])
			continue
		}
		if l != nil {
			l.framesSent.Add(1)
			l.bytesSent.Add(uint64(wire.FrameSize(&msgs[i])))
		}
		toTCP = append(toTCP, msgs[i])
	}
	if len(toRDMA) > 0 {
		ls.rd.Send(toRDMA)
	}
	if len(toTCP) > 0 {
		ls.tcp.Send(toTCP)
	}
}

// Stats implements transport.Transport: the sum of both transports'.
func (ls *linkSet) Stats() transport.Stats {
	var s transport.Stats
	for _, t := range []transport.Transport{ls.tcpOrNil(), ls.rdOrNil()} {
		if t == nil {
			continue
		}
		addStats(&s, t.Stats())
	}
	if s.Closed == nil {
		s.Closed = map[string]uint64{}
	}
	if s.HandshakesRefused == nil {
		s.HandshakesRefused = map[transport.PeerReason]uint64{}
	}
	return s
}

func (ls *linkSet) tcpOrNil() transport.Transport {
	if ls.tcp == nil {
		return nil
	}
	return ls.tcp
}

func (ls *linkSet) rdOrNil() transport.Transport {
	if ls.rd == nil {
		return nil
	}
	return ls.rd
}

func addStats(s *transport.Stats, o transport.Stats) {
	s.FramesSent += o.FramesSent
	s.BytesSent += o.BytesSent
	s.WriteCalls += o.WriteCalls
	s.FramesReceived += o.FramesReceived
	s.BytesReceived += o.BytesReceived
	s.Deliveries += o.Deliveries
	s.DroppedQueueFull += o.DroppedQueueFull
	s.DroppedNoPeer += o.DroppedNoPeer
	s.DroppedUnencodable += o.DroppedUnencodable
	s.DroppedOnDisconnect += o.DroppedOnDisconnect
	s.Connects += o.Connects
	s.Reconnects += o.Reconnects
	s.DialFailures += o.DialFailures
	if len(o.Closed) > 0 && s.Closed == nil {
		s.Closed = map[string]uint64{}
	}
	for k, v := range o.Closed {
		s.Closed[k] += v
	}
	if len(o.HandshakesRefused) > 0 && s.HandshakesRefused == nil {
		s.HandshakesRefused = map[transport.PeerReason]uint64{}
	}
	for k, v := range o.HandshakesRefused {
		s.HandshakesRefused[k] += v
	}
}

// Close implements transport.Transport.
func (ls *linkSet) Close() error {
	var err error
	ls.once.Do(func() {
		if ls.cancel != nil {
			ls.cancel()
		}
		if ls.mux != nil {
			ls.mux.close()
		}
		if ls.tcp != nil {
			err = ls.tcp.Close()
		}
		if ls.rd != nil {
			if e := ls.rd.Close(); e != nil && err == nil {
				err = e
			}
		}
		ls.wg.Wait()
	})
	return err
}

// linkStatus is one peer link in /status.
type linkStatus struct {
	Peer      wire.ReplicaID `json:"peer"`
	Transport string         `json:"transport"`
	Why       string         `json:"why"`
	// Up: a connection to the peer is established (RDMA links only).
	Up *bool `json:"up,omitempty"`
	// Counters of this link: for RDMA links the RDMA transport's, for
	// TCP links in auto mode what was handed to and delivered by TCP
	// for this peer. In tcp mode TCP counts only in total (the
	// transport section's totals).
	FramesSent     *uint64 `json:"frames_sent,omitempty"`
	BytesSent      *uint64 `json:"bytes_sent,omitempty"`
	FramesReceived *uint64 `json:"frames_received,omitempty"`
	BytesReceived  *uint64 `json:"bytes_received,omitempty"`
	Completions    *uint64 `json:"completions,omitempty"`
	CreditStalls   *uint64 `json:"credit_stalls,omitempty"`
	Connects       *uint64 `json:"connects,omitempty"`
	Reconnects     *uint64 `json:"reconnects,omitempty"`
}

// transportStatus is /status's "transport" section.
type transportStatus struct {
	Mode  string       `json:"mode"`
	Links []linkStatus `json:"links"`
	// Totals over every link (both transports in auto mode).
	FramesSent     uint64 `json:"frames_sent"`
	FramesReceived uint64 `json:"frames_received"`
	Reconnects     uint64 `json:"reconnects"`
}

func ptr[T any](v T) *T { return &v }

func (ls *linkSet) status() transportStatus {
	st := transportStatus{Mode: ls.mode}
	var rl map[wire.ReplicaID]rdma.LinkStats
	if ls.rd != nil {
		rl = map[wire.ReplicaID]rdma.LinkStats{}
		for _, s := range ls.rd.Links() {
			rl[s.Peer] = s
		}
	}
	for _, id := range slices.Sorted(maps.Keys(ls.links)) {
		l := ls.links[id]
		s := linkStatus{Peer: id, Transport: modeTCP, Why: l.why()}
		switch {
		case l.rdma.Load():
			r := rl[id]
			s.Transport = modeRDMA
			s.Up = ptr(r.Up)
			s.FramesSent, s.BytesSent = ptr(r.FramesSent), ptr(r.BytesSent)
			s.FramesReceived, s.BytesReceived = ptr(r.FramesReceived), ptr(r.BytesReceived)
			s.Completions, s.CreditStalls = ptr(r.Completions), ptr(r.CreditStalls)
			s.Connects, s.Reconnects = ptr(r.Connects), ptr(r.Reconnects)
		case ls.mode != modeTCP:
			s.FramesSent, s.BytesSent = ptr(l.framesSent.Load()), ptr(l.bytesSent.Load())
			s.FramesReceived, s.BytesReceived = ptr(l.framesReceived.Load()), ptr(l.bytesReceived.Load())
		}
		st.Links = append(st.Links, s)
	}
	tot := ls.Stats()
	st.FramesSent, st.FramesReceived, st.Reconnects = tot.FramesSent, tot.FramesReceived, tot.Reconnects
	return st
}

// linkCollector exports the links as vesta_link_* series, read at each
// scrape.
type linkCollector struct{ ls *linkSet }

var (
	descLinkInfo = prometheus.NewDesc("vesta_link_info",
		"The transport of each peer link (1 for the one in use): tcp or rdma.", []string{"peer", "transport"}, nil)
	descLinkUp = prometheus.NewDesc("vesta_link_up",
		"1 while an RDMA link has a connection established.", []string{"peer", "transport"}, nil)
	descLinkFramesSent = prometheus.NewDesc("vesta_link_frames_sent_total",
		"Frames sent on the link (RDMA: in SENDs posted; TCP in auto mode: handed to TCP).", []string{"peer", "transport"}, nil)
	descLinkBytesSent = prometheus.NewDesc("vesta_link_bytes_sent_total",
		"Bytes of frames sent on the link.", []string{"peer", "transport"}, nil)
	descLinkFramesReceived = prometheus.NewDesc("vesta_link_frames_received_total",
		"Frames received on the link and delivered.", []string{"peer", "transport"}, nil)
	descLinkBytesReceived = prometheus.NewDesc("vesta_link_bytes_received_total",
		"Bytes of frames received on the link.", []string{"peer", "transport"}, nil)
	descLinkCompletions = prometheus.NewDesc("vesta_link_completions_total",
		"Work completions polled on the link's completion queue (RDMA).", []string{"peer", "transport"}, nil)
	descLinkCreditStalls = prometheus.NewDesc("vesta_link_credit_stalls_total",
		"Times the link had frames queued and no credit to send them (RDMA).", []string{"peer", "transport"}, nil)
	descLinkReconnects = prometheus.NewDesc("vesta_link_reconnects_total",
		"Connections of the link established after its first (RDMA).", []string{"peer", "transport"}, nil)
)

func (c linkCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descLinkInfo, descLinkUp, descLinkFramesSent, descLinkBytesSent, descLinkFramesReceived,
		descLinkBytesReceived, descLinkCompletions, descLinkCreditStalls, descLinkReconnects} {
		ch <- d
	}
}

func (c linkCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.ls.status()
	for _, l := range st.Links {
		peer := strconv.FormatUint(uint64(l.Peer), 10)
		ch <- prometheus.MustNewConstMetric(descLinkInfo, prometheus.GaugeValue, 1, peer, l.Transport)
		if l.Up != nil {
			v := 0.0
			if *l.Up {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(descLinkUp, prometheus.GaugeValue, v, peer, l.Transport)
		}
		for _, m := range []struct {
			d *prometheus.Desc
			v *uint64
		}{{descLinkFramesSent, l.FramesSent}, {descLinkBytesSent, l.BytesSent}, {descLinkFramesReceived, l.FramesReceived},
			{descLinkBytesReceived, l.BytesReceived}, {descLinkCompletions, l.Completions}, {descLinkCreditStalls, l.CreditStalls},
			{descLinkReconnects, l.Reconnects}} {
			if m.v != nil {
				ch <- prometheus.MustNewConstMetric(m.d, prometheus.CounterValue, float64(*m.v), peer, l.Transport)
			}
		}
	}
}

// ---- the demultiplexer and the probe ----

// Frame types the demultiplexer routes by. TCP's and RDMA's hellos are
// those transports' own (engine/transport's frameHello, rdma's frameHello);
// the probe and its answer are vestad's.
const (
	typeTCPHello  = wire.FrameControl
	typeRDMAHello = wire.FrameControl + 0x10
	frameProbe    = wire.FrameControl + 0x20
	frameProbeAns = wire.FrameControl + 0x21
	probeSize     = 8  // u32 from, u32 to
	probeAnsSize  = 48 // u32 from, u32 to, u8 has RDMA, 7 zero, 32 bytes device name (NUL-padded)
	demuxTimeout  = 5 * time.Second
)

// demux shares one listener out among the TCP transport, the RDMA
// transport's side channel and the probe.
type demux struct {
	ln      net.Listener
	codec   wire.Codec
	id      wire.ReplicaID
	log     *slog.Logger
	tcp     *subListener
	rdma    *subListener
	hasRDMA atomic.Bool
	device  atomic.Value // string
	wg      sync.WaitGroup
	once    sync.Once
}

func newDemux(ln net.Listener, cluster uint64, id wire.ReplicaID, log *slog.Logger) *demux {
	d := &demux{ln: ln, codec: wire.Codec{ClusterID: cluster, MaxFrameSize: wire.HeaderSize + probeAnsSize}, id: id, log: log,
		tcp: newSubListener(ln.Addr()), rdma: newSubListener(ln.Addr())}
	d.device.Store("")
	return d
}

func (d *demux) start() {
	d.wg.Add(1)
	go d.acceptLoop()
}

func (d *demux) close() {
	d.once.Do(func() {
		d.ln.Close()
		d.tcp.Close()
		d.rdma.Close()
	})
	d.wg.Wait()
}

func (d *demux) acceptLoop() {
	defer d.wg.Done()
	for {
		c, err := d.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			d.log.Warn("replication listener: accept failed", "err", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		d.wg.Add(1)
		go d.route(c)
	}
}

// route reads a connection's first frame header and hands the connection,
// that header still to be read, to whoever speaks it.
func (d *demux) route(c net.Conn) {
	defer d.wg.Done()
	var head [wire.HeaderSize]byte
	c.SetReadDeadline(time.Now().Add(demuxTimeout))
	if _, err := io.ReadFull(c, head[:]); err != nil {
		c.Close()
		return
	}
	c.SetReadDeadline(time.Time{})
	pc := &prefixConn{Conn: c, prefix: head[:]}
	switch head[5] {
	case typeTCPHello:
		d.tcp.deliver(pc)
	case typeRDMAHello:
		d.rdma.deliver(pc)
	case frameProbe:
		d.answerProbe(c, head[:])
	default:
		d.log.Warn("replication listener: a connection whose first frame is neither TCP's nor RDMA's hello nor a probe; closed",
			"remote", c.RemoteAddr().String(), "type", head[5])
		c.Close()
	}
}

func (d *demux) answerProbe(c net.Conn, head []byte) {
	defer c.Close()
	h, err := d.codec.ReadHeader(head)
	if err != nil {
		d.log.Warn("replication listener: bad probe", "remote", c.RemoteAddr().String(), "err", err)
		return
	}
	b := make([]byte, h.FrameSize())
	copy(b, head)
	c.SetDeadline(time.Now().Add(demuxTimeout))
	if _, err := io.ReadFull(c, b[wire.HeaderSize:]); err != nil {
		return
	}
	_, p, err := d.codec.OpenFrame(b)
	if err != nil || len(p) != probeSize {
		d.log.Warn("replication listener: bad probe", "remote", c.RemoteAddr().String(), "err", err)
		return
	}
	le := binary.LittleEndian
	from, to := le.Uint32(p[0:]), le.Uint32(p[4:])
	if wire.ReplicaID(to) != d.id {
		d.log.Warn("replication listener: probe for another replica", "from", from, "to", to)
		return
	}
	ans := make([]byte, probeAnsSize)
	le.PutUint32(ans[0:], uint32(d.id))
	le.PutUint32(ans[4:], from)
	if d.hasRDMA.Load() {
		ans[8] = 1
		copy(ans[16:], d.device.Load().(string))
	}
	out, err := d.codec.AppendFrame(nil, frameProbeAns, ans)
	if err == nil {
		c.Write(out)
	}
}

// probePeer asks the peer at addr whether it has an RDMA transport up.
func probePeer(ctx context.Context, cluster uint64, me, peer wire.ReplicaID, addr string) (has bool, device string, err error) {
	codec := wire.Codec{ClusterID: cluster, MaxFrameSize: wire.HeaderSize + probeAnsSize}
	dctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	var dl net.Dialer
	c, err := dl.DialContext(dctx, "tcp", addr)
	if err != nil {
		return false, "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	p := make([]byte, probeSize)
	binary.LittleEndian.PutUint32(p[0:], uint32(me))
	binary.LittleEndian.PutUint32(p[4:], uint32(peer))
	req, _ := codec.AppendFrame(nil, frameProbe, p)
	if _, err := c.Write(req); err != nil {
		return false, "", err
	}
	b := make([]byte, wire.HeaderSize+probeAnsSize)
	if _, err := io.ReadFull(c, b); err != nil {
		return false, "", fmt.Errorf("reading the probe's answer: %w", err)
	}
	h, a, err := codec.OpenFrame(b)
	if err != nil {
		return false, "", err
	}
	le := binary.LittleEndian
	if h.Type != frameProbeAns || wire.ReplicaID(le.Uint32(a[0:])) != peer || wire.ReplicaID(le.Uint32(a[4:])) != me {
		return false, "", errors.New("a probe answer of another replica")
	}
	name := a[16:]
	if i := slices.Index(name, 0); i >= 0 {
		name = name[:i]
	}
	return a[8] == 1, string(name), nil
}

// prefixConn is a connection whose first bytes were read already.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixConn) Read(b []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(b, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}

// subListener is a net.Listener fed by the demultiplexer.
type subListener struct {
	addr net.Addr
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newSubListener(addr net.Addr) *subListener {
	return &subListener{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *subListener) deliver(c net.Conn) {
	select {
	case l.ch <- c:
	case <-l.done:
		c.Close()
	}
}

func (l *subListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *subListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *subListener) Addr() net.Addr { return l.addr }
