package main

import (
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vestalabs/vesta/client/proto"
	"github.com/vestalabs/vesta/internal/lograte"
)

// What a client connection may cost the server (issue 12 item 5). Without
// these, a connection that sent a large frame's header and stalled held the
// frame's whole buffer forever, every idle connection held a 64 KiB read
// buffer and two goroutines, and nothing closed a client that sent a byte a
// second.
//
//   - A connection holds a read buffer only while it has bytes it has not
//     processed: an idle one holds none (connReader).
//   - A frame's buffer grows as its bytes arrive (doubling when full, from
//     pooled size classes), never from its header alone, up to
//     maxRequestFrame, the largest request the protocol allows.
//   - Every buffer a connection holds is charged to one budget
//     (clientLimits.BufferBytes). Past it, the connection holding the most
//     bytes of an incomplete frame is closed (see bufferBudget.reserve).
//   - A frame must arrive within clientLimits.ReadTimeout of the server
//     first waiting for its rest; a connection with nothing in flight is
//     closed after clientLimits.IdleTimeout.
//   - At most clientLimits.MaxConns connections are open; beyond, a new one
//     is sent a refusal and closed at once.
//   - Responses, from before their request is proposed until they are
//     written, are charged to clientLimits.ResponseBytes, of which one
//     connection may hold a share; past it, the server stops reading the
//     connection (respbudget.go).
//
// Each refusal is counted in vestad_client_refusals_total{reason} and
// logged, at most one line per reason a second.

// clientLimits bound what client connections may cost; see the flags.
type clientLimits struct {
	MaxConns    int
	ReadTimeout time.Duration
	IdleTimeout time.Duration
	BufferBytes int64
	// ResponseBytes bounds the responses reserved and queued, all
	// connections together; one connection may hold ResponseBytes/respShares.
	ResponseBytes int64
}

// The limits' defaults.
const (
	defaultMaxClientConns    = 4096
	defaultClientReadTimeout = 10 * time.Second
	defaultClientIdleTimeout = 5 * time.Minute
	defaultClientBufferBytes = 64 << 20
	// 16 MiB a connection: 16 gets of the largest value in flight, or 14
	// groups of maxGroupOps gets (a group's gets return one largest value
	// together), or tens of thousands of any other request.
	defaultClientResponseBytes = 64 << 20
)

// maxRequestFrame is the largest body of a well-formed request: the fixed
// part, a key and two values of the largest sizes, with their lengths. The
// frame limit of the protocol (proto.DefaultMaxFrameSize, 4 MiB) is for
// either direction; a request above this fails DecodeRequest anyway, so the
// server refuses its frame from its header, before buffering it.
var maxRequestFrame = 1 + 8*4 + 1 + 1 + uvarintLen(proto.MaxKeySize) + proto.MaxKeySize +
	2*(uvarintLen(proto.MaxValueSize)+proto.MaxValueSize)

func uvarintLen(n int) int {
	var b [binary.MaxVarintLen64]byte
	return binary.PutUvarint(b[:], uint64(n))
}

// addClientLimitFlags defines the limits' flags on fs; the returned function,
// called after fs.Parse, returns them checked, or an error naming the flag.
func addClientLimitFlags(fs *flag.FlagSet) func() (clientLimits, error) {
	maxConns := fs.Int("max-client-conns", defaultMaxClientConns, "most client connections open at once; beyond, a new one is refused (sent a reason and closed)")
	readTimeout := fs.Duration("client-read-timeout", defaultClientReadTimeout,
		"longest a client may take to send the rest of a frame (or the preamble) once the server waits for it; a connection past it is closed")
	idleTimeout := fs.Duration("client-idle-timeout", defaultClientIdleTimeout,
		"a client connection with no request in flight and nothing received for this long is closed (at least -client-read-timeout)")
	bufferBytes := fs.Int64("client-buffer-bytes", defaultClientBufferBytes,
		"`BYTES` of client data all connections together may hold buffered; past it, the connection with the largest incomplete frame is closed "+
			fmt.Sprintf("(at least %d, one largest request)", lenSize+maxRequestFrame))
	responseBytes := fs.Int64("client-response-bytes", defaultClientResponseBytes,
		fmt.Sprintf("`BYTES` of responses all connections together may have reserved (a group of gets reserves its largest value, 1 MiB, once) or queued for writing; "+
			"one connection may hold a %dth, past which it is not read until its responses are written "+
			"(at least %d, %d largest responses)", respShares, respShares*maxGetResponse, respShares))
	return func() (clientLimits, error) {
		l := clientLimits{MaxConns: *maxConns, ReadTimeout: *readTimeout, IdleTimeout: *idleTimeout, BufferBytes: *bufferBytes,
			ResponseBytes: *responseBytes}
		return l, l.check()
	}
}

// check says which flag is wrong, if one is.
func (l clientLimits) check() error {
	switch {
	case l.MaxConns < 1:
		return fmt.Errorf("-max-client-conns: %d, need at least 1", l.MaxConns)
	case l.ReadTimeout <= 0:
		return fmt.Errorf("-client-read-timeout: %v is not positive", l.ReadTimeout)
	case l.IdleTimeout < l.ReadTimeout:
		return fmt.Errorf("-client-idle-timeout: %v is shorter than -client-read-timeout %v", l.IdleTimeout, l.ReadTimeout)
	case l.BufferBytes < int64(lenSize+maxRequestFrame):
		return fmt.Errorf("-client-buffer-bytes: %d is below %d, the size of one largest request, which could then never be read", l.BufferBytes, lenSize+maxRequestFrame)
	case l.ResponseBytes < int64(respShares*maxGetResponse):
		return fmt.Errorf("-client-response-bytes: %d is below %d: a connection's share (a %dth) would not hold one largest response",
			l.ResponseBytes, respShares*maxGetResponse, respShares)
	}
	return nil
}

func defaultClientLimits() clientLimits {
	return clientLimits{MaxConns: defaultMaxClientConns, ReadTimeout: defaultClientReadTimeout,
		IdleTimeout: defaultClientIdleTimeout, BufferBytes: defaultClientBufferBytes, ResponseBytes: defaultClientResponseBytes}
}

// lenSize is the size of a frame's length prefix (as in package proto).
const lenSize = 4

// refusal is why the server refused or closed a connection by a limit.
type refusal int

const (
	refuseMaxConns       refusal = iota // at the connection limit
	refuseReadTimeout                   // a frame or the preamble did not arrive in time
	refuseIdleTimeout                   // nothing in flight or received for the idle timeout
	refuseBufferBudget                  // the largest incomplete frame once the buffer budget ran out
	refuseResponseBudget                // the largest stalled response queue while the response budget is spent
	// Logged at the same rate limit, counted elsewhere (protocol errors,
	// response stalls).
	logBadPreamble
	logMalformed
	logAcceptError
	logResponseShare // a connection waits for room in its share of the response budget
	logResponseLimit // a connection waits for room in the response budget
	nLogReasons
)

// nRefusals: the reasons counted in vestad_client_refusals_total.
const nRefusals = logBadPreamble

var refusalNames = [nLogReasons]string{"max-conns", "read-timeout", "idle-timeout", "buffer-budget", "response-budget",
	"bad-preamble", "malformed", "accept-error", "response-share", "response-limit"}

func (r refusal) String() string { return refusalNames[r] }

// limitMetrics are the limits' series.
type limitMetrics struct {
	refusals   [nRefusals]prometheus.Counter
	respStalls [len(respStallNames)]prometheus.Counter // by respOverShare, respOverLimit
}

func newLimitMetrics(reg prometheus.Registerer, b *bufferBudget, rb *respBudget) *limitMetrics {
	m := &limitMetrics{}
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vestad_client_refusals_total",
		Help: "Client connections refused at the connection limit (max-conns) or closed by a limit: " +
			"read-timeout, idle-timeout, buffer-budget (the largest incomplete frame once the buffer budget ran out), " +
			"response-budget (the most responses queued and not written for a second, once the response budget ran out)."}, []string{"reason"})
	for r := range nRefusals {
		m.refusals[r] = vec.WithLabelValues(r.String())
	}
	stalls := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vestad_client_response_stalls_total",
		Help: "Times a client connection's reader stopped reading until its responses were written: " +
			"at its share of -client-response-bytes (connection) or at the limit itself (global)."}, []string{"budget"})
	for why := respOverShare; why < len(respStallNames); why++ {
		m.respStalls[why] = stalls.WithLabelValues(respStallNames[why])
	}
	reg.MustRegister(vec, stalls,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "vestad_client_response_bytes",
			Help: "Bytes of client responses reserved for requests in flight or queued for writing, charged to -client-response-bytes."},
			func() float64 { return float64(rb.used.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "vestad_client_response_limit_bytes",
			Help: "-client-response-bytes."}, func() float64 { return float64(rb.limit) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "vestad_client_buffer_bytes",
			Help: "Bytes of buffers client connections hold (read buffers and incomplete frames), charged to -client-buffer-bytes."},
			func() float64 { return float64(b.used.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "vestad_client_buffer_limit_bytes",
			Help: "-client-buffer-bytes."}, func() float64 { return float64(b.limit) }))
	return m
}

// rateLog logs at most one line per reason a second; the lines it holds
// back are counted, and said by the next line of that reason, or by flush.
type rateLog struct {
	log *slog.Logger
	per [nLogReasons]lograte.Limiter // Every is set by newRateLog
	now func() time.Time             // time.Now; tests move it
}

const rateLogEvery = time.Second

func newRateLog(log *slog.Logger) *rateLog {
	l := &rateLog{log: log, now: time.Now}
	for i := range l.per {
		l.per[i].Every = rateLogEvery
	}
	return l
}

// logf logs msg with args for reason r, at r's level, unless a line of r
// went out less than a second ago.
func (l *rateLog) logf(r refusal, msg string, args ...any) {
	n, ok := l.per[r].Allow(l.now())
	if !ok {
		return
	}
	args = append(args, "reason", r.String())
	if n > 0 {
		args = append(args, "suppressed", n)
	}
	l.log.Log(context.Background(), levelOf(r), msg, args...)
}

// flush says how many lines were held back of each reason whose last line
// is over a second old.
func (l *rateLog) flush() {
	now := l.now()
	for r := range nLogReasons {
		if n, since, ok := l.per[r].Flush(now); ok {
			l.log.Log(context.Background(), levelOf(r), "client connections: more of the same, not logged one by one",
				"reason", r.String(), "count", n, "since", since.Format(time.RFC3339Nano))
		}
	}
}

// bufferBudget charges the buffers client connections hold against one
// limit. The fast path is one atomic add; past the limit, reserve closes
// connections holding incomplete frames, the largest first.
//
// Why close rather than stop reading: stopping would leave the memory with
// whoever holds it, and an attacker holds it by never finishing its frames,
// so every honest connection would wait for the read timeout to clear the
// attackers, and the attackers would be back at once. Closing the largest
// incomplete frame frees the most memory per connection closed, and the
// connections that pay for it are those that send large frames slowly: an
// attack's, first. Connections sending small requests hold small frames
// and are not chosen while larger ones exist. An honest client whose large
// frame is closed retries (client.Client does, with its session).
type bufferBudget struct {
	s     *server
	limit int64
	used  atomic.Int64 // bytes charged to connections
	// releasing is the part of used charged to connections already chosen
	// to close, which return it as they finish. It does not count against
	// the limit: a connection chosen counts as freed at once, so that an
	// overrun closes as few connections as it needs, not more while the
	// first ones finish.
	releasing atomic.Int64

	mu sync.Mutex // serializes choosing victims; guards serverConn.releaseAmt
}

// reserve charges n more bytes to c, which holds an incomplete frame if
// partial. Past the limit it closes other connections holding incomplete
// frames, the largest first, until the charge fits; if c would then hold
// the largest itself (more than any other: a tie closes the other, which
// waits on its client, while c receives), it charges nothing and returns
// false: c must close.
// When no other connection holds an incomplete frame (grown for it, or
// waited with) the charge is made anyway: the rest of what is charged is
// read buffers of connections processing what they received, which they
// return once processed.
func (b *bufferBudget) reserve(c *serverConn, n int, partial bool) bool {
	if c.evicted.Load() {
		return false
	}
	if b.used.Add(int64(n))-b.releasing.Load() <= b.limit {
		c.charged.Add(int64(n))
		return true
	}
	var victims []*serverConn
	b.mu.Lock()
	ok := true
	for b.used.Load()-b.releasing.Load() > b.limit {
		v := b.largestIncomplete(c, int64(n), partial)
		if v == nil {
			break
		}
		if v == c {
			ok = false
			break
		}
		amt := v.charged.Load()
		v.releaseAmt += amt
		b.releasing.Add(amt)
		v.evicted.Store(true)
		victims = append(victims, v)
	}
	if ok {
		c.charged.Add(int64(n))
	} else {
		b.used.Add(-int64(n))
	}
	b.mu.Unlock()
	for _, v := range victims {
		b.s.closeByLimit(v, refuseBufferBudget, "buffer budget spent: closing the connection with the largest incomplete frame",
			"held", v.charged.Load(), "budget", b.limit)
	}
	if !ok {
		b.s.noteRefusal(c, refuseBufferBudget, "buffer budget spent: closing the connection with the largest incomplete frame",
			"held", c.charged.Load(), "wanted", n, "budget", b.limit)
	}
	return ok
}

// largestIncomplete returns the connection, c included (holding its charge
// plus n if partial), that holds the most bytes of an incomplete frame and
// is not closing yet; nil if none does. Called with b.mu held.
func (b *bufferBudget) largestIncomplete(c *serverConn, n int64, partial bool) *serverConn {
	var best *serverConn
	var most int64
	if partial {
		best, most = c, c.charged.Load()+n
	}
	s := b.s
	s.mu.Lock()
	for o := range s.conns {
		if o == c || o.evicted.Load() || !o.incomplete.Load() {
			continue
		}
		if h := o.charged.Load(); h >= most && (h > most || best == c) {
			best, most = o, h
		}
	}
	s.mu.Unlock()
	return best
}

// charge charges n bytes to c without checking the limit: for a buffer
// that replaces a larger one.
func (b *bufferBudget) charge(c *serverConn, n int) {
	c.charged.Add(int64(n))
	b.used.Add(int64(n))
}

// release returns n bytes c was charged.
func (b *bufferBudget) release(c *serverConn, n int) {
	c.charged.Add(-int64(n))
	b.used.Add(-int64(n))
}

// done settles c's account once it holds nothing: what was counted as
// releasing is released.
func (b *bufferBudget) done(c *serverConn) {
	b.mu.Lock()
	if c.releaseAmt != 0 {
		b.releasing.Add(-c.releaseAmt)
		c.releaseAmt = 0
	}
	b.mu.Unlock()
}

// sweepInterval is how often the sweeper checks the connections' clocks:
// a tenth of the shortest timeout, between 5 ms and 500 ms.
func (l clientLimits) sweepInterval() time.Duration {
	return min(max(min(l.ReadTimeout, l.IdleTimeout)/10, 5*time.Millisecond), 500*time.Millisecond)
}

// sweep advances the server's coarse clock and closes the connections past
// their read or idle timeout, every sweepInterval, until quit closes.
func (s *server) sweep(quit <-chan struct{}) {
	defer s.wg.Done()
	t := time.NewTicker(s.lim.sweepInterval())
	defer t.Stop()
	var late []*serverConn
	var why []refusal
	for {
		select {
		case <-quit:
			return
		case <-t.C:
		}
		now := s.tick()
		// The times compared were read from the coarse clock, up to one
		// interval behind: a connection closes after its timeout, within
		// two intervals, never before.
		iv := int64(s.lim.sweepInterval())
		read, idle := int64(s.lim.ReadTimeout)+iv, int64(s.lim.IdleTimeout)+iv
		late, why = late[:0], why[:0]
		// While a reader waits for room in the response budget, the
		// connection holding the most queued bytes whose writer has been
		// in one write for responseStallTimeout is closed (respbudget.go).
		pressed := s.resp.gwait.Load() > 0
		var victim *serverConn
		var most int
		var stalled time.Duration
		s.mu.Lock()
		for c := range s.conns {
			if w := c.writer.Load(); pressed && w != nil && c.closing.Load() == 0 {
				if d := w.Writing(); d > responseStallTimeout {
					if q := w.Queued(); q > most {
						victim, most, stalled = c, q, d
					}
				}
			}
			if !c.waiting.Load() || c.closing.Load() != 0 {
				continue // only a connection the server waits on is late
			}
			if fs := c.frameStart.Load(); fs != 0 {
				if now-fs > read {
					late, why = append(late, c), append(why, refuseReadTimeout)
				}
			} else if c.groups.Load() == 0 && now-c.lastActive.Load() > idle {
				late, why = append(late, c), append(why, refuseIdleTimeout)
			}
		}
		s.mu.Unlock()
		for i, c := range late {
			if why[i] == refuseReadTimeout {
				s.closeByLimit(c, refuseReadTimeout, "closing a client connection: a frame did not arrive within the read timeout",
					"timeout", s.lim.ReadTimeout, "held", c.charged.Load())
			} else {
				s.closeByLimit(c, refuseIdleTimeout, "closing an idle client connection", "timeout", s.lim.IdleTimeout)
			}
			late[i] = nil
		}
		if victim != nil {
			s.closeByLimit(victim, refuseResponseBudget,
				"response budget spent: closing the client connection with the most responses queued and none written for a while",
				"queued", most, "writing_for", stalled.Round(time.Millisecond), "budget", s.resp.limit)
			victim.nc.Close() // its writer, blocked, fails and drops its queue now
		}
		s.rlog.flush()
	}
}

// tick advances the coarse clock and returns it.
func (s *server) tick() int64 {
	now := int64(time.Since(s.epoch)) + 1 // never 0: 0 means "not set"
	s.clock.Store(now)
	return now
}

// now is the coarse clock: nanoseconds since the server started (plus one),
// as of the sweeper's last tick.
func (s *server) now() int64 { return s.clock.Load() }

// deadlinePast is a read deadline long past: it wakes a reader at once.
var deadlinePast = time.Unix(1, 0)

// closeByLimit closes c for reason r (once): it stops reading (its
// requests in flight are still answered), and counts and logs why.
func (s *server) closeByLimit(c *serverConn, r refusal, msg string, args ...any) {
	if !c.closing.CompareAndSwap(0, int32(r)+1) {
		return
	}
	_ = c.nc.SetReadDeadline(deadlinePast)
	c.poke() // if it waits for room in the response budget
	s.lm.refusals[r].Inc()
	s.logRefusal(c, r, msg, args...)
}

// noteRefusal counts and logs that c's own reader closes it for reason r.
func (s *server) noteRefusal(c *serverConn, r refusal, msg string, args ...any) {
	if !c.closing.CompareAndSwap(0, int32(r)+1) {
		return
	}
	s.lm.refusals[r].Inc()
	s.logRefusal(c, r, msg, args...)
}

func (s *server) logRefusal(c *serverConn, r refusal, msg string, args ...any) {
	s.rlog.logf(r, msg, append(args, "remote", c.remote)...)
}

// levelOf is the level of r's log lines.
func levelOf(r refusal) slog.Level {
	switch r {
	case refuseIdleTimeout:
		return slog.LevelInfo // housekeeping, not a client misbehaving
	case logResponseShare:
		return slog.LevelDebug // flow control: a client reading slower than it asks
	case logAcceptError:
		return slog.LevelError
	}
	return slog.LevelWarn
}
