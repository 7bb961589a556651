// Package client is the Go client of vestad, Vesta's replicated key-value
// server.
//
// A Client talks to a cluster through any of the addresses it was given. It
// sends its requests to the replica it believes leads, follows not-leader
// replies to the leader, and retries through failures until the call's
// context ends. Every call may run concurrently with any other: calls share
// one connection per server and many are in flight on it at once
// (pipelining); the connection's writer sends all queued requests with one
// system call, and one reader goroutine completes the calls.
//
// # Exactly-once writes
//
// Writes (Put, Delete, CAS) run in a session: the client opens one through
// the log before its first write, numbers its writes, and tells the server
// the lowest number it has not yet seen acknowledged. A retried write keeps
// its number, so it applies exactly once however often it is sent. If the
// call's context ends after a write was sent, the call fails with an error
// that matches ErrOutcomeUnknown: the write may or may not apply. (Once every
// earlier write of the client has finished, the abandoned write's number
// falls below the client's low mark, and a copy of it that reaches the log
// after a later write carrying that mark is refused rather than applied.) If
// the server has forgotten the session (evicted after long idleness), a write
// sent once is re-sent in a new session; one that had been sent more than
// once fails with ErrOutcomeUnknown.
//
// Reads (Get) go through the log, so they are linearizable; a retried read
// simply reads again.
//
// The byte slices passed to a call must not change until it returns; the
// slices a call returns are the caller's.
package client

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/vestalabs/vesta/client/proto"
)

// ErrOutcomeUnknown matches (errors.Is) a write's error when the write may
// or may not have applied.
var ErrOutcomeUnknown = errors.New("vesta client: the write may or may not have applied")

// ErrClosed is returned by calls on a closed Client.
var ErrClosed = errors.New("vesta client: closed")

// ServerError is a server's refusal of a request that retrying will not
// change (a request it found malformed, say).
type ServerError struct {
	Addr string // the server that refused
	Msg  string
}

func (e *ServerError) Error() string { return "vesta client: server " + e.Addr + ": " + e.Msg }

// Options configure a Client. Zero values take the defaults named.
type Options struct {
	// DialTimeout bounds one connection attempt (2 s).
	DialTimeout time.Duration
	// MaxUnacked bounds the write window: a write waits while the oldest
	// unacknowledged write of the session is this many writes behind the
	// next (4096). The server keeps a result per write in the window, and
	// refuses more than 65 536.
	MaxUnacked int
	// BackoffMin and BackoffMax bound the wait between retries (5 ms, 500 ms);
	// each wait doubles the last, drawn from its upper half.
	BackoffMin, BackoffMax time.Duration
	// WriteTimeout bounds one write to a server's connection (10 s); a server
	// that takes longer is treated as failed.
	WriteTimeout time.Duration
	// AttemptTimeout bounds one try of a request at one server (2 s; negative:
	// no bound); past it the request is sent again, to the next server. It
	// keeps a call from waiting on a server that stopped answering (paused,
	// partitioned) while another leads; a write's retry is safe (its session).
	AttemptTimeout time.Duration
	// Logger receives redirects and connection failures at Debug (slog.Default()).
	Logger *slog.Logger
}

func (o *Options) setDefaults() {
	if o.DialTimeout <= 0 {
		o.DialTimeout = 2 * time.Second
	}
	if o.MaxUnacked <= 0 {
		o.MaxUnacked = 4096
	}
	if o.BackoffMin <= 0 {
		o.BackoffMin = 5 * time.Millisecond
	}
	if o.BackoffMax < o.BackoffMin {
		o.BackoffMax = max(500*time.Millisecond, o.BackoffMin)
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 10 * time.Second
	}
	if o.AttemptTimeout == 0 {
		o.AttemptTimeout = 2 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Client is a connection to a vestad cluster; see the package comment.
type Client struct {
	addrs []string
	opts  Options
	log   *slog.Logger

	mu     sync.Mutex
	conns  map[string]*conn
	leader string // where calls go first
	rr     int    // next index into addrs when the leader is unknown
	closed bool
	quit   chan struct{}

	sessMu  sync.Mutex
	sess    *session
	opening chan struct{} // closed when the session being opened is open (or failed)
}

// New returns a Client for the cluster whose servers' client addresses are
// addrs (any non-empty subset works; the leader's is learned). It connects
// when the first call needs to.
func New(addrs []string, opts Options) (*Client, error) {
	if len(addrs) == 0 {
		return nil, errors.New("vesta client: no server addresses")
	}
	for _, a := range addrs {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return nil, fmt.Errorf("vesta client: server address %q: %w", a, err)
		}
	}
	opts.setDefaults()
	return &Client{
		addrs:  append([]string(nil), addrs...),
		opts:   opts,
		log:    opts.Logger,
		conns:  map[string]*conn{},
		leader: addrs[0],
		quit:   make(chan struct{}),
	}, nil
}

// Close closes the client's connections; calls in progress fail with
// ErrClosed (a write among them may still apply). Close is idempotent.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	close(c.quit)
	conns := c.conns
	c.conns = map[string]*conn{}
	c.mu.Unlock()
	for _, cn := range conns {
		cn.fail(ErrClosed)
	}
	return nil
}

// Get returns key's value and whether the key exists.
func (c *Client) Get(ctx context.Context, key []byte) (value []byte, found bool, err error) {
	resp, err := c.do(ctx, &proto.Request{Op: proto.OpGet, Key: key})
	if err != nil {
		return nil, false, err
	}
	return resp.Value, resp.Found, nil
}

// Put sets key to value.
func (c *Client) Put(ctx context.Context, key, value []byte) error {
	_, err := c.do(ctx, &proto.Request{Op: proto.OpPut, Key: key, Value: value})
	return err
}

// Delete removes key and reports whether it existed.
func (c *Client) Delete(ctx context.Context, key []byte) (existed bool, err error) {
	resp, err := c.do(ctx, &proto.Request{Op: proto.OpDelete, Key: key})
	return resp.Found, err
}

// CAS sets key to value if its current value equals expect (a missing key's
// value is empty) and reports whether it did.
func (c *Client) CAS(ctx context.Context, key, expect, value []byte) (swapped bool, err error) {
	resp, err := c.do(ctx, &proto.Request{Op: proto.OpCAS, Key: key, Expect: expect, Value: value})
	return resp.Swapped, err
}

// ServerStatus is one server's view of its replica.
type ServerStatus struct {
	ID       uint32 `json:"id"`
	Role     string `json:"role"`
	Leader   uint32 `json:"leader"`
	Ballot   string `json:"ballot,omitempty"`
	Promised string `json:"promised"`
	Commit   uint64 `json:"commit"`
	Applied  uint64 `json:"applied"`
	Queued   int    `json:"queued"`
	Stopped  bool   `json:"stopped"`
	Err      string `json:"error,omitempty"`
	// LeaderAddr is the leader's client address as this server knows it.
	LeaderAddr string `json:"leader_addr,omitempty"`
	// Durability says how this server keeps its log ("wal DIR" or "memory").
	Durability string `json:"durability,omitempty"`
}

// Status asks the server at addr (not necessarily one of the client's) for
// its status. It does not retry.
func (c *Client) Status(ctx context.Context, addr string) (ServerStatus, error) {
	var st ServerStatus
	cn, err := c.conn(ctx, addr)
	if err != nil {
		return st, err
	}
	resp, err := cn.roundTrip(ctx, &proto.Request{Op: proto.OpStatus})
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

// ErrTooLarge is returned, without sending anything, for a key above
// proto.MaxKeySize or a value above proto.MaxValueSize.
var ErrTooLarge = errors.New("vesta client: key or value too large")

// do runs one request to completion, retrying as the package comment says.
func (c *Client) do(ctx context.Context, req *proto.Request) (proto.Response, error) {
	if len(req.Key) > proto.MaxKeySize || len(req.Value) > proto.MaxValueSize || len(req.Expect) > proto.MaxValueSize {
		return proto.Response{}, fmt.Errorf("%w: key %d bytes (limit %d), value %d and expected value %d bytes (limit %d)",
			ErrTooLarge, len(req.Key), proto.MaxKeySize, len(req.Value), len(req.Expect), proto.MaxValueSize)
	}
	if !req.Op.IsWrite() {
		resp, _, err := c.attempt(ctx, req, nil)
		return resp, err
	}
	for {
		s, err := c.session(ctx)
		if err != nil {
			return proto.Response{}, err
		}
		seq, err := s.begin(ctx, c.quit)
		if err != nil {
			return proto.Response{}, err
		}
		req.Client, req.Seq = s.id, seq
		resp, sent, err := c.attempt(ctx, req, s)
		s.end(seq)
		if err == nil || !errors.Is(err, errSessionExpired) {
			return resp, err
		}
		c.expire(s)
		if sent > 1 {
			return resp, fmt.Errorf("%w: the server forgot the client's session while the write was being retried", ErrOutcomeUnknown)
		}
		c.log.Debug("vesta client: session expired; opening a new one", "session", s.id)
	}
}

var errSessionExpired = errors.New("vesta client: session expired")

// attempt sends req until it gets an answer that settles it, or ctx ends.
// For a write, s is its session (req.Low is refreshed on each send); sent
// counts the sends.
func (c *Client) attempt(ctx context.Context, req *proto.Request, s *session) (resp proto.Response, sent int, err error) {
	addr := c.currentLeader()
	delay := c.opts.BackoffMin
	hops := 0
	for {
		if err := ctx.Err(); err != nil {
			return resp, sent, c.giveUp(req, sent, err)
		}
		actx, cancel := ctx, context.CancelFunc(nil)
		if c.opts.AttemptTimeout > 0 {
			actx, cancel = context.WithTimeout(ctx, c.opts.AttemptTimeout)
		}
		cn, err := c.conn(actx, addr)
		if err == nil {
			if s != nil {
				req.Low = s.lowMark()
			}
			sent++
			resp, err = cn.roundTrip(actx, req)
		}
		if cancel != nil {
			cancel()
		}
		switch {
		case errors.Is(err, ErrClosed):
			return resp, sent, err
		case err != nil && ctx.Err() != nil:
			return resp, sent, c.giveUp(req, sent, ctx.Err())
		case err != nil: // the server failed, or did not answer in AttemptTimeout
			c.log.Debug("vesta client: server failed", "addr", addr, "err", err)
			addr = c.nextAddr(addr)
		case resp.Status == proto.StatusOK:
			c.setLeader(addr)
			return resp, sent, nil
		case resp.Status == proto.StatusNotLeader:
			c.log.Debug("vesta client: not the leader", "addr", addr, "leader", resp.Leader, "leader_addr", resp.LeaderAddr)
			if resp.LeaderAddr != "" && resp.LeaderAddr != addr && hops < len(c.addrs) {
				hops++
				addr = resp.LeaderAddr
				c.setLeader(addr)
				continue // a fresh hint: follow it at once
			}
			addr = c.nextAddr(addr)
		case resp.Status == proto.StatusUnavailable:
			c.log.Debug("vesta client: server unavailable", "addr", addr, "msg", string(resp.Value))
		case resp.Status == proto.StatusSessionExpired:
			return resp, sent, errSessionExpired
		default:
			return resp, sent, &ServerError{addr, string(resp.Value)}
		}
		hops = 0
		if !c.sleep(ctx, &delay) {
			if ctx.Err() != nil {
				return resp, sent, c.giveUp(req, sent, ctx.Err())
			}
			return resp, sent, ErrClosed
		}
	}
}

// giveUp is the error of a call abandoned because of cause.
func (c *Client) giveUp(req *proto.Request, sent int, cause error) error {
	if req.Op.IsWrite() && sent > 0 {
		return fmt.Errorf("%w: %w", ErrOutcomeUnknown, cause)
	}
	return cause
}

// sleep waits about *delay (drawn from its upper half) and doubles it,
// unless ctx ends or the client closes first.
func (c *Client) sleep(ctx context.Context, delay *time.Duration) bool {
	d := *delay/2 + mrand.N(*delay/2+1)
	*delay = min(2**delay, c.opts.BackoffMax)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	case <-c.quit:
		return false
	}
}

func (c *Client) currentLeader() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.leader
}

func (c *Client) setLeader(addr string) {
	c.mu.Lock()
	c.leader = addr
	c.mu.Unlock()
}

// nextAddr moves the client's guess of the leader off failed, round robin
// over the configured addresses, and returns it.
func (c *Client) nextAddr(failed string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.leader == failed {
		c.leader = c.addrs[c.rr%len(c.addrs)]
		c.rr++
		if c.leader == failed && len(c.addrs) > 1 {
			c.leader = c.addrs[c.rr%len(c.addrs)]
			c.rr++
		}
	}
	return c.leader
}

// session returns the client's open session, opening one if there is none.
func (c *Client) session(ctx context.Context) (*session, error) {
	for {
		c.sessMu.Lock()
		if s := c.sess; s != nil {
			c.sessMu.Unlock()
			return s, nil
		}
		if wait := c.opening; wait != nil {
			c.sessMu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		done := make(chan struct{})
		c.opening = done
		c.sessMu.Unlock()

		s := newSession(randomID(), c.opts.MaxUnacked)
		_, _, err := c.attempt(ctx, &proto.Request{Op: proto.OpOpenSession, Client: s.id}, nil)
		c.sessMu.Lock()
		c.opening = nil
		if err == nil {
			c.sess = s
		}
		c.sessMu.Unlock()
		close(done)
		if err != nil {
			return nil, fmt.Errorf("vesta client: opening a session: %w", err)
		}
		c.log.Debug("vesta client: session opened", "session", s.id)
		return s, nil
	}
}

// expire drops s if it is still the client's session.
func (c *Client) expire(s *session) {
	c.sessMu.Lock()
	if c.sess == s {
		c.sess = nil
	}
	c.sessMu.Unlock()
}

func randomID() uint64 {
	var b [8]byte
	for {
		if _, err := rand.Read(b[:]); err != nil {
			panic(err) // crypto/rand does not fail on supported platforms
		}
		if id := binary.LittleEndian.Uint64(b[:]); id != 0 {
			return id
		}
	}
}

// session numbers a client's writes and tracks which are acknowledged.
type session struct {
	id     uint64
	window uint64

	mu       sync.Mutex
	next     uint64              // the next sequence number to hand out
	low      uint64              // every number below is finished
	finished map[uint64]struct{} // finished numbers above low
	progress chan struct{}       // closed when low moves, if waiting
	waiting  bool                // someone waits on progress
}

func newSession(id uint64, window int) *session {
	return &session{id: id, window: uint64(window), next: 1, low: 1,
		finished: map[uint64]struct{}{}, progress: make(chan struct{})}
}

// begin hands out the next sequence number, waiting while the window is full.
func (s *session) begin(ctx context.Context, quit <-chan struct{}) (uint64, error) {
	for {
		s.mu.Lock()
		if s.next-s.low < s.window {
			seq := s.next
			s.next++
			s.mu.Unlock()
			return seq, nil
		}
		wait := s.progress
		s.waiting = true
		s.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-quit:
			return 0, ErrClosed
		}
	}
}

// end marks seq finished: acknowledged, or abandoned by its caller (a
// server then refuses it if it arrives after the low mark passed it).
func (s *session) end(seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if seq != s.low {
		s.finished[seq] = struct{}{}
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
	if s.waiting {
		close(s.progress)
		s.progress = make(chan struct{})
		s.waiting = false
	}
}

func (s *session) lowMark() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.low
}
