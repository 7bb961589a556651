package main

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vestalabs/vesta/client/proto"
	"github.com/vestalabs/vesta/engine"
	"github.com/vestalabs/vesta/engine/wire"
	"github.com/vestalabs/vesta/tools/vestad/kv"
)

// replica is what the server needs of an engine.Replica.
type replica interface {
	ProposeAsync(cmd []byte, done func(result []byte, err error))
	Status() engine.Status
}

// Server limits.
const (
	// maxGroupOps and maxGroupBytes bound the requests packed into one
	// engine command: the requests one read from a connection brought.
	maxGroupOps   = 256
	maxGroupBytes = 256 << 10
	// defaultMaxInFlight bounds the requests of one connection proposed and
	// not yet answered; past it the server stops reading that connection.
	defaultMaxInFlight = 4096
	preambleTimeout    = 10 * time.Second
	writeTimeout       = 10 * time.Second
)

// server serves the client protocol (package client/proto) for one replica:
// each connection has a reader goroutine, which packs the requests of each
// read into one kv command and proposes it with ProposeAsync, and a
// proto.Writer, into which the completion (on the engine's goroutine)
// encodes the responses. No goroutine per request.
type server struct {
	r           replica
	clientAddrs map[wire.ReplicaID]string // for not-leader hints
	durability  string
	log         *slog.Logger
	m           *serverMetrics
	maxInFlight int

	mu       sync.Mutex
	ln       net.Listener
	conns    map[*serverConn]struct{}
	stopping bool
	wg       sync.WaitGroup
}

func newServer(r replica, clientAddrs map[wire.ReplicaID]string, durability string, log *slog.Logger, m *serverMetrics) *server {
	return &server{r: r, clientAddrs: clientAddrs, durability: durability, log: log, m: m,
		maxInFlight: defaultMaxInFlight, conns: map[*serverConn]struct{}{}}
}

// statusJSON is the replica's status as /status and OpStatus show it.
type statusJSON struct {
	engine.Status
	LeaderAddr string `json:"leader_addr,omitempty"`
	Durability string `json:"durability"`
}

func (s *server) status() statusJSON {
	st := s.r.Status()
	return statusJSON{Status: st, LeaderAddr: s.clientAddrs[st.Leader], Durability: s.durability}
}

// serve accepts connections on ln until stop.
func (s *server) serve(ln net.Listener) {
	s.mu.Lock()
	s.ln = ln
	s.mu.Unlock()
	s.wg.Add(1)
	defer s.wg.Done()
	for {
		nc, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			stopping := s.stopping
			s.mu.Unlock()
			if !stopping {
				s.log.Error("client listener failed", "err", err)
			}
			return
		}
		c := &serverConn{s: s, nc: nc, sem: make(chan struct{}, s.maxInFlight)}
		s.mu.Lock()
		if s.stopping {
			s.mu.Unlock()
			nc.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		s.m.connections.Inc()
		s.m.connectionsTotal.Inc()
		go c.run()
	}
}

// stopReading closes the listener and stops reading every connection; the
// requests already proposed are still answered (stop the replica to end
// them), then each connection is flushed and closed.
func (s *server) stopReading() {
	s.mu.Lock()
	s.stopping = true
	if s.ln != nil {
		s.ln.Close()
	}
	for c := range s.conns {
		_ = c.nc.SetReadDeadline(time.Now())
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
	w        *proto.Writer
	sem      chan struct{}  // a token per request in flight
	inflight sync.WaitGroup // groups proposed and not completed
	groups   atomic.Int32   // the same, counted: 1 means a group is alone
}

// group is the requests of one read, proposed as one kv command.
type group struct {
	c    *serverConn
	cmd  []byte   // the kv command, built as requests arrive
	ids  []uint64 // the requests' IDs, in the command's order
	res  []kv.Result
	done func([]byte, error) // g.complete, bound once
}

var groupPool sync.Pool

func (c *serverConn) run() {
	s := c.s
	defer func() {
		c.inflight.Wait() // answer what was proposed
		c.w.Close()
		c.nc.Close()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		s.m.connections.Dec()
		s.wg.Done()
	}()
	c.w = proto.NewWriter(c.nc, proto.WriterOptions{
		WriteTimeout: writeTimeout,
		// Unbounded here: the engine's callbacks must not block. What is
		// queued is bounded by maxInFlight responses.
		MaxQueued:    1 << 62,
		OnError:      func(error) { c.nc.Close() },
		DirectWrites: true, // a lone response leaves at once (docs/PERFORMANCE.md step 20)
	})
	if tc, ok := c.nc.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	_ = c.nc.SetReadDeadline(time.Now().Add(preambleTimeout))
	if err := proto.ReadPreamble(c.nc); err != nil {
		s.log.Warn("closing a client connection", "remote", c.nc.RemoteAddr().String(), "err", err)
		s.m.protocolErrors.Inc()
		return
	}
	_ = c.nc.SetReadDeadline(time.Time{})
	s.mu.Lock()
	if s.stopping {
		_ = c.nc.SetReadDeadline(time.Now())
	}
	s.mu.Unlock()
	rd := proto.NewReader(c.nc, 64<<10, proto.DefaultMaxFrameSize)
	g := c.newGroup()
	for {
		body, err := rd.Next()
		if err != nil {
			var de *proto.DecodeError
			if errors.As(err, &de) {
				s.log.Warn("closing a client connection: malformed frame", "remote", c.nc.RemoteAddr().String(), "err", err)
				s.m.protocolErrors.Inc()
			}
			break
		}
		req, err := proto.DecodeRequest(body)
		if err != nil {
			s.log.Warn("closing a client connection: malformed request", "remote", c.nc.RemoteAddr().String(), "err", err)
			s.m.protocolErrors.Inc()
			break
		}
		s.m.requests[req.Op].Inc()
		if req.Op == proto.OpStatus {
			c.respondStatus(req.ID)
			continue
		}
		select {
		case c.sem <- struct{}{}:
		default:
			// Full: propose what is gathered, then wait for room.
			g = c.propose(g)
			c.sem <- struct{}{}
		}
		g.add(&req)
		if !rd.HasFrame() || len(g.ids) >= maxGroupOps || len(g.cmd) >= maxGroupBytes {
			g = c.propose(g)
		}
	}
	c.propose(g)
	groupPool.Put(g)
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
	case proto.OpPut:
		op.Kind = kv.Put
	case proto.OpDelete:
		op.Kind = kv.Delete
	case proto.OpCAS:
		op.Kind = kv.CAS
	case proto.OpOpenSession:
		op.Kind = kv.OpenSession
	}
	if len(g.ids) == 0 {
		g.cmd = kv.BeginCommand(g.cmd[:0])
	}
	// Encode now: req's bytes alias the read buffer.
	g.cmd = kv.AppendOp(g.cmd, &op)
	g.ids = append(g.ids, req.ID)
}

// propose hands g to the replica if it holds anything, and returns an empty
// group for the next requests.
func (c *serverConn) propose(g *group) *group {
	if len(g.ids) == 0 {
		return g
	}
	kv.EndCommand(g.cmd, len(g.ids))
	c.s.m.groupSize.Observe(float64(len(g.ids)))
	c.inflight.Add(1)
	c.groups.Add(1)
	c.s.r.ProposeAsync(g.cmd, g.done)
	return c.newGroup()
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
	// One request, and no other group in flight on this connection: the
	// client has nothing else outstanding here, so its response leaves at
	// once (proto.WriteResponseAlone). Under load there are always other
	// groups, and responses gather as before.
	alone := len(g.ids) == 1 && c.groups.Load() == 1
	for i, id := range g.ids {
		resp := proto.Response{ID: id}
		switch {
		case err == nil:
			r := &g.res[i]
			switch r.Code {
			case kv.CodeOK:
				resp.Found, resp.Swapped, resp.Value = r.Found, r.Swapped, r.Value
			case kv.CodeSessionExpired:
				resp.Status = proto.StatusSessionExpired
				resp.Value = []byte("session unknown (never opened, or evicted)")
			case kv.CodeStale:
				resp.Status = proto.StatusError
				resp.Value = []byte("write below the session's acknowledged mark; not applied")
			default:
				resp.Status = proto.StatusError
				resp.Value = r.Value
			}
		case errors.As(err, &nle):
			resp.Status = proto.StatusNotLeader
			resp.Leader = uint32(nle.Leader)
			resp.LeaderAddr = s.clientAddrs[nle.Leader]
		case errors.Is(err, engine.ErrOutcomeUnknown), errors.Is(err, engine.ErrBusy), errors.Is(err, engine.ErrStopped):
			resp.Status = proto.StatusUnavailable
			resp.Value = []byte(err.Error())
		default:
			resp.Status = proto.StatusUnavailable
			resp.Value = []byte(err.Error())
		}
		s.m.responses[resp.Status].Inc()
		if alone {
			_ = c.w.WriteResponseAlone(&resp) // fails only when the connection is gone
		} else {
			_ = c.w.WriteResponse(&resp)
		}
		<-c.sem
	}
	clear(g.res)
	g.res = g.res[:0]
	g.ids = g.ids[:0]
	if cap(g.cmd) > 2*maxGroupBytes {
		g.cmd = nil
	}
	g.c = nil
	c.groups.Add(-1)
	c.inflight.Done()
	groupPool.Put(g)
}

func (c *serverConn) respondStatus(id uint64) {
	b, err := json.Marshal(c.s.status())
	resp := proto.Response{ID: id, Value: b}
	if err != nil {
		resp.Status, resp.Value = proto.StatusError, []byte(err.Error())
	}
	c.s.m.responses[resp.Status].Inc()
	_ = c.w.WriteResponse(&resp)
}
