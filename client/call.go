package client

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vestalabs/vesta/client/proto"
)

// This file is the one path every call takes. A call is an op record that
// moves between the client's structures: a session's queue (waiting for a
// sequence number), the queue of writes waiting for a session to open, a
// connection's dial queue or its pending map (sent, waiting for the
// response), or a retry timer. Whoever removes it from one of them, under
// that structure's lock, owns it and moves it on; no goroutine, context or
// timer is made per call. Attempt and call timeouts are enforced by the
// client's sweeper (hedge.go), which scans the connections' pending
// requests, and by send, which every attempt passes through.
//
// An op finishes once: finish and abandon (a blocking caller whose context
// ended) race on state. The owner that finds an op abandoned drops it (it
// is then never reused: the abandoning caller may still read it).

// op is one call in progress.
type op struct {
	c     *Client
	req   proto.Request // Key, Value, Expect alias the caller's slices
	state atomic.Int32  // 0 while in progress; 1 once finished or abandoned
	sent  atomic.Int32  // sends in the current session (see abandon)
	seq   atomic.Uint64 // the write's sequence number while it holds one
	sess  *session      // a write's session (set before seq)
	write bool
	// bounded: a read at any replica (proto.ReadBounded), which goes to the
	// servers in turn, waits at one by design (the hedge does not move it)
	// and tells nothing of who leads; behind: a server answered that it had
	// not applied the read's min slot (ErrReplicaBehind).
	bounded bool
	behind  atomic.Bool

	// Owned by whoever holds the op.
	addr   string        // the server the next attempt goes to
	delay  time.Duration // the next retry's backoff
	hops   int           // redirects followed in a row
	sentAt int64         // c.now at the last send
	fixed  bool          // one attempt at addr, no retry (Status)
	// deadline is c.now past which the call fails (Options.CallTimeout;
	// 0: none). Set at the start, read by whoever owns the op.
	deadline int64

	// Completion: exactly one of these is set.
	putDone func(error)
	getDone func(value []byte, found bool, err error)
	onDone  func(o *op, resp proto.Response, err error) // internal (session opening)
	ch      chan struct{}                               // a blocking caller: resp, err hold the outcome
	resp    proto.Response
	err     error
}

// stays reports whether o stays at its server while the server is silent:
// a status request asks that server, and a bounded read may wait there by
// design (AttemptTimeout still bounds both).
func (o *op) stays() bool { return o.fixed || o.bounded }

var opPool = sync.Pool{New: func() any { return new(op) }}

func (c *Client) newOp() *op {
	o := opPool.Get().(*op)
	o.c = c
	o.addr = *c.leader.Load()
	o.delay = c.opts.BackoffMin
	if c.opts.CallTimeout > 0 {
		o.deadline = c.now.Load() + int64(c.opts.CallTimeout)
	}
	return o
}

// release returns a finished op to the pool. Only its owner may, and never
// an abandoned one.
func (o *op) release() {
	ch := o.ch
	*o = op{} // the atomics are zero: nothing else refers to o
	o.ch = ch
	opPool.Put(o)
}

// ErrTooLarge is returned, without sending anything, for a key above
// proto.MaxKeySize or a value above proto.MaxValueSize.
var ErrTooLarge = errors.New("vesta client: key or value too large")

func checkSize(key, value, expect []byte) error {
	if len(key) > proto.MaxKeySize || len(value) > proto.MaxValueSize || len(expect) > proto.MaxValueSize {
		return fmt.Errorf("%w: key %d bytes (limit %d), value %d and expected value %d bytes (limit %d)",
			ErrTooLarge, len(key), proto.MaxKeySize, len(value), len(expect), proto.MaxValueSize)
	}
	return nil
}

// PutAsync sets key to value and calls done with the outcome, exactly once.
// It does not wait: many calls may be in flight, and they are sent in
// batches. Writes are exactly-once as with Put; PutAsync retries (through
// redirects, unavailable servers, failed connections and attempt timeouts)
// until the write is acknowledged, the server refuses it for good,
// Options.CallTimeout passes (a *CallError, see the package comment), or the
// client is closed (ErrClosed, which matches no ErrOutcomeUnknown although
// the write may have applied, as with Put).
//
// The caller must leave key and value unmodified until done runs. done runs
// on one of the client's goroutines (a connection's reader, mostly), or on
// the goroutine calling Close, or before PutAsync returns when the call
// fails at once (ErrTooLarge, ErrClosed); it must not block, since the
// responses of its connection wait while it runs. It may start other calls.
func (c *Client) PutAsync(key, value []byte, done func(err error)) {
	if err := checkSize(key, value, nil); err != nil {
		done(err)
		return
	}
	o := c.newOp()
	o.req = proto.Request{Op: proto.OpPut, Key: key, Value: value}
	o.putDone = done
	c.start(o)
}

// GetAsync reads key (as Options.Reads says), and calls done with its value
// and whether it exists, exactly once; see PutAsync for the rules of done
// and of key. The value passed to done is the caller's.
func (c *Client) GetAsync(key []byte, done func(value []byte, found bool, err error)) {
	if err := checkSize(key, nil, nil); err != nil {
		done(nil, false, err)
		return
	}
	o := c.newOp()
	o.req = proto.Request{Op: proto.OpGet, Key: key, Read: c.opts.Reads.wire()}
	if c.opts.Reads == ReadAtAnyReplica {
		c.bound(o, BoundedRead{})
	}
	o.getDone = done
	c.start(o)
}

// Get returns key's value and whether the key exists, read as Options.Reads
// says.
func (c *Client) Get(ctx context.Context, key []byte) (value []byte, found bool, err error) {
	if c.opts.Reads == ReadAtAnyReplica {
		r, err := c.GetBounded(ctx, key, BoundedRead{})
		return r.Value, r.Found, err
	}
	resp, err := c.do(ctx, proto.Request{Op: proto.OpGet, Key: key, Read: c.opts.Reads.wire()})
	if err != nil {
		return nil, false, err
	}
	return resp.Value, resp.Found, nil
}

// BoundedRead says how GetBounded reads.
type BoundedRead struct {
	// MinSlot is the slot the answer's state must have reached: the server
	// answers once its replica has applied every slot below it. The client
	// raises it to SeenSlot, so a read never goes back before what this
	// client has seen; a higher one (another client's SeenSlot) reads at
	// least what that client saw.
	MinSlot Slot
	// AllowStale has the server answer at once from whatever its replica
	// has applied, instead of waiting for MinSlot; ReadResult.Stale says
	// whether that was below it.
	AllowStale bool
	// Addr is the server asked first ("": the client's servers in turn);
	// if it fails or falls behind, the client asks its servers in turn.
	Addr string
}

// ReadResult is the answer to a GetBounded.
type ReadResult struct {
	Value []byte // the caller's
	Found bool
	// Applied is the slot of the state read: every command chosen below it
	// is in it. At least the read's min slot unless Stale.
	Applied Slot
	// Stale (only with AllowStale) says the replica had not applied the
	// read's min slot: the value may be older than state this client (or
	// the one whose slot it passed) has seen.
	Stale bool
}

// GetBounded reads key at any replica, leader or not, once that replica has
// applied every slot below r.MinSlot raised to SeenSlot (RSL's
// bounded-staleness read; see the package comment), or at once with
// r.AllowStale. It retries at the next server when one fails or has not
// caught up within its wait (about a second); a call that runs out of time
// while the servers were behind fails with a *CallError that matches
// ErrReplicaBehind. Needs servers of protocol 0.2 or later.
func (c *Client) GetBounded(ctx context.Context, key []byte, r BoundedRead) (ReadResult, error) {
	if err := checkSize(key, nil, nil); err != nil {
		return ReadResult{}, err
	}
	if err := ctx.Err(); err != nil {
		return ReadResult{}, c.callError(proto.OpGet, "", err, false) // nothing was sent
	}
	o := c.newOp()
	o.req = proto.Request{Op: proto.OpGet, Key: key}
	c.bound(o, r)
	resp, err := c.wait(ctx, o)
	if err != nil {
		return ReadResult{}, err
	}
	return ReadResult{Value: resp.Value, Found: resp.Found, Applied: Slot(resp.Applied), Stale: resp.Stale}, nil
}

// bound makes the get o a read at any replica as r says.
func (c *Client) bound(o *op, r BoundedRead) {
	o.bounded = true
	o.req.Read = proto.ReadBounded
	o.req.MinSlot = max(uint64(r.MinSlot), c.seen.Load())
	o.req.AllowStale = r.AllowStale
	o.addr = r.Addr
	if o.addr == "" {
		o.addr = c.readAddr()
	}
}

// Put sets key to value.
func (c *Client) Put(ctx context.Context, key, value []byte) error {
	_, err := c.do(ctx, proto.Request{Op: proto.OpPut, Key: key, Value: value})
	return err
}

// Delete removes key and reports whether it existed.
func (c *Client) Delete(ctx context.Context, key []byte) (existed bool, err error) {
	resp, err := c.do(ctx, proto.Request{Op: proto.OpDelete, Key: key})
	return resp.Found, err
}

// CAS sets key to value if its current value equals expect (a missing key's
// value is empty) and reports whether it did.
func (c *Client) CAS(ctx context.Context, key, expect, value []byte) (swapped bool, err error) {
	resp, err := c.do(ctx, proto.Request{Op: proto.OpCAS, Key: key, Expect: expect, Value: value})
	return resp.Swapped, err
}

// Status asks the server at addr (not necessarily one of the client's) for
// its status. It does not retry: it fails with the connection's error, or
// when ctx ends with a *CallError naming addr's last failure.
func (c *Client) Status(ctx context.Context, addr string) (ServerStatus, error) {
	var st ServerStatus
	o := c.newOp()
	o.req = proto.Request{Op: proto.OpStatus}
	o.addr, o.fixed = addr, true
	resp, err := c.wait(ctx, o)
	if err != nil {
		return st, err
	}
	if resp.Status != proto.StatusOK {
		return st, &ServerError{addr, resp.Status.String() + ": " + string(resp.Value)}
	}
	if err := json.Unmarshal(resp.Value, &st); err != nil {
		return st, fmt.Errorf("vesta client: status of %s: %w", addr, err)
	}
	return st, nil
}

// do runs one request to completion, retrying as the package comment says,
// and waits for it.
func (c *Client) do(ctx context.Context, req proto.Request) (proto.Response, error) {
	if err := checkSize(req.Key, req.Value, req.Expect); err != nil {
		return proto.Response{}, err
	}
	if err := ctx.Err(); err != nil {
		return proto.Response{}, c.callError(req.Op, "", err, false) // nothing was sent
	}
	o := c.newOp()
	o.req = req
	return c.wait(ctx, o)
}

// wait starts o and waits for its outcome or for ctx to end. A call whose
// ctx ends fails with a *CallError that wraps ctx.Err().
func (c *Client) wait(ctx context.Context, o *op) (proto.Response, error) {
	if o.ch == nil {
		o.ch = make(chan struct{}, 1)
	}
	ch := o.ch
	// Read before the op leaves this goroutine: others own it meanwhile.
	opName, only := o.req.Op, ""
	if o.fixed {
		only = o.addr
	}
	c.start(o)
	select {
	case <-ch:
	case <-ctx.Done():
		if write, sent, ok := o.abandon(); ok {
			e := c.callError(opName, only, ctx.Err(), write && sent > 0)
			e.Behind = o.behind.Load() // o is not reused once abandoned
			return proto.Response{}, e
		}
		<-ch // finished meanwhile
	}
	resp, err := o.resp, o.err
	o.release()
	return resp, err
}

// abandon ends o for a caller that stops waiting: it reports whether it
// did (o had not finished), whether o is a write and how often it was sent
// in its session. A write's sequence number is finished at once, so the low
// mark moves past it as the blocking path always did.
func (o *op) abandon() (write bool, sent int32, ok bool) {
	if !o.state.CompareAndSwap(0, 1) {
		return false, 0, false
	}
	// A send counts itself before it checks state, so a send that this
	// load misses sees state set and does not happen.
	sent = o.sent.Load()
	if q := o.seq.Swap(0); q != 0 {
		o.sess.end(q)
	}
	return o.write, sent, true
}

// finish completes o with its outcome, unless it already finished or was
// abandoned. The caller must own o; o may be reused once finish returns.
func (o *op) finish(resp proto.Response, err error) {
	if !o.state.CompareAndSwap(0, 1) {
		return
	}
	if q := o.seq.Swap(0); q != 0 {
		o.sess.end(q)
	}
	switch {
	case o.putDone != nil:
		done := o.putDone
		o.release()
		done(err)
	case o.getDone != nil:
		done := o.getDone
		o.release()
		if err != nil {
			done(nil, false, err)
			return
		}
		done(copyValue(resp.Value), resp.Found, nil)
	case o.onDone != nil:
		o.onDone(o, resp, err)
	default:
		resp.Value = copyValue(resp.Value)
		o.resp, o.err = resp, err
		o.ch <- struct{}{}
	}
}

// copyValue copies a value out of a connection's read buffer.
func copyValue(v []byte) []byte {
	if len(v) == 0 {
		return nil
	}
	return append([]byte(nil), v...)
}

// start sends o on its way: a write first needs a session and a sequence
// number.
func (c *Client) start(o *op) {
	o.write = o.req.Op.IsWrite()
	if !o.write {
		c.send(o)
		return
	}
	c.startWrite(o)
}

// startWrite gives the write o a sequence number in the client's session,
// opening one if there is none, and sends it; if the window is full it
// queues o, to be started when the window moves.
func (c *Client) startWrite(o *op) {
	c.sessMu.Lock()
	if c.isClosed.Load() {
		c.sessMu.Unlock()
		o.finish(proto.Response{}, ErrClosed)
		return
	}
	s := c.sess
	if s == nil {
		c.sessWaiters = append(c.sessWaiters, o)
		open := !c.opening
		c.opening = true
		c.sessMu.Unlock()
		if open {
			c.openSession()
		}
		return
	}
	c.sessMu.Unlock()
	o.sess = s
	switch s.begin(o) {
	case beginQueued:
		return
	case beginClosed:
		o.finish(proto.Response{}, ErrClosed)
		return
	}
	c.launch(o)
}

// launch sends a write that just got its sequence number, unless its caller
// abandoned it meanwhile.
func (c *Client) launch(o *op) {
	o.req.Client, o.req.Seq = o.sess.id, o.seq.Load()
	if o.state.Load() != 0 {
		if q := o.seq.Swap(0); q != 0 {
			o.sess.end(q)
		}
		return
	}
	c.send(o)
}

// openSession opens a new session through the log and then starts the
// writes that wait for it. It sends client 0, which asks the store to issue
// a session ID (in log order, never issued twice); the answer's value is the
// ID. The store never reopens an issued ID it evicted, so a late copy of a
// write of an evicted session is refused forever, never applied under a
// session resurrected empty.
//
// A retried open (its answer lost, a server that timed out) issues another
// ID each time it applies; the client takes the ID of the one answer it
// handles, and the others are orphans, opened and never used (the store
// evicts them first: nothing touches them). That cannot break exactly-once:
//   - an open is one op, and an op has at most one attempt in flight (an
//     attempt leaves a connection's pending table before the op is sent
//     again, and a late answer to it finds nothing pending and is dropped),
//     so one open gives the client one session; and one open runs at a time
//     (c.opening), so the writes waiting for it all get that session;
//   - no write ever carries an orphan's ID: a session exists in the client
//     only once its ID came back;
//   - a write carries one session in all its sends; it moves to a new
//     session only when its only send was refused as session-expired (then
//     it applied nowhere, and no other copy of it exists); a write sent more
//     than once that is refused so fails with ErrOutcomeUnknown instead,
//     since an earlier copy may have applied before the eviction;
//   - every copy of a write of an evicted session stays refused (issued IDs
//     are never reopened), and within a live session the store applies a
//     sequence number once (package comment).
//
// So each write applies at most once over all of its sessions, and once if
// acknowledged.
//
// A server older than issued IDs refuses client 0 ("client ID 0"). The
// client does not fall back to an ID of its own, which would bring back the
// hole issued IDs close (a duplicate open applied after the session's
// eviction reopens it empty): the waiting writes fail with ErrServerTooOld,
// and the next write tries to open again.
func (c *Client) openSession() {
	o := c.newOp()
	o.req = proto.Request{Op: proto.OpOpenSession} // client 0: the store issues the ID
	o.onDone = func(o *op, resp proto.Response, err error) {
		addr := o.addr
		var id uint64
		if err == nil {
			// resp.Value aliases the read buffer: read it before anything else.
			if len(resp.Value) == 8 {
				id = binary.LittleEndian.Uint64(resp.Value)
			}
			if id == 0 {
				err = &ServerError{addr, fmt.Sprintf("open-session answered with %d bytes, not a session ID", len(resp.Value))}
			}
		}
		o.release()
		var se *ServerError
		if errors.As(err, &se) && strings.Contains(se.Msg, "client ID 0") {
			lvl := slog.LevelDebug
			if !c.warnedOld.Swap(true) {
				lvl = slog.LevelWarn // once: an application may retry its writes in a loop
			}
			c.log.Log(context.Background(), lvl, "vesta client: the server does not issue session IDs; writes fail until every replica is upgraded", "addr", se.Addr, "msg", se.Msg)
			err = fmt.Errorf("%w (server %s: %s)", ErrServerTooOld, se.Addr, se.Msg)
		}
		var s *session
		if err == nil {
			s = newSession(id, c.opts.MaxUnacked)
		}
		c.sessMu.Lock()
		c.opening = false
		if err == nil {
			c.sess = s
		}
		waiters := c.sessWaiters
		c.sessWaiters = nil
		c.sessMu.Unlock()
		if err != nil {
			var ce *CallError
			timedOut := errors.As(err, &ce)
			for _, w := range waiters {
				if timedOut {
					// Out of time: each write's own CallError (none was sent).
					w.finish(proto.Response{}, &CallError{Op: w.req.Op.String(), Err: fmt.Errorf("opening a session: %w", ce.Err), Servers: ce.Servers})
					continue
				}
				w.finish(proto.Response{}, fmt.Errorf("vesta client: opening a session: %w", err))
			}
			return
		}
		c.log.Debug("vesta client: session opened", "session", s.id, "addr", addr)
		for _, w := range waiters {
			if w.state.Load() == 0 {
				c.startWrite(w)
			}
		}
	}
	c.send(o)
}

// send makes one attempt of o at o.addr, unless o's call is past its
// deadline.
func (c *Client) send(o *op) {
	if o.deadline != 0 && c.now.Load() >= o.deadline {
		o.timedOut()
		return
	}
	cn, err := c.connTo(o.addr)
	if err != nil {
		o.finish(proto.Response{}, err)
		return
	}
	cn.submit(o)
}

var errSessionExpired = errors.New("vesta client: session expired")

// replicaFailed begins the message of an unavailable answer from a server
// whose replica failed for good (a full log, a sync error); it exits next.
var replicaFailed = []byte("replica failed")

// behindMsg is in the message of an unavailable answer to a bounded read at
// a replica that had not applied the read's min slot within its wait
// (vestad's behindError).
var behindMsg = []byte(" is behind: ")

// readBudget begins the message of an unavailable answer to a get that
// would have brought the values its batch returned past the server's bound
// (vestad's kv.MaxReadBytes): sent again, it is answered.
var readBudget = []byte("read result budget")

// errAttemptTimeout fails an attempt that got no answer in AttemptTimeout.
var errAttemptTimeout = errors.New("vesta client: no answer within the attempt timeout")

// timedOut fails o, whose call ran past Options.CallTimeout; its owner
// calls it. A write that was sent may have applied.
func (o *op) timedOut() {
	if o.state.Load() != 0 {
		return
	}
	c, only := o.c, ""
	if o.fixed {
		only = o.addr
	}
	e := c.callError(o.req.Op, only, callTimeoutError{c.opts.CallTimeout}, o.write && o.sent.Load() > 0)
	e.Behind = o.behind.Load()
	o.finish(proto.Response{}, e)
}

// handle takes the response to o's attempt at addr.
func (o *op) handle(addr string, resp proto.Response) {
	c := o.c
	if resp.Status == proto.StatusOK && resp.Applied != 0 {
		// Before the call returns: the caller's next read must see it.
		c.noteSeen(resp.Applied)
	}
	if o.state.Load() != 0 {
		return // abandoned
	}
	if o.fixed {
		o.finish(resp, nil)
		return
	}
	switch resp.Status {
	case proto.StatusOK:
		if !o.bounded {
			c.setLeader(addr) // a bounded read's server may be any
		}
		o.finish(resp, nil)
		return
	case proto.StatusNotLeader:
		c.log.Debug("vesta client: not the leader", "addr", addr, "leader", resp.Leader, "leader_addr", resp.LeaderAddr)
		c.noteNotLeader(addr, resp.LeaderAddr)
		if resp.LeaderAddr != "" && resp.LeaderAddr != addr && o.hops < len(c.addrs) {
			o.hops++
			o.addr = resp.LeaderAddr
			c.setLeader(o.addr)
			c.send(o) // a fresh hint: follow it at once
			return
		}
		o.addr = c.nextAddr(addr)
	case proto.StatusUnavailable:
		if bytes.HasPrefix(resp.Value, readBudget) {
			// A get past what one batch's gets may return: the server is
			// well and answered the others. Sent again at the least
			// backoff, which spreads such gets over other batches, and not
			// noted against the server.
			o.delay = c.opts.BackoffMin
			break
		}
		// A failed replica answers "replica failed: <cause>" before it
		// exits; the note keeps its words for the errors of calls that
		// then run out of time.
		c.log.Debug("vesta client: server unavailable", "addr", addr, "msg", string(resp.Value))
		c.noteUnavailable(addr, resp.Value)
		if o.bounded {
			// Behind, or unwell: the next replica may have caught up.
			if bytes.Contains(resp.Value, behindMsg) {
				o.behind.Store(true)
			}
			o.addr = c.nextReadAddr(addr)
		} else if bytes.HasPrefix(resp.Value, replicaFailed) {
			// It will not recover: try the others, who may elect a leader.
			o.addr = c.nextAddr(addr)
		}
	case proto.StatusSessionExpired:
		o.expired()
		return
	default:
		o.finish(resp, &ServerError{addr, string(resp.Value)})
		return
	}
	c.retry(o)
}

// attemptFailed takes the failure of o's attempt at addr: the connection
// failed, or the attempt timed out.
func (o *op) attemptFailed(addr string, err error) {
	c := o.c
	if o.state.Load() != 0 {
		return
	}
	if o.fixed || errors.Is(err, ErrClosed) {
		o.finish(proto.Response{}, err)
		return
	}
	c.log.Debug("vesta client: server failed", "addr", addr, "err", err)
	if o.bounded {
		o.addr = c.nextReadAddr(addr)
	} else {
		o.addr = c.nextAddr(addr)
	}
	c.retry(o)
}

// expired handles a refusal because the server forgot o's session: a write
// sent once is sent again in a new session; one sent more often may have
// applied in the old one. An open so refused is sent again as a new open.
func (o *op) expired() {
	c, s := o.c, o.sess
	if o.req.Op == proto.OpOpenSession {
		// Not an answer the store gives client 0 (it issues a new ID), but
		// the cure for an open that is refused so is another new session.
		c.log.Debug("vesta client: open-session refused as expired; opening a new one", "client", o.req.Client)
		o.req.Client = 0
		c.retry(o)
		return
	}
	if !o.write {
		o.finish(proto.Response{}, errSessionExpired)
		return
	}
	c.expire(s)
	if o.sent.Load() > 1 {
		o.finish(proto.Response{}, fmt.Errorf("%w: the server forgot the client's session while the write was being retried", ErrOutcomeUnknown))
		return
	}
	q := o.seq.Swap(0)
	if q == 0 {
		return // abandoned meanwhile; its caller finished the number
	}
	s.end(q)
	c.log.Debug("vesta client: session expired; opening a new one", "session", s.id)
	o.sent.Store(0)
	o.hops = 0
	c.startWrite(o)
}

// retry sends o again after a backoff: about o.delay (drawn from its upper
// half), which then doubles.
func (c *Client) retry(o *op) {
	o.hops = 0
	d := o.delay/2 + mrand.N(o.delay/2+1)
	o.delay = min(2*o.delay, c.opts.BackoffMax)
	if o.deadline != 0 {
		// Wake at the deadline at the latest, to fail then (send).
		d = max(min(d, time.Duration(o.deadline-c.now.Load())), 0)
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		o.finish(proto.Response{}, ErrClosed)
		return
	}
	c.sleeping[o] = time.AfterFunc(d, func() {
		c.mu.Lock()
		delete(c.sleeping, o)
		closed := c.closed
		c.mu.Unlock()
		if closed {
			o.finish(proto.Response{}, ErrClosed)
			return
		}
		if o.state.Load() != 0 {
			return
		}
		c.send(o)
	})
	c.mu.Unlock()
}

func (c *Client) setLeader(addr string) {
	if *c.leader.Load() != addr {
		c.storeLeader(addr) // apart, so that addr escapes only when it changes
	}
}

func (c *Client) storeLeader(addr string) {
	p := new(string)
	*p = addr
	c.mu.Lock()
	c.leader.Store(p)
	c.leaderBallot = ballot{} // unknown until a probe asks
	c.mu.Unlock()
}

// nextAddr moves the client's guess of the leader off failed, round robin
// over the configured addresses, and returns it.
func (c *Client) nextAddr(failed string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	leader := *c.leader.Load()
	if leader == failed {
		p := &c.addrs[c.rr%len(c.addrs)]
		c.rr++
		if *p == failed && len(c.addrs) > 1 {
			p = &c.addrs[c.rr%len(c.addrs)]
			c.rr++
		}
		c.leader.Store(p)
		c.leaderBallot = ballot{}
		leader = *p
	}
	return leader
}

// expire drops s if it is still the client's session.
func (c *Client) expire(s *session) {
	c.sessMu.Lock()
	if c.sess == s {
		c.sess = nil
	}
	c.sessMu.Unlock()
}

// session numbers a client's writes and tracks which are acknowledged.
type session struct {
	id     uint64
	window uint64

	mu       sync.Mutex
	next     uint64              // the next sequence number to hand out
	low      uint64              // every number below is finished
	finished map[uint64]struct{} // finished numbers above low
	waiters  []*op               // writes waiting for the window to move, in order
	closed   bool
}

func newSession(id uint64, window int) *session {
	return &session{id: id, window: uint64(window), next: 1, low: 1, finished: map[uint64]struct{}{}}
}

type beginResult int

const (
	begun beginResult = iota
	beginQueued
	beginClosed
)

// begin gives o the next sequence number (o.seq), or queues o while the
// window is full (end starts it later).
func (s *session) begin(o *op) beginResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return beginClosed
	}
	if len(s.waiters) == 0 && s.next-s.low < s.window {
		o.seq.Store(s.next)
		s.next++
		return begun
	}
	s.waiters = append(s.waiters, o)
	return beginQueued
}

// end marks seq finished: acknowledged, or abandoned by its caller (a
// server then refuses it if it arrives after the low mark passed it). It
// starts the writes the moved window lets in.
func (s *session) end(seq uint64) {
	s.mu.Lock()
	if seq != s.low {
		s.finished[seq] = struct{}{}
		s.mu.Unlock()
		return
	}
	s.low++
	for {
		if _, ok := s.finished[s.low]; !ok {
			break
		}
		delete(s.finished, s.low)
		s.low++
	}
	if len(s.waiters) == 0 {
		s.mu.Unlock()
		return
	}
	var start []*op
	for len(s.waiters) > 0 && s.next-s.low < s.window {
		o := s.waiters[0]
		s.waiters[0] = nil
		s.waiters = s.waiters[1:]
		if o.state.Load() != 0 {
			continue // abandoned while it waited
		}
		o.seq.Store(s.next)
		s.next++
		start = append(start, o)
	}
	s.mu.Unlock()
	for _, o := range start {
		o.c.launch(o)
	}
}

// close refuses further writes and returns those waiting.
func (s *session) close() []*op {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	w := s.waiters
	s.waiters = nil
	return w
}

func (s *session) lowMark() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.low
}
