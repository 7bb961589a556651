package client

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/vestalabs/vesta/client/proto"
	"github.com/vestalabs/vesta/tools/vestad/kv"
)

// fakeCluster is a stand-in for a vestad cluster: servers that speak the
// client protocol, one of which "leads" and applies requests to a shared
// kv.Store, the others answering not-leader with a hint. Faults: a request
// applied but its response lost (the connection closed instead), a request
// answered unavailable without applying, a server that never answers (or
// applies and never answers), a server that refuses everything with a
// message, as a failed replica does, and a server that stops listening.
//
// An open-session with client 0 gets a session the store issues, as vestad
// does (kv.NewSession; the reply's value is the ID), unless the cluster
// plays a vestad from before issued sessions (old), whose store refuses
// client 0.
type fakeCluster struct {
	t       *testing.T
	servers []*fakeServer

	mu          sync.Mutex
	store       *kv.Store
	leader      int            // index into servers; -1: none
	loseReply   float64        // probability that a write applies and its reply is lost
	unavailable float64        // probability of answering unavailable without applying
	hang        bool           // the leader reads requests and never answers
	mute        int            // index of a server that reads requests and never answers (-1: none)
	muteApplies bool           // the mute server applies writes (as the leader it was) before not answering
	round       uint64         // the leader's ballot is round.(leader+1); setLeader raises it
	refuse      map[int]string // servers that answer every request unavailable with this message
	rng         *rand.Rand
	applied     map[[2]uint64]int // (client, seq) -> times it reached the store
	reqs        map[int]int       // server -> requests other than status it received
	old         bool              // refuse open-session with client 0, as vestad did before issued sessions
	loseOpens   int               // lose the replies of this many open-sessions, applied
	expireOpens int               // answer this many open-sessions session-expired, not applied
	opens       []uint64          // the client ID of each open-session that reached the leader
	onLose      func()            // runs (under mu) when a write's reply is lost
	// Slots: each request the leader applies takes the next; answers carry
	// it (Response.Applied). Bounded reads are served by any server, whose
	// applied slot is the leader's unless lag holds one for it; minSlots
	// records each bounded read's min slot.
	slot     uint64
	lag      map[int]uint64
	minSlots []uint64

	conns atomic.Int64 // connections accepted
}

type fakeServer struct {
	c    *fakeCluster
	idx  int
	ln   net.Listener
	addr string
	wg   sync.WaitGroup
	mu   sync.Mutex
	live map[net.Conn]bool
}

func newFakeCluster(t *testing.T, n int, opts kv.Options) *fakeCluster {
	c := &fakeCluster{t: t, store: kv.New(opts), rng: rand.New(rand.NewPCG(1, 2)), applied: map[[2]uint64]int{}, mute: -1,
		round: 1, refuse: map[int]string{}, reqs: map[int]int{}, lag: map[int]uint64{}}
	for i := 0; i < n; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		s := &fakeServer{c: c, idx: i, ln: ln, addr: ln.Addr().String(), live: map[net.Conn]bool{}}
		c.servers = append(c.servers, s)
		s.wg.Add(1)
		go s.acceptLoop()
	}
	c.leader = n - 1 // not the first address: clients must follow a redirect
	t.Cleanup(c.close)
	return c
}

func (c *fakeCluster) addrs() []string {
	var out []string
	for _, s := range c.servers {
		out = append(out, s.addr)
	}
	return out
}

func (c *fakeCluster) close() {
	for _, s := range c.servers {
		s.ln.Close()
		s.mu.Lock()
		for nc := range s.live {
			nc.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	}
}

// setLeader makes server i the leader, under a new ballot.
func (c *fakeCluster) setLeader(i int) {
	c.mu.Lock()
	c.leader = i
	c.round++
	c.mu.Unlock()
}

// stop closes server i's listener and connections: its address refuses
// connections from now on.
func (c *fakeCluster) stop(i int) {
	s := c.servers[i]
	s.ln.Close()
	s.mu.Lock()
	for nc := range s.live {
		nc.Close()
	}
	s.mu.Unlock()
}

func (s *fakeServer) acceptLoop() {
	defer s.wg.Done()
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.c.conns.Add(1)
		s.mu.Lock()
		s.live[nc] = true
		s.mu.Unlock()
		s.wg.Add(1)
		go s.serve(nc)
	}
}

func (s *fakeServer) serve(nc net.Conn) {
	defer s.wg.Done()
	defer func() {
		nc.Close()
		s.mu.Lock()
		delete(s.live, nc)
		s.mu.Unlock()
	}()
	if err := proto.ReadPreamble(nc); err != nil {
		return
	}
	w := proto.NewWriter(nc, proto.WriterOptions{})
	defer w.Close()
	rd := proto.NewReader(nc, 0, 0)
	for {
		body, err := rd.Next()
		if err != nil {
			return
		}
		req, err := proto.DecodeRequest(body)
		if err != nil {
			s.c.t.Errorf("fake server: %v", err)
			return
		}
		resp, ok := s.handle(&req)
		if !ok {
			return // lose the reply: close the connection
		}
		if resp == nil {
			continue // hang
		}
		if w.WriteResponse(resp) != nil {
			return
		}
	}
}

// handle answers one request; ok false means drop the connection instead.
func (s *fakeServer) handle(req *proto.Request) (resp *proto.Response, ok bool) {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	resp = &proto.Response{ID: req.ID}
	if req.Op != proto.OpStatus {
		c.reqs[s.idx]++
	}
	// A mute server that applies writes was the leader when it was paused,
	// before it could answer; the write applies as if it were still.
	appliesMuted := c.mute == s.idx && c.muteApplies && req.Op.IsWrite()
	if c.mute == s.idx && !appliesMuted {
		return nil, true
	}
	if msg, ok := c.refuse[s.idx]; ok {
		resp.Status = proto.StatusUnavailable
		resp.Value = []byte(msg)
		return resp, true
	}
	if req.Op == proto.OpStatus {
		st := ServerStatus{ID: uint32(s.idx + 1), Role: "follower", Leader: uint32(c.leader + 1),
			Promised: fmt.Sprintf("%d.%d", c.round, c.leader+1)}
		if c.leader == s.idx {
			st.Role, st.Ballot = "leader", st.Promised
		}
		if c.leader >= 0 {
			st.LeaderAddr = c.servers[c.leader].addr
		}
		resp.Value, _ = json.Marshal(st)
		return resp, true
	}
	if req.Read == proto.ReadBounded {
		return s.bounded(req, resp), true
	}
	if c.leader != s.idx && !appliesMuted {
		resp.Status = proto.StatusNotLeader
		if c.leader >= 0 {
			resp.Leader = uint32(c.leader + 1)
			resp.LeaderAddr = c.servers[c.leader].addr
		}
		return resp, true
	}
	if c.hang {
		return nil, true
	}
	if c.rng.Float64() < c.unavailable {
		resp.Status = proto.StatusUnavailable
		resp.Value = []byte("fake: try again")
		return resp, true
	}
	op := kv.Op{Kind: kv.Kind(req.Op), Client: req.Client, Seq: req.Seq, Low: req.Low, Key: req.Key, Value: req.Value, Expect: req.Expect}
	if req.Op == proto.OpOpenSession {
		c.opens = append(c.opens, req.Client)
		if c.expireOpens > 0 {
			c.expireOpens--
			resp.Status = proto.StatusSessionExpired
			resp.Value = []byte("fake: open a new session")
			return resp, true
		}
		if req.Client == 0 && !c.old {
			op.Kind = kv.NewSession
		}
	}
	if req.Op.IsWrite() {
		c.applied[[2]uint64{req.Client, req.Seq}]++
	}
	results := make([][]byte, 1)
	c.store.Apply([][]byte{kv.AppendCommand(nil, []kv.Op{op})}, results)
	rs, err := kv.DecodeResults(results[0], nil)
	if err != nil || len(rs) != 1 {
		c.t.Errorf("fake server: results %v %v", rs, err)
		return nil, false
	}
	r := rs[0]
	c.slot++
	switch r.Code {
	case kv.CodeOK:
		resp.Found, resp.Swapped, resp.Value = r.Found, r.Swapped, r.Value
		resp.Applied = c.slot + 1
	case kv.CodeSessionExpired:
		resp.Status = proto.StatusSessionExpired
		resp.Value = r.Value
	default:
		resp.Status = proto.StatusError
		resp.Value = []byte(r.Code.String() + ": " + string(r.Value))
	}
	if req.Op.IsWrite() && c.rng.Float64() < c.loseReply {
		if c.onLose != nil {
			c.onLose()
		}
		return nil, false
	}
	if req.Op == proto.OpOpenSession && c.loseOpens > 0 {
		c.loseOpens--
		return nil, false
	}
	if c.mute == s.idx {
		return nil, true // applied, never answered
	}
	return resp, true
}

// bounded serves a bounded read at s (c.mu held): at once if s has applied
// the min slot or the read allows stale, else unavailable as vestad says it.
func (s *fakeServer) bounded(req *proto.Request, resp *proto.Response) *proto.Response {
	c := s.c
	c.minSlots = append(c.minSlots, req.MinSlot)
	applied := c.slot + 1
	if a, ok := c.lag[s.idx]; ok {
		applied = a
	}
	if applied < req.MinSlot && !req.AllowStale {
		resp.Status = proto.StatusUnavailable
		resp.Value = fmt.Appendf(nil, "replica %d is behind: it has applied the slots below %d, the read needs those below %d", s.idx+1, applied, req.MinSlot)
		return resp
	}
	results := make([][]byte, 1)
	c.store.Apply([][]byte{kv.AppendCommand(nil, []kv.Op{{Kind: kv.Get, Key: req.Key}})}, results)
	rs, err := kv.DecodeResults(results[0], nil)
	if err != nil || len(rs) != 1 {
		c.t.Errorf("fake server: results %v %v", rs, err)
		return nil
	}
	resp.Found, resp.Value, resp.Applied, resp.Stale = rs[0].Found, rs[0].Value, applied, applied < req.MinSlot
	return resp
}
