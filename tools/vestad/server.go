package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vestalabs/vesta/client/proto"
	"github.com/vestalabs/vesta/engine"
	"github.com/vestalabs/vesta/engine/wire"
	"github.com/vestalabs/vesta/tools/vestad/kv"
)

// replica is what the server needs of an engine.Replica.
type replica interface {
	ProposeAsync(cmd []byte, done func(result []byte, err error))
	ReadAsync(query []byte, mode engine.ReadMode, done func(result []byte, err error))
	ReadAt(ctx context.Context, query []byte, minSlot wire.Slot, allowStale bool) (result []byte, applied wire.Slot, stale bool, err error)
	Status() engine.Status
}

// appliedMarker is what the server needs of the state machine to tell a
// client a write's slot: kv.Store.Applied.
type appliedMarker interface{ Applied() uint64 }

// Server limits.
const (
	// maxGroupOps and maxGroupBytes bound the requests packed into one
	// engine command: the requests one read from a connection brought.
	maxGroupOps   = 256
	maxGroupBytes = 256 << 10
	// defaultMaxInFlight bounds the requests of one connection proposed and
	// not yet answered; past it the server stops reading that connection.
	defaultMaxInFlight = 4096
	writeTimeout       = 10 * time.Second
	// refusalWriteTimeout bounds the write of the refusal sent to a
	// connection beyond -max-client-conns (a fresh socket takes it at once).
	refusalWriteTimeout = 100 * time.Millisecond
	// boundedReadWait bounds how long a bounded-staleness read (ReadBounded)
	// waits for this replica to apply its min slot before it is answered
	// unavailable, naming how far the replica got: below the client's
	// default attempt timeout (2 s), so the client hears why and tries
	// another replica rather than timing out.
	boundedReadWait = time.Second
)

// server serves the client protocol (package client/proto) for one replica:
// each connection has a reader goroutine, which packs the requests of each
// read into one kv command and proposes it with ProposeAsync, and, from its
// first request on, a proto.Writer, into which the completion (on the
// engine's goroutine) encodes the responses. No goroutine per request.
// What connections may cost is bounded by clientLimits (limits.go).
type server struct {
	r           replica
	marks       appliedMarker             // a write's applied slot (kv.Store.Applied); nil: writes carry none
	clientAddrs map[wire.ReplicaID]string // for not-leader hints
	durability  string
	log         *slog.Logger
	m           *serverMetrics
	maxInFlight int
	lim         clientLimits
	lm          *limitMetrics
	rlog        *rateLog
	budget      *bufferBudget
	resp        *respBudget
	epoch       time.Time
	clock       atomic.Int64  // see now
	quit        chan struct{} // stops the sweeper

	mu       sync.Mutex
	ln       net.Listener
	conns    map[*serverConn]struct{}
	stopping bool
	wg       sync.WaitGroup
}

// newServer returns a server for r, whose connections are bounded by lim
// (checked: see clientLimits.check) and whose limits' series go to reg.
func newServer(r replica, clientAddrs map[wire.ReplicaID]string, durability string, log *slog.Logger, m *serverMetrics,
	lim clientLimits, reg prometheus.Registerer) *server {
	s := &server{r: r, clientAddrs: clientAddrs, durability: durability, log: log, m: m,
		maxInFlight: defaultMaxInFlight, lim: lim, rlog: newRateLog(log), epoch: time.Now(),
		quit: make(chan struct{}), conns: map[*serverConn]struct{}{}}
	s.budget = &bufferBudget{s: s, limit: lim.BufferBytes}
	s.resp = newRespBudget(s, lim.ResponseBytes)
	s.lm = newLimitMetrics(reg, s.budget, s.resp)
	s.tick()
	return s
}

// statusJSON is the replica's status as /status and OpStatus show it.
type statusJSON struct {
	engine.Status
	LeaderAddr string `json:"leader_addr,omitempty"`
	Durability string `json:"durability"`
	statusMembers
}

func (s *server) status() statusJSON {
	st := s.r.Status()
	return statusJSON{Status: st, LeaderAddr: s.clientAddrs[st.Leader], Durability: s.durability, statusMembers: membersStatus(s.r)}
}

// serve accepts connections on ln until stop. Beyond lim.MaxConns open
// connections, a new one is sent a refusal and closed at once.
func (s *server) serve(ln net.Listener) {
	s.mu.Lock()
	s.ln = ln
	if s.stopping {
		// stopReading ran before this goroutine did: it found no
		// listener to close.
		s.mu.Unlock()
		ln.Close()
		return
	}
	s.wg.Add(1)
	go s.sweep(s.quit)
	s.mu.Unlock()
	s.wg.Add(1)
	defer s.wg.Done()
	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			stopping := s.stopping
			s.mu.Unlock()
			if stopping || errors.Is(err, net.ErrClosed) {
				if !stopping {
					s.log.Error("client listener closed", "err", err)
				}
				return
			}
			// Out of descriptors, say: wait and go on, as net/http does,
			// rather than stop serving clients for good.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.rlog.logf(logAcceptError, "accepting a client connection failed; retrying", "err", err, "retry_in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		c := &serverConn{s: s, nc: nc, sem: make(chan struct{}, s.maxInFlight), remote: nc.RemoteAddr().String(),
			room: make(chan struct{}, 1)}
		c.lastActive.Store(s.now())
		s.mu.Lock()
		if s.stopping {
			s.mu.Unlock()
			nc.Close()
			return
		}
		if len(s.conns) >= s.lim.MaxConns {
			s.mu.Unlock()
			s.refuse(c)
			continue
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		s.m.connections.Inc()
		s.m.connectionsTotal.Inc()
		go c.run()
	}
}

// refuse turns away a connection beyond the connection limit: it sends one
// response frame with request ID 0 (no request has it: a client numbers its
// requests from 1, and ignores a response it did not ask for) whose status,
// unavailable, and message say why, and closes the connection, all on the
// accepting goroutine, without a goroutine or a buffer kept. Best effort: a
// client whose preamble is not read may see a reset instead.
func (s *server) refuse(c *serverConn) {
	s.lm.refusals[refuseMaxConns].Inc()
	s.logRefusal(c, refuseMaxConns, "refusing a client connection: at the connection limit", "limit", s.lim.MaxConns)
	msg := fmt.Sprintf("vestad: refused: %d client connections open, the limit (-max-client-conns); try another replica or later", s.lim.MaxConns)
	frame := proto.AppendResponse(nil, &proto.Response{Status: proto.StatusUnavailable, Value: []byte(msg)})
	_ = c.nc.SetDeadline(time.Now().Add(refusalWriteTimeout))
	_, _ = c.nc.Write(frame)
	// Take what the client sent already (its preamble), without waiting,
	// so that closing sends the refusal and a FIN rather than a reset.
	_ = c.nc.SetReadDeadline(time.Now())
	var junk [64]byte
	_, _ = c.nc.Read(junk[:])
	_ = c.nc.Close()
}

// stopReading closes the listener and stops reading every connection; the
// requests already proposed are still answered (stop the replica to end
// them), then each connection is flushed and closed.
func (s *server) stopReading() {
	s.mu.Lock()
	if !s.stopping {
		close(s.quit)
	}
	s.stopping = true
	if s.ln != nil {
		s.ln.Close()
	}
	for c := range s.conns {
		_ = c.nc.SetReadDeadline(time.Now())
		c.poke() // if it waits for room in the response budget
	}
	s.mu.Unlock()
}

// wait waits up to d for every connection to finish, then closes the rest.
func (s *server) wait(d time.Duration) {
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return
	case <-time.After(d):
	}
	s.mu.Lock()
	for c := range s.conns {
		c.nc.Close()
	}
	s.mu.Unlock()
	<-done
}

// serverConn is one client connection.
type serverConn struct {
	s        *server
	nc       net.Conn
	remote   string
	slots    bool           // its protocol version carries slots (proto.Version.HasSlots)
	w        *proto.Writer  // made when the first request arrives
	sem      chan struct{}  // a token per request in flight
	inflight sync.WaitGroup // groups proposed and not completed
	groups   atomic.Int32   // the same, counted: 1 means a group is alone

	// For the limits (limits.go), read by the sweeper and the budget.
	waiting    atomic.Bool  // the reader waits for the socket
	frameStart atomic.Int64 // coarse time the reader started waiting for an incomplete frame's rest; 0: none
	lastActive atomic.Int64 // coarse time of the last bytes received or group answered
	charged    atomic.Int64 // bytes of buffers held, charged to the budget
	incomplete atomic.Bool  // the buffer holds an incomplete frame it grew, or waits with
	evicted    atomic.Bool  // chosen by the budget to close
	closing    atomic.Int32 // a refusal+1 once a limit closes it; 0: none
	releaseAmt int64        // charge counted in budget.releasing; guarded by budget.mu

	// For the response budget (respbudget.go).
	respHeld    atomic.Int64                 // bytes reserved for responses in flight, and queued in w
	writer      atomic.Pointer[proto.Writer] // w, for the sweeper
	wantRoom    atomic.Bool                  // the reader waits for room
	writeFailed atomic.Bool                  // w failed: nothing more can be answered
	room        chan struct{}                // poked when c's bytes are given back, or c closes
}

// group is the requests of one read, proposed as one kv command.
type group struct {
	c     *serverConn
	cmd   []byte   // the kv command, built as requests arrive
	ids   []uint64 // the requests' IDs, in the command's order
	res   []kv.Result
	resvs []int32             // what each request reserved for its response (reserveFor), in ids' order
	gets  int                 // the gets among them
	done  func([]byte, error) // g.complete, bound once
	// read is the read mode of a group of gets that skips the log
	// (engine.Replica.ReadAsync, or ReadAt for ReadBounded); ReadThroughLog
	// for a group proposed through the log, writes and gets alike.
	read proto.ReadMode
	// A ReadBounded group's: whether its gets allow stale answers (a group
	// holds gets that all do or all do not), the highest min slot among
	// them (waiting for it serves them all), each one's min slot (for its
	// Stale, in ids' order), and what ReadAt answered.
	allowStale bool
	minSlot    uint64
	mins       []uint64
	applied    uint64
	stale      bool
}

var groupPool sync.Pool

func (c *serverConn) run() {
	s := c.s
	var rd *connReader
	defer func() {
		if rd != nil {
			rd.close() // at once: memory a limit reclaims must not wait for the answers
		}
		c.inflight.Wait() // answer what was proposed
		if c.w != nil {
			c.w.Close()
		}
		c.nc.Close()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		s.m.connections.Dec()
		s.wg.Done()
	}()
	if tc, ok := c.nc.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	// The preamble, like a frame, must arrive within the read timeout.
	_ = c.nc.SetReadDeadline(time.Now().Add(s.lim.ReadTimeout))
	ver, err := proto.ReadPreambleVersion(c.nc)
	if err != nil {
		if s.isStopping() {
			return
		}
		var ve *proto.VersionError
		if errors.As(err, &ve) {
			s.rlog.logf(logBadPreamble, "closing a client connection: protocol version", "remote", c.remote, "err", err)
			s.m.protocolErrors.Inc()
			s.refuseVersion(c, err)
			return
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			s.noteRefusal(c, refuseReadTimeout, "closing a client connection: no preamble within the read timeout",
				"timeout", s.lim.ReadTimeout)
			return
		}
		s.rlog.logf(logBadPreamble, "closing a client connection", "remote", c.remote, "err", err)
		s.m.protocolErrors.Inc()
		return
	}
	c.slots = ver.HasSlots()
	_ = c.nc.SetReadDeadline(time.Time{})
	c.lastActive.Store(s.now())
	s.mu.Lock()
	if s.stopping {
		_ = c.nc.SetReadDeadline(time.Now())
	}
	s.mu.Unlock()
	rd = newConnReader(c, maxRequestFrame)
	// The group being gathered: taken when a request arrives, so that an
	// idle connection holds none (a pooled group keeps its command buffer).
	var g *group
	for {
		body, err := rd.Next()
		if err != nil {
			var de *proto.DecodeError
			if errors.As(err, &de) {
				s.rlog.logf(logMalformed, "closing a client connection: malformed frame", "remote", c.remote, "err", err)
				s.m.protocolErrors.Inc()
			}
			break // a limit's close was counted and logged where it was decided
		}
		if c.writeFailed.Load() {
			// Its responses cannot be sent: the requests it has buffered
			// (up to a read buffer's worth) are not worth proposing.
			break
		}
		req, err := proto.DecodeRequest(body)
		if err != nil {
			s.rlog.logf(logMalformed, "closing a client connection: malformed request", "remote", c.remote, "err", err)
			s.m.protocolErrors.Inc()
			break
		}
		if c.w == nil {
			c.w = proto.NewWriter(c.nc, proto.WriterOptions{
				WriteTimeout: writeTimeout,
				// Unbounded here: the engine's callbacks must not block. What is
				// queued is bounded by the response budget (respbudget.go).
				MaxQueued: 1 << 62,
				OnError: func(error) {
					c.writeFailed.Store(true)
					c.nc.Close()
					c.poke() // if it waits for room in the response budget
				},
				DirectWrites: true, // a lone response leaves at once (docs/PERFORMANCE.md step 20)
				OnWritten:    func(n int) { s.resp.release(c, int64(n)) },
			})
			c.writer.Store(c.w)
		}
		s.m.requests[req.Op].Inc()
		var ok bool
		if req.Op == proto.OpStatus {
			// Answered at once: room for its response, then the answer.
			if g, ok = c.reserveResponse(int64(statusResponse), g); !ok {
				break
			}
			s.resp.release(c, int64(statusResponse-c.respondStatus(req.ID)))
			continue
		}
		select {
		case c.sem <- struct{}{}:
		default:
			// Full: propose what is gathered, then wait for room.
			g = c.propose(g)
			c.sem <- struct{}{}
		}
		// Room for its response in the group it joins: past the
		// connection's share, or the budget's limit, the reader stops
		// reading here.
		var resv int64
		if g, resv, ok = c.reserveRequest(req.Op, g); !ok {
			break
		}
		if g != nil && len(g.ids) > 0 && (g.read != req.Read || g.allowStale != req.AllowStale) {
			// Gets that skip the log travel apart from what goes through
			// it, each read mode apart, and bounded gets that allow stale
			// answers apart from those that wait.
			g = c.propose(g)
		}
		if g == nil {
			g = c.newGroup()
		}
		if len(g.ids) == 0 {
			g.read, g.allowStale, g.minSlot = req.Read, req.AllowStale, 0
		}
		if req.Read == proto.ReadBounded {
			g.minSlot = max(g.minSlot, req.MinSlot)
			g.mins = append(g.mins, req.MinSlot)
		}
		g.add(&req)
		g.resvs = append(g.resvs, int32(resv))
		if !rd.HasFrame() || len(g.ids) >= maxGroupOps || len(g.cmd) >= maxGroupBytes {
			g = c.propose(g)
		}
	}
	c.propose(g)
}

func (s *server) isStopping() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopping
}

func (c *serverConn) newGroup() *group {
	g, _ := groupPool.Get().(*group)
	if g == nil {
		g = &group{}
		g.done = g.complete
	}
	g.c = c
	return g
}

func (g *group) add(req *proto.Request) {
	op := kv.Op{Client: req.Client, Seq: req.Seq, Low: req.Low, Key: req.Key, Value: req.Value, Expect: req.Expect}
	switch req.Op {
	case proto.OpGet:
		op.Kind = kv.Get
		g.gets++
	case proto.OpPut:
		op.Kind = kv.Put
	case proto.OpDelete:
		op.Kind = kv.Delete
	case proto.OpCAS:
		op.Kind = kv.CAS
	case proto.OpOpenSession:
		// Client 0 asks the store for a new session, under an ID it issues
		// (in the response's value); a nonzero one names the session.
		op.Kind = kv.OpenSession
		if req.Client == 0 {
			op.Kind = kv.NewSession
		}
	}
	if len(g.ids) == 0 {
		g.cmd = kv.BeginCommand(g.cmd[:0])
	}
	// Encode now: req's bytes alias the read buffer.
	g.cmd = kv.AppendOp(g.cmd, &op)
	g.ids = append(g.ids, req.ID)
}

// propose hands g to the replica if it holds anything, and returns nil, or
// g if it is empty; g may be nil.
func (c *serverConn) propose(g *group) *group {
	if g == nil || len(g.ids) == 0 {
		return g
	}
	kv.EndCommand(g.cmd, len(g.ids))
	c.s.m.groupSize.Observe(float64(len(g.ids)))
	c.inflight.Add(1)
	c.groups.Add(1)
	switch g.read {
	case proto.ReadIndex:
		c.s.r.ReadAsync(g.cmd, engine.ReadIndex, g.done)
		return nil
	case proto.ReadLease:
		c.s.r.ReadAsync(g.cmd, engine.ReadLease, g.done)
		return nil
	case proto.ReadBounded:
		// ReadAt blocks while this replica catches up: a goroutine per
		// group (not per get) waits for it.
		go g.readAt()
		return nil
	}
	c.s.r.ProposeAsync(g.cmd, g.done)
	return nil
}

// readAt serves a ReadBounded group at this replica, leader or not, with
// engine.Replica.ReadAt, waiting up to boundedReadWait for it to apply the
// group's min slot (unless the group allows stale answers), and completes
// the group.
func (g *group) readAt() {
	s := g.c.s
	ctx, cancel := context.WithTimeout(context.Background(), boundedReadWait)
	res, applied, stale, err := s.r.ReadAt(ctx, g.cmd, wire.Slot(g.minSlot), g.allowStale)
	timedOut := err != nil && ctx.Err() != nil
	cancel()
	if timedOut {
		// The engine may still hold the query (it drops a read whose
		// context ended at its next apply, without reading it): the buffer
		// is not the pool's any more.
		g.cmd = nil
		st := s.r.Status()
		err = &behindError{id: st.ID, applied: st.Applied, minSlot: g.minSlot}
	}
	g.applied, g.stale = uint64(applied), stale
	g.done(res, err)
}

// behindError answers a bounded read this replica could not serve in time.
type behindError struct {
	id      wire.ReplicaID
	applied uint64
	minSlot uint64
}

func (e *behindError) Error() string {
	return fmt.Sprintf("replica %d is behind: it has applied the slots below %d, the read needs those below %d, and it did not get there within %v; "+
		"read at another replica, or allow a stale answer", e.id, e.applied, e.minSlot, boundedReadWait)
}

// appliedFor is the applied slot a group's successful responses carry: the
// slot below which the state they reflect holds every command (0: none).
// Completions run on the engine's applier (see ProposeAsync), after the
// group's command applied, or after its gets read.
func (g *group) appliedFor() uint64 {
	s := g.c.s
	switch g.read {
	case proto.ReadBounded:
		return g.applied
	case proto.ReadIndex, proto.ReadLease:
		// Read between applies: the engine's applied index then is exact,
		// and what is read now is no older. The store's mark is no lower
		// when the engine's has not moved yet.
		a := s.r.Status().Applied
		if s.marks != nil {
			a = max(a, s.marks.Applied())
		}
		return a
	}
	// Through the log: the command applied in a slot s, and the store's
	// mark is s+1 at least (the engine's applied index is only s until the
	// completion returns).
	if s.marks == nil {
		return 0
	}
	return s.marks.Applied()
}

// complete answers a group's requests; it runs on an engine goroutine, so it
// only encodes into the connection's buffer.
func (g *group) complete(result []byte, err error) {
	c := g.c
	s := c.s
	if err == nil {
		g.res, err = kv.DecodeResults(result, g.res[:0])
		if err == nil && len(g.res) != len(g.ids) {
			err = errors.New("internal: result count differs from the request count")
		}
		if err != nil {
			s.log.Error("bad state-machine result", "err", err)
			err = errors.New("vestad: " + err.Error())
		}
	}
	var nle *engine.NotLeaderError
	var applied uint64
	if err == nil && c.slots {
		applied = g.appliedFor()
	}
	// One request, and no other group in flight on this connection: the
	// client has nothing else outstanding here, so its response leaves at
	// once (proto.WriteResponseAlone). Under load there are always other
	// groups, and responses gather as before.
	alone := len(g.ids) == 1 && c.groups.Load() == 1
	// The group's reservations less the frames queued, given back once the
	// group is answered: a get's reservation is its group's (reserveFor), so
	// one get's response may take what others reserved.
	var settle int64
	for i, id := range g.ids {
		resp := proto.Response{ID: id}
		switch {
		case err == nil:
			r := &g.res[i]
			switch r.Code {
			case kv.CodeOK:
				resp.Found, resp.Swapped, resp.Value = r.Found, r.Swapped, r.Value
				resp.Applied = applied
				if g.read == proto.ReadBounded && g.stale {
					// Stale for this get if the state read is below its own min slot.
					resp.Stale = g.applied < g.mins[i]
				}
			case kv.CodeSessionExpired:
				resp.Status = proto.StatusSessionExpired
				resp.Value = r.Value // the store's reason, when it gives one
				if len(resp.Value) == 0 {
					resp.Value = []byte("session unknown (never opened, or evicted); open a new session")
				}
			case kv.CodeStale:
				resp.Status = proto.StatusError
				resp.Value = []byte("write below the session's acknowledged mark; not applied")
			case kv.CodeRetry:
				// A get past its command's kv.MaxReadBytes: unavailable,
				// which the client retries (a get changes nothing).
				resp.Status = proto.StatusUnavailable
				resp.Value = readBudgetMsg
			default:
				resp.Status = proto.StatusError
				resp.Value = r.Value
			}
		case errors.As(err, &nle):
			resp.Status = proto.StatusNotLeader
			resp.Leader = uint32(nle.Leader)
			resp.LeaderAddr = s.clientAddrs[nle.Leader]
		case errors.As(err, new(*engine.FailedError)):
			// The client moves on at once on this prefix: this replica
			// will not recover without a restart.
			resp.Status = proto.StatusUnavailable
			resp.Value = []byte("replica failed: " + errors.Unwrap(err).Error())
		case errors.Is(err, engine.ErrOutcomeUnknown), errors.Is(err, engine.ErrBusy), errors.Is(err, engine.ErrStopped):
			resp.Status = proto.StatusUnavailable
			resp.Value = []byte(err.Error())
		default:
			resp.Status = proto.StatusUnavailable
			resp.Value = []byte(err.Error())
		}
		s.m.responses[resp.Status].Inc()
		var werr error
		if alone {
			werr = c.w.WriteResponseAlone(&resp) // fails only when the connection is gone
		} else {
			werr = c.w.WriteResponse(&resp)
		}
		<-c.sem
		// Queued, the response is charged at its frame's size instead of its
		// reservation.
		settle += int64(g.resvs[i])
		if werr == nil {
			settle -= int64(respFrameSize(&resp))
		}
	}
	s.resp.release(c, settle)
	g.resvs = g.resvs[:0]
	g.gets = 0
	clear(g.res)
	g.res = g.res[:0]
	g.ids = g.ids[:0]
	g.read = proto.ReadThroughLog
	g.mins = g.mins[:0]
	g.allowStale, g.minSlot, g.applied, g.stale = false, 0, 0, false
	if cap(g.cmd) > 2*maxGroupBytes {
		g.cmd = nil
	}
	g.c = nil
	c.lastActive.Store(s.now())
	c.groups.Add(-1)
	c.inflight.Done()
	groupPool.Put(g)
}

// refuseVersion answers a connection whose preamble named a protocol version
// this server does not speak with one response frame in the oldest layout
// (request ID 0, StatusError, the reason) and closes it, as refuse does.
func (s *server) refuseVersion(c *serverConn, err error) {
	frame := proto.AppendResponse(nil, &proto.Response{Status: proto.StatusError, Value: []byte("vestad: refused: " + err.Error())})
	_ = c.nc.SetWriteDeadline(time.Now().Add(refusalWriteTimeout))
	_, _ = c.nc.Write(frame)
	// Take what the client sent already, without waiting, so that closing
	// sends the refusal and a FIN rather than a reset.
	_ = c.nc.SetReadDeadline(time.Now())
	var junk [512]byte
	_, _ = c.nc.Read(junk[:])
}

// readBudgetMsg is the message of a get answered kv.CodeRetry.
var readBudgetMsg = []byte("read result budget of one batch exceeded; retry")

// respondStatus answers a status request and returns the size of the frame
// it queued (0 if none).
func (c *serverConn) respondStatus(id uint64) int {
	b, err := json.Marshal(c.s.status())
	resp := proto.Response{ID: id, Value: b}
	if err != nil {
		resp.Status, resp.Value = proto.StatusError, []byte(err.Error())
	}
	c.s.m.responses[resp.Status].Inc()
	if c.w.WriteResponse(&resp) != nil {
		return 0
	}
	return respFrameSize(&resp)
}
