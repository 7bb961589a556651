package client

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"

	"github.com/vestalabs/vesta/client/proto"
)

// conn is one connection to one server, shared by every call to it.
type conn struct {
	c    *Client
	addr string

	mu      sync.Mutex
	nc      net.Conn // nil until dialled
	w       *proto.Writer
	queued  []*op // sent before the connection was up
	pending pendingTable
	nextID  uint64
	err     error // set once the connection failed; pending and queued are then empty

	// For the sweeper (hedge.go), in coarse-clock ns: since when the
	// connection has owed an answer (set when a request finds nothing
	// else waiting), when the last answer came, and a smoothed estimate of
	// the response time.
	owedSince, lastRecv int64
	srtt, rttvar        int64
	sampled             bool
	// lastOK is when the last successful answer to a call came (not to a
	// status request): failures noted before it are history (errors.go).
	lastOK atomic.Int64
}

// connTo returns the client's connection to addr, starting to dial one if
// there is none. It does not wait for the dial.
func (c *Client) connTo(addr string) (*conn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	cn := c.conns[addr]
	if cn == nil {
		cn = &conn{c: c, addr: addr}
		c.conns[addr] = cn
		go cn.dial()
	}
	return cn, nil
}

// dial connects, sends the preamble, sends the requests queued meanwhile
// and starts the reader; on failure it fails the connection.
func (cn *conn) dial() {
	d := net.Dialer{Timeout: cn.c.opts.DialTimeout}
	nc, err := d.Dial("tcp", cn.addr)
	if err == nil {
		if tc, ok := nc.(*net.TCPConn); ok {
			_ = tc.SetNoDelay(true)
		}
		if _, err = nc.Write(proto.Preamble[:]); err != nil {
			nc.Close()
		}
	}
	if err != nil {
		cn.fail(fmt.Errorf("vesta client: connecting to %s: %w", cn.addr, err), connFailure("connecting", err))
		return
	}
	w := proto.NewWriter(nc, proto.WriterOptions{
		WriteTimeout: cn.c.opts.WriteTimeout,
		OnError: func(err error) {
			cn.fail(fmt.Errorf("vesta client: writing to %s: %w", cn.addr, err), connFailure("writing", err))
		},
		DirectWrites: true, // a lone request leaves at once (docs/PERFORMANCE.md step 20)
	})
	cn.mu.Lock()
	if cn.err != nil { // the client closed meanwhile
		cn.mu.Unlock()
		nc.Close()
		w.Close()
		return
	}
	cn.nc, cn.w = nc, w
	queued := cn.queued
	cn.queued = nil
	var werr error
	for _, o := range queued {
		if werr = cn.sendLocked(o); werr != nil {
			break
		}
	}
	cn.mu.Unlock()
	go cn.readLoop()
	if werr != nil {
		cn.fail(fmt.Errorf("vesta client: writing to %s: %w", cn.addr, werr), connFailure("writing", werr))
	}
}

// tooOldHint explains a server that closes a new connection unanswered.
var tooOldHint = "if it is a vestad older than client protocol " + proto.CurrentVersion.String() +
	", it closes this client's connections so: upgrade the servers before the clients"

// submit sends o on this connection, or queues it until it is dialled.
func (cn *conn) submit(o *op) {
	cn.mu.Lock()
	if err := cn.err; err != nil {
		cn.mu.Unlock()
		o.attemptFailed(cn.addr, err)
		return
	}
	if cn.w == nil {
		if len(cn.queued) == 0 && cn.pending.len() == 0 {
			cn.c.touch()
			cn.owedSince = cn.c.now.Load()
		}
		cn.queued = append(cn.queued, o)
		cn.mu.Unlock()
		return
	}
	err := cn.sendLocked(o)
	cn.mu.Unlock()
	if err != nil {
		cn.fail(fmt.Errorf("vesta client: writing to %s: %w", cn.addr, err), connFailure("writing", err))
	}
}

// sendLocked numbers o's request, records it as pending and queues its
// frame on the writer, all under cn.mu: whoever takes o from pending finds
// its frame already encoded. An abandoned o is dropped.
func (cn *conn) sendLocked(o *op) error {
	if o.sess != nil {
		o.req.Low = o.sess.lowMark()
	}
	o.sent.Add(1) // before the check: see abandon
	if o.state.Load() != 0 {
		return nil
	}
	cn.nextID++
	o.req.ID = cn.nextID
	alone := cn.pending.len() == 0
	if alone {
		cn.c.touch()
	}
	o.sentAt = cn.c.now.Load()
	if alone {
		cn.owedSince = o.sentAt
	}
	cn.pending.put(o.req.ID, o)
	if alone {
		// Nothing else in flight here: no other request follows this one
		// soon, so it leaves at once (proto.WriteRequestAlone).
		return cn.w.WriteRequestAlone(&o.req)
	}
	return cn.w.WriteRequest(&o.req)
}

func (cn *conn) readLoop() {
	rd := proto.NewReader(cn.nc, 64<<10, proto.DefaultMaxFrameSize)
	answered := false
	for {
		body, err := rd.Next()
		if err != nil {
			what := connFailure("reading", err)
			if !answered && errors.Is(err, io.EOF) {
				// A vestad older than this client's protocol reads the
				// preamble, logs the version and closes, answering nothing.
				what += " before answering anything (" + tooOldHint + ")"
				err = fmt.Errorf("%w (%s)", err, tooOldHint)
			}
			cn.fail(fmt.Errorf("vesta client: reading from %s: %w", cn.addr, err), what)
			return
		}
		answered = true
		resp, err := proto.DecodeResponse(body)
		if err != nil {
			cn.fail(fmt.Errorf("vesta client: from %s: %w", cn.addr, err), "a malformed response: "+err.Error())
			return
		}
		if resp.ID == 0 && resp.Status != proto.StatusOK {
			// No request has ID 0: the server refuses the connection (too
			// many connections, a protocol version it does not speak), and
			// closes it; its message says why.
			msg := string(resp.Value)
			cn.fail(&ServerError{cn.addr, msg}, "refused the connection: "+msg)
			return
		}
		now := cn.c.now.Load()
		cn.mu.Lock()
		cn.lastRecv = now
		o := cn.pending.take(resp.ID)
		if o != nil {
			cn.c.sampleLocked(cn, now-o.sentAt)
			if resp.Status == proto.StatusOK && !o.fixed && cn.lastOK.Load() != now {
				cn.lastOK.Store(now)
			}
		}
		cn.mu.Unlock()
		if o == nil {
			continue // timed out, or its caller gave up
		}
		o.handle(cn.addr, resp) // resp.Value aliases the read buffer until the next frame
	}
}

// fail marks the connection failed with err, fails its queued and pending
// requests' attempts, closes it and forgets it, so the next attempt dials
// again; what is the failure in words for the server's note (errors.go),
// "" for none (the client closed). Idempotent.
func (cn *conn) fail(err error, what string) {
	cn.mu.Lock()
	if cn.err != nil {
		cn.mu.Unlock()
		return
	}
	cn.err = err
	pending, queued := cn.pending.takeAll(), cn.queued
	cn.queued = nil
	nc, w := cn.nc, cn.w
	cn.mu.Unlock()
	c := cn.c
	c.mu.Lock()
	if c.conns[cn.addr] == cn {
		delete(c.conns, cn.addr)
	}
	if what != "" {
		c.noteLocked(cn.addr, noteFailed, what, cn.lastOK.Load())
	}
	c.mu.Unlock()
	if nc != nil {
		nc.Close()
	}
	for _, o := range queued {
		o.attemptFailed(cn.addr, err)
	}
	for _, o := range pending {
		o.attemptFailed(cn.addr, err)
	}
	if w != nil {
		// Not here: fail may run on the writer's own goroutine (OnError).
		// With the connection closed, its last flush fails at once.
		go w.Close()
	}
}
