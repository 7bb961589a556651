// Package client is the Go client of vestad, Vesta's replicated key-value
// server.
//
// A Client talks to a cluster through any of the addresses it was given. It
// sends its requests to the replica it believes leads, follows not-leader
// replies to the leader, and retries through failures until the call
// succeeds, fails for good, or runs out of time (its context's deadline, or
// Options.CallTimeout). Every call may run concurrently with any other:
// calls share one connection per server and many are in flight on it at once
// (pipelining); the connection's writer sends all queued requests with one
// system call, and one reader goroutine completes the calls.
//
// # Failover
//
// A leader that stops answering (paused, partitioned, overloaded) is noticed
// after Options.HedgeDelay of silence on its connection, a small multiple of
// its observed response time: the client then asks the other servers for
// their status, and as soon as one reports that it leads (under a newer
// ballot than the one the client knows), the waiting requests move to it.
// Requests waiting at a server the client no longer takes for the leader (a
// not-leader reply elsewhere named another) move the same way once that
// server has been silent for the hedge delay. AttemptTimeout remains the
// bound for a server that is silent while nobody else claims to lead. A
// moved write keeps its session and sequence number (below), so it applies
// once even if the silent server wakes up and applies its copy too.
//
// # Errors
//
// A call that runs out of time fails with a *CallError, which matches
// (errors.Is) its context's error (context.DeadlineExceeded or
// context.Canceled) or, past Options.CallTimeout, both ErrCallTimeout and
// context.DeadlineExceeded; a write that may have applied also matches
// ErrOutcomeUnknown. Its message names the last failure the client saw at
// each server ("connection refused", "unavailable: replica failed: ...",
// "no answer for 2s"), so a cluster that stopped says why.
//
// # Exactly-once writes
//
// Writes (Put, Delete, CAS) run in a session: before its first write the
// client asks the cluster, through the log, for a new session, whose ID the
// store issues (never issuing one twice); it numbers its writes, and tells
// the server the lowest number it has not yet seen acknowledged. A retried
// write keeps its session and number, so it applies exactly once however
// often it is sent. If the
// call's time runs out after a write was sent, the call fails with an error
// that matches ErrOutcomeUnknown: the write may or may not apply. (Once every
// earlier write of the client has finished, the abandoned write's number
// falls below the client's low mark, and a copy of it that reaches the log
// after a later write carrying that mark is refused rather than applied.) If
// the server has forgotten the session (evicted after long idleness, or
// because the store holds too many), a write sent once is re-sent in a new
// session; one that had been sent more than once fails with
// ErrOutcomeUnknown. An evicted session is never reopened, so a late copy of
// one of its writes is refused rather than applied a second time. A retried
// open may leave a session the client never uses; the store evicts it first.
//
// A server from before store-issued session IDs refuses to open a session
// for this client: its writes fail with ErrServerTooOld (reads work).
// Upgrade every replica before the clients.
//
// Reads (Get) are linearizable in the modes that ask the leader
// (Options.Reads: ReadByIndex, the default, ReadByLease, ReadThroughLog); a
// retried read simply reads again.
//
// # Slots and reads at any replica
//
// Every successful answer from a server of protocol 0.2 or later carries a
// slot of the replicated log below which the state it reflects holds every
// command (for a write, at least the write's own slot plus one). The client
// keeps the highest it has seen over all its calls (SeenSlot). With
// Options.Reads set to ReadAtAnyReplica, a Get goes to any server, round
// robin over the client's addresses, leader or not, with SeenSlot as its
// min slot: the server answers once its replica has applied every slot
// below it. Such reads are not linearizable (a write of another client
// that completed may not show yet), but they are session-monotonic: a
// client never reads state older than what it has seen, its own
// acknowledged writes included, whichever replica answers. GetBounded
// reads so with a min slot of the caller's (one another client passed on,
// say), at a server of the caller's choice, and may accept a stale answer
// at once instead of waiting. A replica that does not catch up within about
// a second answers unavailable and the client asks the next one; a call that
// runs out of time so fails with a *CallError that matches ErrReplicaBehind.
//
// A vestad older than protocol 0.2 closes this client's connections
// unanswered (the client's error says so): upgrade every replica before the
// clients.
//
// The byte slices passed to a call must not change until it returns; the
// slices a call returns are the caller's.
package client

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vestalabs/vesta/client/proto"
)

// ErrOutcomeUnknown matches (errors.Is) a write's error when the write may
// or may not have applied.
var ErrOutcomeUnknown = errors.New("vesta client: the write may or may not have applied")

// ErrServerTooOld matches (errors.Is) the error of writes that could not
// run because the server does not issue session IDs (a vestad from before
// store-issued sessions, which refuses an open-session with client 0). The
// client does not fall back to a session ID of its own (see the package
// comment); it tries to open a session again at the next write.
var ErrServerTooOld = errors.New("vesta client: the server does not issue session IDs; upgrade every vestad replica")

// ErrReplicaBehind matches (errors.Is) the *CallError of a read at any
// replica (ReadAtAnyReplica, GetBounded) that ran out of time while the
// replicas it asked answered that they had not applied its min slot yet:
// they lag what this client has seen (a slow or partitioned replica; or a
// min slot passed to GetBounded that this cluster never reached). Retry
// later, give the call more time, read at the leader (ReadByIndex), or
// accept a stale answer (GetBounded with AllowStale).
var ErrReplicaBehind = errors.New("vesta client: the replicas asked have not applied the read's min slot yet; retry later, read by index at the leader, or allow a stale answer")

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
	// is the last resort against a server that stopped answering (paused,
	// partitioned): HedgeDelay finds a new leader sooner when there is one.
	// A write's retry is safe (its session).
	AttemptTimeout time.Duration
	// HedgeDelay is how long a connection with requests waiting may stay
	// silent (no answer to any of them) before the client asks the other
	// servers who leads; while the silence lasts it asks again every
	// HedgeDelay, and moves the waiting requests to a server that reports
	// it leads under a newer ballot (see the package comment). 0: adaptive,
	// the server's smoothed response time plus four deviations (as TCP's
	// retransmission timeout), at least 50 ms and at most 500 ms (and at most
	// AttemptTimeout/4); negative: off, a silent server is left only after
	// AttemptTimeout. A false alarm (a slow but live leader) costs one status
	// request to each other server and moves nothing.
	HedgeDelay time.Duration
	// CallTimeout bounds a whole call, retries included, from its start:
	// past it the call fails with a *CallError matching ErrCallTimeout and
	// context.DeadlineExceeded, which names each server's last failure (1
	// minute; negative: no bound). It is the only bound of the asynchronous
	// calls, which have no context, and bounds the blocking calls whose
	// context's deadline is later or absent. A minute rides out any failover
	// and restart the cluster is built to survive (seconds) with a wide
	// margin, yet a cluster that stopped (a quorum failed, a full log) shows
	// as errors within a minute instead of calls that wait forever. The
	// sweeper enforces it to within a quarter of a second.
	CallTimeout time.Duration
	// Logger receives redirects and connection failures at Debug (slog.Default()).
	Logger *slog.Logger
	// Reads is how Get stays consistent (ReadByIndex): linearizable at the
	// leader, or session-monotonic at any replica (ReadAtAnyReplica).
	Reads ReadMode
}

// ReadMode is how a Get is kept consistent. Every mode but
// ReadAtAnyReplica is linearizable; they differ in cost.
type ReadMode uint8

const (
	// ReadByIndex (the default) has the leader confirm with one round to a
	// quorum, shared by every read waiting, that it still leads, then read
	// its state once applied that far: no log append, no clock assumption.
	ReadByIndex ReadMode = iota
	// ReadThroughLog proposes each get through the log like a write: a slot,
	// an append on every replica and an apply. For servers that predate
	// read modes.
	ReadThroughLog
	// ReadByLease has a leader that holds its lease answer at once, with no
	// round (and fall back to its read index when it holds none):
	// linearizable while the servers' clocks drift within their bound
	// (vestad -max-clock-drift).
	ReadByLease
	// ReadAtAnyReplica sends each get to the next of the client's servers,
	// round robin, leader or not, as a bounded-staleness read whose min slot
	// is SeenSlot: the server answers once its replica has applied every
	// slot below it. Not linearizable, but session-monotonic (see the package
	// comment): the client reads its own writes and never goes back in
	// time. It spreads reads over every replica, and a read costs no round
	// to a quorum. Needs servers of protocol 0.2 or later.
	ReadAtAnyReplica
)

func (m ReadMode) String() string {
	switch m {
	case ReadByIndex:
		return "index"
	case ReadThroughLog:
		return "log"
	case ReadByLease:
		return "lease"
	case ReadAtAnyReplica:
		return "bounded"
	}
	return fmt.Sprintf("read-mode(%d)", uint8(m))
}

// ParseReadMode parses a ReadMode's String: "index", "lease", "log" or
// "bounded" (ReadAtAnyReplica).
func ParseReadMode(s string) (ReadMode, error) {
	switch s {
	case "index":
		return ReadByIndex, nil
	case "log":
		return ReadThroughLog, nil
	case "lease":
		return ReadByLease, nil
	case "bounded":
		return ReadAtAnyReplica, nil
	}
	return 0, fmt.Errorf("read mode %q: want index (the leader's read index), lease (the leader's lease), log (through the log) or bounded (any replica, never older than what the client has seen)", s)
}

// wire is the protocol's read mode for m.
func (m ReadMode) wire() proto.ReadMode {
	switch m {
	case ReadThroughLog:
		return proto.ReadThroughLog
	case ReadByLease:
		return proto.ReadLease
	case ReadAtAnyReplica:
		return proto.ReadBounded
	}
	return proto.ReadIndex
}

// Slot is a position in a cluster's replicated log, as the servers report it
// (Response.Applied of the client protocol): a state "at slot s" holds every
// command chosen in a slot below s. Slots of one cluster only compare with
// each other.
type Slot uint64

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
	if o.CallTimeout == 0 {
		o.CallTimeout = time.Minute
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
	epoch time.Time    // the origin of now
	now   atomic.Int64 // coarse clock: time since start, refreshed by the sweeper
	sw    sweepTiming

	leader atomic.Pointer[string] // where calls go first; written under mu
	// seen is the highest applied slot of any answer (SeenSlot); readNext
	// turns ReadAtAnyReplica's reads round robin over addrs.
	seen     atomic.Uint64
	readNext atomic.Uint64

	mu       sync.Mutex
	conns    map[string]*conn
	rr       int // next index into addrs when the leader is unknown
	closed   bool
	quit     chan struct{}
	sleeping map[*op]*time.Timer // calls waiting to retry
	// Failover (hedge.go): the ballot the leader reported for itself (zero:
	// unknown), the servers with a status probe in flight, and when the
	// last round of probes began.
	leaderBallot ballot
	probing      map[string]bool
	probedAt     int64
	// The last failures seen per server (errors.go), for the errors of
	// calls that run out of time.
	notes map[string]*serverNote

	// slow is set while the sweeper ticks slowly (nothing waits for an
	// answer); a send then refreshes now and wakes it (wake).
	slow atomic.Bool
	wake chan struct{}

	sessMu      sync.Mutex
	sess        *session
	opening     bool  // a session is being opened
	sessWaiters []*op // writes waiting for it
	isClosed    atomic.Bool
	sweeperDone chan struct{}
	warnedOld   atomic.Bool // a server refused to issue a session (logged at Warn once)
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
	c := &Client{
		addrs:       append([]string(nil), addrs...),
		opts:        opts,
		log:         opts.Logger,
		epoch:       time.Now(),
		conns:       map[string]*conn{},
		quit:        make(chan struct{}),
		sleeping:    map[*op]*time.Timer{},
		probing:     map[string]bool{},
		notes:       map[string]*serverNote{},
		wake:        make(chan struct{}, 1),
		sweeperDone: make(chan struct{}),
	}
	c.leader.Store(&c.addrs[0])
	c.sw = newSweepTiming(&c.opts)
	go c.sweep()
	return c, nil
}

// Close closes the client's connections; calls in progress fail with
// ErrClosed, each exactly once (a write among them may still apply). Close
// is idempotent.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.isClosed.Store(true)
	close(c.quit)
	conns := c.conns
	c.conns = map[string]*conn{}
	sleeping := c.sleeping
	c.sleeping = map[*op]*time.Timer{}
	c.mu.Unlock()
	for _, cn := range conns {
		cn.fail(ErrClosed, "")
	}
	for o, t := range sleeping {
		if t.Stop() { // else its retry runs, finds the client closed, and fails
			o.finish(proto.Response{}, ErrClosed)
		}
	}
	c.sessMu.Lock()
	s, waiters := c.sess, c.sessWaiters
	c.sessWaiters = nil
	c.sessMu.Unlock()
	for _, o := range waiters {
		o.finish(proto.Response{}, ErrClosed)
	}
	if s != nil {
		for _, o := range s.close() {
			o.finish(proto.Response{}, ErrClosed)
		}
	}
	<-c.sweeperDone
	return nil
}

// SeenSlot returns the highest slot the client has seen in an answer, over
// all its calls so far: the state of every acknowledged write of this client,
// and of every read it made, is at or below it. It is the min slot of the
// client's ReadAtAnyReplica reads; pass it to another client's GetBounded to
// have that client read at least what this one saw. 0 until a server of
// protocol 0.2 or later answered.
func (c *Client) SeenSlot() Slot { return Slot(c.seen.Load()) }

// noteSeen raises SeenSlot to s.
func (c *Client) noteSeen(s uint64) {
	for {
		cur := c.seen.Load()
		if s <= cur || c.seen.CompareAndSwap(cur, s) {
			return
		}
	}
}

// readAddr is where the next read at any replica goes first: the client's
// addresses in turn.
func (c *Client) readAddr() string {
	return c.addrs[(c.readNext.Add(1)-1)%uint64(len(c.addrs))]
}

// nextReadAddr is where a read at any replica that failed at addr goes next:
// the address after addr in the client's list (addr itself if it is the only
// one; the next in turn if addr is not in the list).
func (c *Client) nextReadAddr(addr string) string {
	for i, a := range c.addrs {
		if a == addr {
			return c.addrs[(i+1)%len(c.addrs)]
		}
	}
	return c.readAddr()
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
	// Checkpoint is the slot of the server's newest checkpoint (0: none);
	// LogBytes is its durable log's size, where the log reports one.
	Checkpoint uint64 `json:"checkpoint"`
	LogBytes   int64  `json:"log_bytes,omitempty"`
	Stopped    bool   `json:"stopped"`
	Err        string `json:"error,omitempty"`
	// LeaderAddr is the leader's client address as this server knows it.
	LeaderAddr string `json:"leader_addr,omitempty"`
	// Durability says how this server keeps its log ("wal DIR" or "memory").
	Durability string `json:"durability,omitempty"`
}
