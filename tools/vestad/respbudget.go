package main

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/vestalabs/vesta/client/proto"
	"github.com/vestalabs/vesta/tools/vestad/kv"
)

// What a connection's responses may cost (issue 12 item 5, the response
// side). A response used to be encoded into its connection's writer as its
// request completed, and the writer's queue had no bound: one connection
// that sent 3 000 pipelined gets of a 1 MiB value and read nothing took
// vestad from 18 MB to 2 GB (7 GB in TestClientUnreadResponsesAttack), held
// until the write timeout closed it. The slot of a request in flight
// (maxInFlight) was given back when its response was queued, not when it
// was written, so it bounded nothing here.
//
// Now every response is charged to one budget (clientLimits.ResponseBytes),
// from before its request is proposed until its bytes are written:
//
//   - The reader reserves, before it proposes a request, the most its
//     response can take in the group it joins (reserveFor): a few hundred
//     bytes (smallResponse) for a request other than a get, and for a
//     group's gets together getsReserve: a largest value's frame (1 MiB)
//     for the first, a smallResponse for each other. The server cannot
//     know a value's size before it is read, and the state machine copies
//     every value a command reads into its result (3 000 gets of 1 MiB
//     were 3 GB before any response was queued), so the bound is the state
//     machine's: the gets of one command return at most kv.MaxReadBytes
//     (1 MiB) of values together, but for its first value, however large,
//     and a get past it is answered kv.CodeRetry, sent as unavailable
//     ("read result budget of one batch exceeded; retry"), which the
//     client sends again, in another group (a get changes nothing; see
//     the kv package comment). Once a response is queued for writing, its
//     reservation is exchanged for its frame's size (respFrameSize), given
//     back when the write of it returns, or when the connection fails and
//     drops it (proto.WriterOptions.OnWritten). The completion settles
//     once a group (a get's response may take what the group's other gets
//     reserved), so that the engine's goroutine that runs it pays little.
//   - A connection may hold at most its share, ResponseBytes/respShares.
//     While a request's reservation does not fit, its reader proposes what
//     it gathered and stops reading (backpressure: the client's requests
//     wait in the socket) until the connection's writer has written
//     enough. A client that stops reading altogether is closed by the
//     write timeout.
//   - All connections together hold at most ResponseBytes. A reservation
//     that does not fit waits likewise. What gives while one waits: the
//     connection holding the most queued bytes whose writer has been in
//     one write for responseStallTimeout (proto.Writer.Writing) is closed,
//     its queue dropped at once, one a sweep. Waiting alone would leave
//     the budget with the clients that do not read until the write timeout
//     (10 s): a few of them would stall every other client that long, and
//     again as soon as they reconnect. Closing the largest stalled queue
//     frees the most memory per connection closed, and only a client that
//     is not reading pays: one that takes a write (at most what is queued,
//     about its share) within responseStallTimeout is never chosen, and one
//     whose requests merely wait for the log holds reservations, not
//     queued bytes. A client closed so retries (client.Client does, with
//     its session).
//
// The budget counts the bytes of frames, not the capacity of the buffers
// holding them (an encoded queue's buffer may be up to twice its length)
// nor the transient copies a get's value goes through on its way (the
// state machine's scratch and result, then the frame), so the memory it
// bounds is a small multiple of ResponseBytes: a connection stalled with
// its 16 MiB share full of 1 MiB responses took vestad's VmRSS up by about
// 80 MB when each get reserved its own, 70 MB now that they are a value
// and 255 retries a group (TestClientUnreadResponsesAttack).
//
// The price: a group of gets reserves a largest value however small their
// values, so a connection has at most share/getsReserve groups of them in
// flight (14 groups of maxGroupOps by default: about 3 600 gets, near
// maxInFlight); and a get whose value would take its group past
// kv.MaxReadBytes goes back to the client and is sent again, so gets of
// large values pipelined on one connection are answered about one 1 MiB
// value a group, the rest retried (TestPipelinedBigGets: 600 gets of 1 MiB
// in 0.85 s, with some 14 000 retries; 1.3 s when each get reserved its
// largest value and no group returned more than 16 of them). Gets of small
// values no longer wait for the budget: BenchmarkPipelinedGet (128 in
// flight on one connection) went from 4.8-5.2 to 2.1-2.3 µs a get, and
// vesta-bench -reads 0.5 from 0.64 to 1.18 M ops/s, what it does with the
// budget made huge (1.09-1.24 M; 2 cores). -client-response-bytes trades
// memory for more groups in flight.
//
// Waits are counted in vestad_client_response_stalls_total{budget} and
// closes in vestad_client_refusals_total{reason="response-budget"}, both
// logged at the rate limit.

// respShares: a connection may hold ResponseBytes/respShares.
const respShares = 4

// responseStallTimeout is how long a connection's writer must have been in
// one write before the connection may be closed to make room in the
// response budget.
const responseStallTimeout = time.Second

// The reservations of respReserve.
var (
	// emptyResponse is the frame of a response with no value, address or
	// applied slot.
	emptyResponse = len(proto.AppendResponse(nil, &proto.Response{}))
	// maxGetResponse is the frame of a get's response with the largest value.
	maxGetResponse = emptyResponse - 1 + uvarintLen(proto.MaxValueSize) + proto.MaxValueSize + proto.SlotSize
	// smallResponse is reserved for another request's response: none holds
	// a value but a short message (an error's, a session's ID) or a
	// not-leader's address. One that holds more is charged its size when
	// it is queued.
	smallResponse = emptyResponse + 256
	// statusResponse is reserved for a status request's (answered at once).
	statusResponse = 4 << 10
)

// maxGroupReads bounds the bytes of values a group's gets return together:
// the store answers a command's gets past kv.MaxReadBytes kv.CodeRetry, but
// for its first value, which may be the largest.
const maxGroupReads = max(kv.MaxReadBytes, proto.MaxValueSize)

// getsReserve is what the responses of n gets of one group may take
// together: each a largest value's frame, or, fewer bytes for more than one,
// the group's values (maxGroupReads) and a smallResponse each, which holds
// a get's frame but its value (its header, the value's length, or the
// message of a retry).
func getsReserve(n int) int64 {
	return min(int64(n)*int64(maxGetResponse), maxGroupReads+int64(n)*int64(smallResponse))
}

// reserveFor is what a request of op reserves for its response as it joins
// g (nil: a new group): a get the growth of its group's getsReserve.
func (g *group) reserveFor(op proto.Op) int64 {
	if op != proto.OpGet {
		return respReserve(op)
	}
	n := 0
	if g != nil {
		n = g.gets
	}
	return getsReserve(n+1) - getsReserve(n)
}

// respFrameSize is the size of r's frame (proto.AppendResponse's).
func respFrameSize(r *proto.Response) int {
	n := emptyResponse - 2 + uvarintLen(len(r.Value)) + len(r.Value) + uvarintLen(len(r.LeaderAddr)) + len(r.LeaderAddr)
	if r.Applied != 0 {
		n += proto.SlotSize
	}
	return n
}

// respReserve is what a request of op reserves for its response alone (in
// a group, a get reserves less: see reserveFor).
func respReserve(op proto.Op) int64 {
	switch op {
	case proto.OpGet:
		return int64(maxGetResponse)
	case proto.OpStatus:
		return int64(statusResponse)
	}
	return int64(smallResponse)
}

// respBudget charges the responses of all connections against
// clientLimits.ResponseBytes; see above.
type respBudget struct {
	s     *server
	limit int64
	share int64        // what one connection may hold
	used  atomic.Int64 // bytes reserved or queued, all connections

	gwait atomic.Int32 // readers waiting for room in the limit
	mu    sync.Mutex
	freed chan struct{} // closed, and replaced, when bytes are given back while readers wait
}

func newRespBudget(s *server, limit int64) *respBudget {
	return &respBudget{s: s, limit: limit, share: limit / respShares, freed: make(chan struct{})}
}

// Why a reservation did not fit.
const (
	respFits      = iota
	respOverShare // the connection's share: stalls labelled "connection"
	respOverLimit // the budget's limit: stalls labelled "global"
)

var respStallNames = [...]string{respOverShare: "connection", respOverLimit: "global"}

// tryReserve charges n bytes to c if they fit c's share and the limit. A
// reservation fits a connection holding nothing, and a budget holding
// nothing: the share and the limit are at least the largest reservation.
func (b *respBudget) tryReserve(c *serverConn, n int64) int {
	if c.respHeld.Load()+n > b.share {
		return respOverShare
	}
	if u := b.used.Add(n); u > b.limit && u != n {
		b.give(n)
		return respOverLimit
	}
	c.respHeld.Add(n)
	return respFits
}

// release gives back n bytes c held; a negative n charges -n more, which
// the caller holds already (a response larger than its reservation).
func (b *respBudget) release(c *serverConn, n int64) {
	if n == 0 {
		return
	}
	c.respHeld.Add(-n)
	if n < 0 {
		b.used.Add(-n)
		return
	}
	b.give(n)
	if c.wantRoom.Load() {
		c.poke()
	}
}

// give takes n bytes off the budget and wakes the readers waiting for room.
func (b *respBudget) give(n int64) {
	b.used.Add(-n)
	if b.gwait.Load() > 0 {
		b.mu.Lock()
		close(b.freed)
		b.freed = make(chan struct{})
		b.mu.Unlock()
	}
}

// freedChan returns the channel closed when bytes are next given back
// while a reader waits (see gwait).
func (b *respBudget) freedChan() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.freed
}

// reserveResponse reserves n bytes for the response of the request c's
// reader is about to take on, waiting while they do not fit. Before it
// waits it proposes what g gathered (so that what holds the budget can
// complete) and returns the group to go on with. ok is false if the
// connection was closed, or the server stopped, while it waited.
func (c *serverConn) reserveResponse(n int64, g *group) (_ *group, ok bool) {
	s := c.s
	b := s.resp
	why := b.tryReserve(c, n)
	if why == respFits {
		return g, true
	}
	g = c.propose(g)
	s.lm.respStalls[why].Inc()
	if why == respOverShare {
		s.logRefusal(c, logResponseShare, "a client connection's responses fill its share of the response budget: not reading it until they are written",
			"held", c.respHeld.Load(), "share", b.share)
	} else {
		s.logRefusal(c, logResponseLimit, "response budget spent: a client connection waits for room",
			"used", b.used.Load(), "budget", b.limit)
	}
	c.wantRoom.Store(true)
	defer c.wantRoom.Store(false)
	registered := false
	defer func() {
		if registered {
			b.gwait.Add(-1)
		}
	}()
	tick := time.NewTicker(s.lim.sweepInterval())
	defer tick.Stop()
	var freed <-chan struct{}
	for {
		if c.closing.Load() != 0 || c.writeFailed.Load() || s.isStopping() {
			return g, false
		}
		if registered {
			freed = b.freedChan() // before the try: a release after it closes this one
		}
		switch b.tryReserve(c, n) {
		case respFits:
			return g, true
		case respOverLimit:
			if !registered {
				b.gwait.Add(1)
				registered = true
				continue // try again, now that releases wake it
			}
		}
		select {
		case <-c.room:
		case <-freed:
		case <-tick.C:
		}
	}
}

// reserveRequest reserves room for the response of a request of op about
// to join g (nil: a new group), waiting while it does not fit
// (reserveResponse, which proposes g first). It returns the group to add the
// request to (nil: a new one) and what it reserved; ok as reserveResponse's.
func (c *serverConn) reserveRequest(op proto.Op, g *group) (_ *group, n int64, ok bool) {
	n = g.reserveFor(op)
	g2, ok := c.reserveResponse(n, g)
	if !ok || g2 == g {
		return g2, n, ok
	}
	// g was proposed while the request waited: it starts a group, where it
	// may need more (a get the largest value).
	if more := g2.reserveFor(op) - n; more > 0 {
		if g2, ok = c.reserveResponse(more, g2); !ok {
			c.s.resp.release(c, n)
			return g2, 0, false
		}
		n += more
	}
	return g2, n, true
}

// poke wakes c's reader if it waits for room in the response budget.
func (c *serverConn) poke() {
	select {
	case c.room <- struct{}{}:
	default:
	}
}
