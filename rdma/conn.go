//go:build rdma

package rdma

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"time"

	"github.com/vestalabs/vesta/cgo/verbs"
	"github.com/vestalabs/vesta/engine/transport"
	"github.com/vestalabs/vesta/engine/wire"
)

// conn is one RC connection to a peer and everything it owns: the side
// channel, the completion channel, CQ and QP, the registered receive and
// send slots, and the C-memory batches. One goroutine (the peer's) owns it;
// two helpers (the completion-channel waiter and the side-channel watcher)
// only signal it. teardown frees it all, in the order cgo/verbs documents.
type conn struct {
	p  *peer
	nc net.Conn

	ch       *verbs.CompChannel
	cq       *verbs.CQ
	qp       *verbs.QP
	rreg     *verbs.Region
	sreg     *verbs.Region
	rmr, smr *verbs.MR
	sb       *verbs.SendBatch
	rb       *verbs.RecvBatch
	wc       *verbs.Completions

	local, remote verbs.Endpoint
	rslots        int // receive slots here
	rsize         int // bytes per receive slot here
	sslots        int // send slots here
	cut           int // bytes per SEND: min(our slot, the peer's receive slot)
	maxSendWR     int

	credits    int   // the peer's receives this side may still consume
	peerSlots  int   // the receives the peer posted: credits never exceed it
	toReturn   int   // receives reposted here and not yet reported to the peer
	threshold  int   // toReturn that warrants a credit-only SEND
	freeSlots  []int // send slots not in flight
	slotFrames []int // frames completed by the SEND in each slot
	inflight   int   // send WRs posted and not completed
	stalled    bool  // frames are queued and no credit is left (counted once per stall)

	// The receive stream: bytes [start, end) of buf are received and not
	// yet delivered. Delivered bytes belong to the handler; buf is only
	// ever written past end.
	buf        []byte
	start, end int
	dec        wire.Decoder

	evch      chan struct{} // the waiter saw a completion event
	dead      chan struct{} // the side channel closed
	evDone    chan struct{}
	waitErr   error // why the waiter stopped, once evDone is closed
	watchDone chan struct{}
	started   bool // helpers running
}

// wrSend marks send work requests' IDs; the low bits are the slot, or
// wrCredit for a credit-only SEND.
const (
	wrSend   = 1 << 62
	wrCredit = 1<<32 - 1
)

// newConn allocates the connection's verbs resources and moves its QP to
// INIT with its receives posted, so the peer may send as soon as it knows
// the endpoint.
func (p *peer) newConn(nc net.Conn) (c *conn, err error) {
	t := p.t
	cfg := &t.cfg
	c = &conn{p: p, nc: nc, rslots: cfg.RecvSlots, rsize: cfg.SlotSize, sslots: cfg.SendSlots,
		dec: wire.Decoder{Codec: t.codec}, evch: make(chan struct{}, 1), dead: make(chan struct{}),
		evDone: make(chan struct{}), watchDone: make(chan struct{})}
	defer func() {
		if err != nil {
			c.nc = nil // the caller closes it
			c.teardown()
			c = nil
		}
	}()
	if c.ch, err = t.dev.NewCompChannel(); err != nil {
		return c, err
	}
	c.maxSendWR = c.sslots + 2 // + credit-only SENDs
	if c.cq, err = t.dev.NewCQ(c.rslots+c.maxSendWR+8, c.ch); err != nil {
		return c, err
	}
	if c.qp, err = t.pd.NewRCQP(verbs.QPConfig{SendCQ: c.cq, RecvCQ: c.cq, MaxSendWR: c.maxSendWR, MaxRecvWR: c.rslots}); err != nil {
		return c, err
	}
	if c.rreg, err = verbs.AllocRegion(c.rslots * c.rsize); err != nil {
		return c, err
	}
	if c.rmr, err = t.pd.Register(c.rreg, verbs.AccessLocalWrite); err != nil {
		return c, err
	}
	if c.sreg, err = verbs.AllocRegion(c.sslots * c.rsize); err != nil {
		return c, err
	}
	if c.smr, err = t.pd.Register(c.sreg, verbs.AccessLocalWrite); err != nil {
		return c, err
	}
	c.sb = verbs.NewSendBatch(c.maxSendWR, c.maxSendWR)
	c.rb = verbs.NewRecvBatch(c.rslots, c.rslots)
	c.wc = verbs.NewCompletions(64)
	if err = c.qp.ToInit(t.path, verbs.AccessLocalWrite); err != nil {
		return c, err
	}
	for i := range c.rslots {
		c.rb.Add(uint64(i), c.rmr.SGE(i*c.rsize, c.rsize))
	}
	if _, err = c.qp.PostRecv(c.rb); err != nil {
		return c, err
	}
	c.local, err = c.qp.LocalEndpoint(t.path, rand.Uint32N(1<<24))
	return c, err
}

func (c *conn) myHello() hello {
	t := c.p.t
	return hello{From: t.cfg.ID, To: c.p.id, RecvSlots: uint32(c.rslots), SlotSize: uint32(c.rsize), Endpoint: c.local}
}

// adopt takes the peer's parameters and brings the QP to RTS.
func (c *conn) adopt(h hello) error {
	t := c.p.t
	c.remote = h.Endpoint
	c.credits = int(h.RecvSlots)
	c.peerSlots = int(h.RecvSlots)
	c.cut = min(c.rsize, int(h.SlotSize))
	c.threshold = max(2, c.rslots/4)
	c.freeSlots = make([]int, c.sslots)
	for i := range c.freeSlots {
		c.freeSlots[i] = c.sslots - 1 - i
	}
	c.slotFrames = make([]int, c.sslots)
	if err := c.qp.ToRTR(t.path, c.local, c.remote); err != nil {
		return err
	}
	return c.qp.ToRTS(t.path, c.local.PSN)
}

func (c *conn) dialHandshake() error {
	t := c.p.t
	to := t.cfg.HandshakeTimeout
	if err := writeFrame(c.nc, t.codec, frameHello, c.myHello().payload(), to); err != nil {
		return err
	}
	fh, p, err := readFrame(c.nc, t.codec, to, false)
	if err != nil {
		return err
	}
	switch fh.Type {
	case transport.FrameRefusal:
		r, err := transport.ParseRefusal(p, c.p.id, c.p.addr, t.cfg.ID, t.cfg.ClusterID)
		if err != nil {
			return err
		}
		return r
	case frameAccept:
	default:
		return fmt.Errorf("hello answered by a frame of type %#x, want an accept (%#x) or a refusal (%#x)", fh.Type, frameAccept, transport.FrameRefusal)
	}
	h, err := parseHello(p)
	if err != nil {
		return err
	}
	if h.From != c.p.id || h.To != t.cfg.ID {
		return fmt.Errorf("accept from %d to %d, want from %d to %d", h.From, h.To, c.p.id, t.cfg.ID)
	}
	if err := c.adopt(h); err != nil {
		return err
	}
	if err := writeFrame(c.nc, t.codec, frameReady, nil, to); err != nil {
		return err
	}
	c.start2()
	return nil
}

func (c *conn) acceptHandshake(h hello) error {
	t := c.p.t
	to := t.cfg.HandshakeTimeout
	if err := c.adopt(h); err != nil {
		return err
	}
	if err := writeFrame(c.nc, t.codec, frameAccept, c.myHello().payload(), to); err != nil {
		return err
	}
	// The dialer is at RTS (so its receive side is ready) when it says so.
	fh, _, err := readFrame(c.nc, t.codec, to, false)
	if err != nil {
		return err
	}
	if fh.Type != frameReady {
		return fmt.Errorf("frame of type %#x instead of ready (%#x)", fh.Type, frameReady)
	}
	c.start2()
	return nil
}

// start2 starts the helpers: the completion-channel waiter and the
// side-channel watcher.
func (c *conn) start2() {
	c.started = true
	go func() {
		defer close(c.evDone)
		for {
			cq, err := c.ch.Wait(-1)
			if err != nil {
				c.waitErr = err // read after evDone closes
				return          // interrupted by teardown, or broken
			}
			if cq != nil {
				cq.AckEvents(1)
				select {
				case c.evch <- struct{}{}:
				default:
				}
			}
		}
	}()
	go func() {
		defer close(c.watchDone)
		var b [64]byte
		for {
			if _, err := c.nc.Read(b[:]); err != nil {
				close(c.dead)
				return
			}
			// Nothing is sent on the side channel after ready; bytes
			// are ignored.
		}
	}()
}

// errBroken carries the reason a connection is closed for.
type errBroken struct {
	reason string
	err    error
}

func (e *errBroken) Error() string { return e.reason + ": " + fmt.Sprint(e.err) }

// run drives the connection until it breaks or the transport closes.
func (c *conn) run() (string, error) {
	t := c.p.t
	spin := t.cfg.Spin
	var acceptSig chan struct{}
	if !c.p.dialer {
		acceptSig = c.p.accepted
	}
	idleSince := time.Now()
	for {
		if t.closing() {
			return "closing", nil
		}
		progressed, err := c.step()
		if err != nil {
			return brokenReason(err)
		}
		if progressed {
			idleSince = time.Now()
			continue
		}
		if spin > 0 && time.Since(idleSince) < spin {
			continue
		}
		if err := c.cq.ReqNotify(false); err != nil {
			return ReasonVerbsError, err
		}
		if progressed, err = c.step(); err != nil {
			return brokenReason(err)
		} else if progressed {
			idleSince = time.Now()
			continue
		}
		select {
		case <-c.evch:
		case <-c.p.wake:
		case <-c.dead:
			return ReasonPeerClosed, nil
		case <-c.evDone:
			// The waiter stops only when teardown interrupts it, which
			// comes after run; otherwise completions would go unnoticed.
			return ReasonVerbsError, fmt.Errorf("the completion channel's waiter stopped: %w", c.waitErr)
		case <-acceptSig:
			// The peer dialed again: it restarted, or lost this
			// connection. The new side channel is pending; re-signal so
			// the peer goroutine takes it after teardown.
			select {
			case c.p.accepted <- struct{}{}:
			default:
			}
			return ReasonSuperseded, nil
		case <-t.life.Done():
			return "closing", nil
		}
		idleSince = time.Now()
	}
}

func brokenReason(err error) (string, error) {
	var b *errBroken
	if errors.As(err, &b) {
		return b.reason, b.err
	}
	return ReasonVerbsError, err
}

// step polls once, handles what it found (delivering received frames and
// reposting receives), and posts what the credits allow. progressed says
// whether it did anything.
func (c *conn) step() (bool, error) {
	n, err := c.cq.Poll(c.wc)
	if err != nil {
		return false, err
	}
	if n > 0 {
		c.p.ls.completions.Add(uint64(n))
	}
	received := false
	for i := range n {
		wc := c.wc.At(i)
		if wc.WRID&wrSend != 0 {
			if err := wc.Err(); err != nil {
				return false, &errBroken{ReasonQPError, err}
			}
			c.inflight--
			if slot := int(wc.WRID &^ wrSend); slot != wrCredit {
				c.freeSlots = append(c.freeSlots, slot)
				c.slotFrames[slot] = 0
			}
			continue
		}
		if err := wc.Err(); err != nil {
			return false, &errBroken{ReasonQPError, err}
		}
		slot := int(wc.WRID)
		if wc.HasImm {
			if err := c.returnCredits(wc.Imm); err != nil {
				return false, err
			}
		}
		if int(wc.ByteLen) > c.rsize || slot >= c.rslots {
			return false, &errBroken{ReasonBadCredit, fmt.Errorf("receive %d completed with %d bytes; it holds %d", slot, wc.ByteLen, c.rsize)}
		}
		if wc.ByteLen > 0 {
			c.appendStream(c.rmr.Bytes()[slot*c.rsize : slot*c.rsize+int(wc.ByteLen)])
			received = true
		}
		c.rb.Add(uint64(slot), c.rmr.SGE(slot*c.rsize, c.rsize))
		c.toReturn++
	}
	if c.rb.Len() > 0 {
		if _, err := c.qp.PostRecv(c.rb); err != nil {
			return false, err
		}
	}
	if received {
		if err := c.deliver(); err != nil {
			return false, err
		}
	}
	posted, err := c.fill()
	if err != nil {
		return false, err
	}
	return n > 0 || posted, nil
}

// returnCredits adds the credits a peer's SEND returned. A peer that
// returns more than it has receives (credits plus our SENDs it has not
// reported never exceed its receive slots) is broken or hostile: believing
// it would overrun its receives.
func (c *conn) returnCredits(imm uint32) error {
	if uint64(imm) > uint64(c.peerSlots-c.credits) {
		return &errBroken{ReasonBadCredit, fmt.Errorf("peer returned %d credits; it has %d receives and %d of them are credited already",
			imm, c.peerSlots, c.credits)}
	}
	c.credits += int(imm)
	return nil
}

// appendStream adds received bytes to the stream, moving the undelivered
// tail to a fresh buffer when they do not fit (never reusing delivered
// bytes, which the handler owns).
func (c *conn) appendStream(b []byte) {
	if len(c.buf)-c.end < len(b) {
		need := c.end - c.start + len(b)
		nb := make([]byte, max(c.p.t.cfg.ReadBufferSize, need))
		c.end = copy(nb, c.buf[c.start:c.end])
		c.buf, c.start = nb, 0
	}
	c.end += copy(c.buf[c.end:], b)
}

// deliver decodes every whole frame of the stream and hands them to the
// handler in one batch. A frame that fails a check breaks the connection;
// the valid frames before it are delivered.
func (c *conn) deliver() error {
	t := c.p.t
	var batch []wire.Message
	var bytes int
	var ferr error
	for c.end-c.start >= wire.HeaderSize {
		h, err := c.dec.ReadHeader(c.buf[c.start:c.end])
		if err != nil {
			ferr = &errBroken{wire.Reason(err), err}
			break
		}
		size := h.FrameSize()
		if c.end-c.start < size {
			if cap(c.buf)-c.start < size {
				// Make room for the whole frame now, so that it lands
				// in one buffer.
				nb := make([]byte, max(t.cfg.ReadBufferSize, size))
				c.end = copy(nb, c.buf[c.start:c.end])
				c.buf, c.start = nb, 0
			}
			break
		}
		m, _, err := c.dec.Decode(c.buf[c.start : c.start+size])
		if err != nil {
			ferr = &errBroken{wire.Reason(err), err}
			break
		}
		if m.From != c.p.id {
			ferr = &errBroken{ReasonSenderMismatch, fmt.Errorf("%v from %d on replica %d's connection", m.Type, m.From, c.p.id)}
			break
		}
		if m.To != t.cfg.ID {
			ferr = &errBroken{ReasonMisrouted, fmt.Errorf("%v for replica %d reached replica %d", m.Type, m.To, t.cfg.ID)}
			break
		}
		batch = append(batch, m)
		c.start += size
		bytes += size
	}
	if len(batch) > 0 {
		t.st.FramesReceived.Add(uint64(len(batch)))
		t.st.BytesReceived.Add(uint64(bytes))
		t.st.Deliveries.Add(1)
		c.p.ls.framesReceived.Add(uint64(len(batch)))
		c.p.ls.bytesReceived.Add(uint64(bytes))
		t.handler(batch)
	}
	return ferr
}

// fill cuts queued frames into SENDs as far as credits and send slots
// allow, keeping the last credit for a credit-only SEND, and posts them
// as one chain.
func (c *conn) fill() (bool, error) {
	t := c.p.t
	p := c.p
	frames, nbytes := 0, 0
	for c.credits > 1 && len(c.freeSlots) > 0 && c.inflight < c.maxSendWR-1 {
		p.mu.Lock()
		if len(p.q) == 0 {
			p.mu.Unlock()
			break
		}
		slot := c.freeSlots[len(c.freeSlots)-1]
		c.freeSlots = c.freeSlots[:len(c.freeSlots)-1]
		dst := c.smr.Bytes()[slot*c.rsize : slot*c.rsize+c.cut]
		n, fr := 0, 0
		for n < len(dst) && len(p.q) > 0 {
			ch := p.q[0]
			k := copy(dst[n:], ch.b[ch.off:])
			n += k
			ch.off += k
			if ch.off == len(ch.b) {
				fr += ch.frames
				p.queued -= len(ch.b)
				if cap(ch.b) == chunkSize && len(p.free) < 4 {
					p.free = append(p.free, ch.b)
				}
				p.q[0] = nil
				p.q = p.q[1:]
			}
		}
		p.mu.Unlock()
		c.slotFrames[slot] = fr
		c.sb.SendImm(wrSend|uint64(slot), c.smr.SGE(slot*c.rsize, n), uint32(c.toReturn), verbs.SendSignaled)
		c.toReturn = 0
		c.credits--
		c.inflight++
		frames += fr
		nbytes += n
	}
	if c.credits <= 1 {
		p.mu.Lock()
		waiting := len(p.q) > 0
		p.mu.Unlock()
		if waiting && !c.stalled {
			p.ls.creditStalls.Add(1)
		}
		c.stalled = waiting
	} else {
		c.stalled = false
	}
	if c.toReturn >= c.threshold && c.credits >= 1 && c.inflight < c.maxSendWR {
		c.sb.SendImm(wrSend|wrCredit, verbs.SGE{}, uint32(c.toReturn), verbs.SendSignaled)
		c.toReturn = 0
		c.credits--
		c.inflight++
	}
	if c.sb.Len() == 0 {
		return false, nil
	}
	k := c.sb.Len()
	if posted, err := c.qp.PostSend(c.sb); err != nil {
		c.inflight -= k - posted
		return false, err
	}
	t.st.WriteCalls.Add(1)
	t.st.FramesSent.Add(uint64(frames))
	t.st.BytesSent.Add(uint64(nbytes))
	p.ls.framesSent.Add(uint64(frames))
	p.ls.bytesSent.Add(uint64(nbytes))
	return true, nil
}

// teardown frees everything the connection holds, in cgo/verbs' order:
// helpers stopped, QP, MRs, regions, CQ, channel, C batches. Frames in
// SENDs that did not complete count as lost.
func (c *conn) teardown() {
	t := c.p.t
	if c.nc != nil {
		t.untrack(c.nc)
		c.nc.Close()
	}
	if c.started {
		c.ch.Interrupt()
		<-c.evDone
		<-c.watchDone
	}
	lost := 0
	for _, f := range c.slotFrames {
		lost += f
	}
	if lost > 0 {
		t.st.DroppedOnDisconnect.Add(uint64(lost))
	}
	logErr := func(what string, err error) {
		if err != nil {
			t.log.Error("rdma teardown", "what", what, "err", err)
		}
	}
	if c.qp != nil {
		logErr("qp", c.qp.Close())
	}
	if c.rmr != nil {
		logErr("receive mr", c.rmr.Deregister())
	}
	if c.smr != nil {
		logErr("send mr", c.smr.Deregister())
	}
	if c.rreg != nil {
		logErr("receive region", c.rreg.Free())
	}
	if c.sreg != nil {
		logErr("send region", c.sreg.Free())
	}
	if c.cq != nil {
		logErr("cq", c.cq.Close())
	}
	if c.ch != nil {
		logErr("completion channel", c.ch.Close())
	}
	if c.sb != nil {
		c.sb.Free()
	}
	if c.rb != nil {
		c.rb.Free()
	}
	if c.wc != nil {
		c.wc.Free()
	}
}
