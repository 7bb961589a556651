package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vestalabs/vesta/client"
	"github.com/vestalabs/vesta/client/proto"
	"github.com/vestalabs/vesta/tools/vestad/kv"
)

// These tests run the client against vestad with a small -max-sessions, so
// sessions are evicted while clients use them, through a proxy that records
// every request the clients send (and may lose replies); the recorded
// requests are then sent again, late, as a network that duplicates and
// delays would. With store-issued session IDs no late copy of a write
// applies again: its session is live (the copy is deduplicated or stale) or
// was evicted (refused for good; a replayed open issues another ID).

// recProxy forwards client connections to target and records the request
// frames the clients send. With drop > 0 it closes a connection right after
// forwarding a write, with that probability: the write may apply, and its
// reply is lost.
type recProxy struct {
	ln     net.Listener
	target string
	drop   float64

	mu     sync.Mutex
	rng    *rand.Rand
	frames [][]byte // request frames, length prefix included, in the order forwarded
	conns  map[net.Conn]bool
	wg     sync.WaitGroup
}

func newRecProxy(t *testing.T, target string, drop float64) *recProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &recProxy{ln: ln, target: target, drop: drop, rng: rand.New(rand.NewPCG(7, 11)), conns: map[net.Conn]bool{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *recProxy) addr() string { return p.ln.Addr().String() }

func (p *recProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	for nc := range p.conns {
		nc.Close()
	}
	p.conns = nil
	p.mu.Unlock()
	p.wg.Wait()
}

// track records a live connection (on) or forgets it; one tracked after
// close is closed at once.
func (p *recProxy) track(nc net.Conn, on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case on && p.conns == nil:
		nc.Close()
	case on:
		p.conns[nc] = true
	case p.conns != nil:
		delete(p.conns, nc)
	}
}

func (p *recProxy) accept() {
	defer p.wg.Done()
	for {
		cc, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go p.pipe(cc)
	}
}

func (p *recProxy) pipe(cc net.Conn) {
	defer p.wg.Done()
	defer cc.Close()
	sc, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	defer sc.Close()
	p.track(cc, true)
	p.track(sc, true)
	defer p.track(cc, false)
	defer p.track(sc, false)
	p.wg.Add(1)
	go func() { // replies
		defer p.wg.Done()
		_, _ = io.Copy(cc, sc)
		cc.Close()
	}()
	var pre [len(proto.Preamble)]byte
	if _, err := io.ReadFull(cc, pre[:]); err != nil {
		return
	}
	if _, err := sc.Write(pre[:]); err != nil {
		return
	}
	rd := proto.NewReader(cc, 0, 0)
	for {
		body, err := rd.Next()
		if err != nil {
			return
		}
		req, err := proto.DecodeRequest(body)
		if err != nil {
			return
		}
		frame := frameOf(body)
		p.mu.Lock()
		p.frames = append(p.frames, frame)
		drop := req.Op.IsWrite() && p.drop > 0 && p.rng.Float64() < p.drop
		p.mu.Unlock()
		if _, err := sc.Write(frame); err != nil || drop {
			return
		}
	}
}

// recorded returns the requests forwarded so far, decoded.
func (p *recProxy) recorded(t *testing.T) []proto.Request {
	t.Helper()
	p.mu.Lock()
	frames := slices.Clone(p.frames)
	p.mu.Unlock()
	var out []proto.Request
	for _, f := range frames {
		req, err := proto.DecodeRequest(f[4:])
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, req)
	}
	return out
}

// The deterministic case of issue 12 item 10: a client's session is
// evicted, the client recovers in a new one, and then every request it
// sent arrives again. The opens with client 0 issue other sessions; every
// write is refused as session-expired, none applies a second time.
func TestClientSessionEvictedAndReplayed(t *testing.T) {
	addr, metricsAddr := inProc(t, "-max-sessions=1")
	waitLeaderAt(t, addr)
	p := newRecProxy(t, addr, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, err := client.New([]string{p.addr()}, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := client.New([]string{addr}, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	if err := a.Put(ctx, []byte("k"), []byte("1")); err != nil {
		t.Fatal(err)
	}
	if err := b.Put(ctx, []byte("j"), []byte("x")); err != nil { // evicts a's session
		t.Fatal(err)
	}
	if err := a.Put(ctx, []byte("k"), []byte("2")); err != nil {
		t.Fatalf("put after a's session was evicted: %v", err)
	}
	if n := metric(t, metricsAddr, "vestad_kv_sessions_evicted_total"); n < 2 {
		t.Fatalf("%v sessions evicted, want at least 2", n)
	}

	reqs := p.recorded(t)
	var sessions []uint64 // of a's writes, distinct, in order
	for _, r := range reqs {
		switch {
		case r.Op == proto.OpOpenSession && r.Client != 0:
			t.Fatalf("the client opened a session it named (%#x), not one the store issues", r.Client)
		case r.Op.IsWrite():
			if !kv.IsIssuedSessionID(r.Client) {
				t.Fatalf("a write in session %#x, not an issued ID", r.Client)
			}
			if !slices.Contains(sessions, r.Client) {
				sessions = append(sessions, r.Client)
			}
		}
	}
	if len(sessions) != 2 {
		t.Fatalf("a's writes ran in sessions %#x, want 2 (one before the eviction, one after): %+v", sessions, reqs)
	}

	// Everything a sent, again, late.
	nc := dialPreamble(t, addr)
	for i, r := range reqs {
		r.ID = uint64(i + 1)
		resp := roundTrip(t, nc, r)
		switch {
		case r.Op == proto.OpOpenSession:
			if resp.Status != proto.StatusOK || len(resp.Value) != 8 {
				t.Fatalf("replayed open: %+v", resp)
			}
		case r.Op.IsWrite():
			if resp.Status != proto.StatusSessionExpired {
				t.Fatalf("replayed write %s=%s of session %#x seq %d: %v %q, want session-expired",
					r.Key, r.Value, r.Client, r.Seq, resp.Status, resp.Value)
			}
		}
	}
	// An old-style open naming the first session does not bring it back.
	resp := roundTrip(t, nc, proto.Request{ID: 1000, Op: proto.OpOpenSession, Client: sessions[0]})
	if resp.Status != proto.StatusSessionExpired || !strings.Contains(string(resp.Value), "evicted") {
		t.Fatalf("reopening an evicted session: %v %q", resp.Status, resp.Value)
	}
	if v, _, err := b.Get(ctx, []byte("k")); err != nil || string(v) != "2" {
		t.Fatalf("k = %q (%v) after the replay, want 2", v, err)
	}
	if err := a.Put(ctx, []byte("k"), []byte("3")); err != nil {
		t.Fatalf("put after the replay: %v", err)
	}
	if v, _, err := b.Get(ctx, []byte("k")); err != nil || string(v) != "3" {
		t.Fatalf("k = %q (%v), want 3", v, err)
	}
}

// Several clients, fewer sessions kept than clients, replies lost, and old
// requests replayed all along: each client's key, read right after an
// acknowledged put, holds that put's value (no late copy of an earlier
// write applied in between), and still does after everything recorded is
// replayed at the end over a value none of them holds. A write may fail
// only with ErrOutcomeUnknown.
func TestClientExactlyOnceUnderEvictionAndReplay(t *testing.T) {
	const workers, writes = 4, 150
	addr, metricsAddr := inProc(t, "-max-sessions=2")
	waitLeaderAt(t, addr)
	p := newRecProxy(t, addr, 0.05)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// The replayer: recorded requests, sent again at random while the
	// clients run, on a connection of its own whose replies it discards.
	var replayed atomic.Int64
	stop := make(chan struct{})
	replayDone := make(chan struct{})
	rc := dialPreamble(t, addr)
	go func() { _, _ = io.Copy(io.Discard, rc) }()
	go func() {
		defer close(replayDone)
		rng := rand.New(rand.NewPCG(3, 5))
		for id := uint64(1); ; id++ {
			select {
			case <-stop:
				return
			case <-time.After(500 * time.Microsecond):
			}
			p.mu.Lock()
			var f []byte
			if n := len(p.frames); n > 0 {
				f = p.frames[rng.IntN(n)]
			}
			p.mu.Unlock()
			if f == nil {
				continue
			}
			req, _ := proto.DecodeRequest(f[4:])
			req.ID = id
			if _, err := rc.Write(proto.AppendRequest(nil, &req)); err != nil {
				return
			}
			replayed.Add(1)
		}
	}()

	var wg sync.WaitGroup
	last := make([]int, workers)      // the last acknowledged value of each worker's key
	unknown := make([][]int, workers) // values written since, with unknown outcomes
	for w := range workers {
		c, err := client.New([]string{p.addr()}, client.Options{BackoffMin: time.Millisecond, BackoffMax: 20 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := []byte(fmt.Sprint("w", w))
			for i := 1; i <= writes; i++ {
				cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
				err := c.Put(cctx, key, []byte(strconv.Itoa(i)))
				ccancel()
				if errors.Is(err, client.ErrOutcomeUnknown) {
					unknown[w] = append(unknown[w], i)
					continue
				}
				if err != nil {
					t.Errorf("worker %d: put %d: %v", w, i, err)
					return
				}
				last[w], unknown[w] = i, nil
				v, _, err := c.Get(ctx, key)
				if err != nil {
					t.Errorf("worker %d: get after put %d: %v", w, i, err)
					return
				}
				if string(v) != strconv.Itoa(i) {
					t.Errorf("worker %d: %s = %q right after put %d was acknowledged: an earlier write applied late", w, key, v, i)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	<-replayDone
	if t.Failed() {
		return
	}

	check, err := client.New([]string{addr}, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer check.Close()
	for w := range workers {
		v, _, err := check.Get(ctx, []byte(fmt.Sprint("w", w)))
		if err != nil {
			t.Fatal(err)
		}
		if want := append([]int{last[w]}, unknown[w]...); !slices.Contains(want, atoi(string(v))) {
			t.Fatalf("worker %d's key = %q, want one of %v", w, v, want)
		}
		// A value no recorded write holds, written in a session of its own.
		if err := check.Put(ctx, []byte(fmt.Sprint("w", w)), []byte("final")); err != nil {
			t.Fatal(err)
		}
	}

	// Everything recorded, once more, in order, pipelined: any write that
	// applied again would overwrite "final".
	reqs := p.recorded(t)
	nc := dialPreamble(t, addr)
	var buf []byte
	for i, r := range reqs {
		r.ID = uint64(i + 1)
		buf = proto.AppendRequest(buf, &r)
	}
	go func() { _, _ = nc.Write(buf) }()
	rd := proto.NewReader(nc, 0, 0)
	_ = nc.SetReadDeadline(time.Now().Add(30 * time.Second))
	var statuses [proto.StatusSessionExpired + 1]int
	for range reqs {
		body, err := rd.Next()
		if err != nil {
			t.Fatalf("reading the replay's responses: %v", err)
		}
		resp, err := proto.DecodeResponse(body)
		if err != nil {
			t.Fatal(err)
		}
		statuses[resp.Status]++
	}
	for w := range workers {
		v, _, err := check.Get(ctx, []byte(fmt.Sprint("w", w)))
		if err != nil {
			t.Fatal(err)
		}
		if string(v) != "final" {
			t.Fatalf("worker %d's key = %q after the replay: a write applied twice", w, v)
		}
	}
	evicted := metric(t, metricsAddr, "vestad_kv_sessions_evicted_total")
	t.Logf("%d requests recorded, %d replayed during the run; final replay: %d ok, %d session-expired, %d error (stale); %v sessions evicted; unknown outcomes %v",
		len(reqs), replayed.Load(), statuses[proto.StatusOK], statuses[proto.StatusSessionExpired], statuses[proto.StatusError], evicted, unknown)
	if evicted < workers {
		t.Fatalf("%v sessions evicted: the test did not exercise eviction", evicted)
	}
	if statuses[proto.StatusSessionExpired] == 0 {
		t.Fatal("no replayed write was refused as session-expired: the test did not exercise evicted sessions")
	}
}

func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		return -1
	}
	return n
}
