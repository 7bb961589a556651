package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vestalabs/vesta/client"
	"github.com/vestalabs/vesta/client/proto"
	"github.com/vestalabs/vesta/tools/vestad/kv"
)

func TestClientLimitFlags(t *testing.T) {
	base := []string{"-id=1", "-peers=1=127.0.0.1:7001", "-client-addr=127.0.0.1:7101", "-log=mem", "-cluster-id=7"}
	for _, c := range []struct{ arg, flag string }{
		{"-max-client-conns=0", "-max-client-conns"},
		{"-client-read-timeout=0s", "-client-read-timeout"},
		{"-client-read-timeout=-1s", "-client-read-timeout"},
		{"-client-idle-timeout=1s", "-client-idle-timeout"}, // shorter than the read timeout's 10 s
		{"-client-buffer-bytes=1000000", "-client-buffer-bytes"},
		{"-client-response-bytes=4000000", "-client-response-bytes"}, // a share below one largest response
	} {
		_, err := parseFlags(append(base, c.arg), io.Discard)
		if err == nil || !strings.Contains(err.Error(), c.flag) {
			t.Errorf("%s: got %v, want an error naming %s", c.arg, err, c.flag)
		}
	}
	cfg, err := parseFlags(base, io.Discard)
	if err != nil || cfg.clientLimits != defaultClientLimits() {
		t.Fatalf("defaults: %+v %v", cfg.clientLimits, err)
	}
	cfg, err = parseFlags(append(base, "-max-client-conns=7", "-client-read-timeout=2s", "-client-idle-timeout=3s",
		"-client-buffer-bytes=8388608", "-client-response-bytes=33554432"), io.Discard)
	want := clientLimits{MaxConns: 7, ReadTimeout: 2 * time.Second, IdleTimeout: 3 * time.Second, BufferBytes: 8 << 20,
		ResponseBytes: 32 << 20}
	if err != nil || cfg.clientLimits != want {
		t.Fatalf("set: %+v %v", cfg.clientLimits, err)
	}
}

// maxRequestFrame is the body of the largest request DecodeRequest takes.
func TestMaxRequestFrame(t *testing.T) {
	req := proto.Request{ID: 1, Op: proto.OpCAS, Key: make([]byte, proto.MaxKeySize),
		Value: make([]byte, proto.MaxValueSize), Expect: make([]byte, proto.MaxValueSize)}
	frame := proto.AppendRequest(nil, &req)
	if len(frame)-lenSize != maxRequestFrame {
		t.Fatalf("largest request: %d bytes, maxRequestFrame %d", len(frame)-lenSize, maxRequestFrame)
	}
	if _, err := proto.DecodeRequest(frame[lenSize:]); err != nil {
		t.Fatal(err)
	}
}

// testServer is a server with no replica, for its readers and budget.
func testServer(t *testing.T, lim clientLimits) *server {
	t.Helper()
	m := &serverMetrics{}
	return newServer(nil, nil, "", slog.New(slog.NewTextHandler(io.Discard, nil)), m, lim, prometheus.NewRegistry())
}

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		done <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-done
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

func frameOf(body []byte) []byte {
	return append(binary.LittleEndian.AppendUint32(nil, uint32(len(body))), body...)
}

// waitFor polls cond for up to d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
	}
}

// The reader returns every frame whole, however the stream is cut, grows a
// large frame's buffer as its bytes arrive, and holds nothing while it
// waits between frames.
func TestConnReaderFrames(t *testing.T) {
	s := testServer(t, defaultClientLimits())
	cli, srv := tcpPair(t)
	c := &serverConn{s: s, nc: srv}
	s.conns[c] = struct{}{}
	rd := newConnReader(c, maxRequestFrame)
	if rd.raw == nil && rawReadSupported {
		t.Fatal("a TCP connection is read raw")
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var bodies [][]byte
	var stream []byte
	for i := range 300 {
		n := 1 + rng.IntN(200)
		switch i % 50 {
		case 7:
			n = readBufSize - lenSize // exactly a read buffer
		case 8:
			n = readBufSize + 1
		case 9:
			n = maxRequestFrame
		}
		b := make([]byte, n)
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		bodies = append(bodies, b)
		stream = append(stream, frameOf(b)...)
	}
	go func() {
		for rest := stream; len(rest) > 0; {
			k := min(len(rest), 1+rng.IntN(3*readBufSize))
			if rng.IntN(4) == 0 {
				k = min(len(rest), 1+rng.IntN(5))
			}
			cli.Write(rest[:k])
			rest = rest[k:]
			if rng.IntN(8) == 0 {
				time.Sleep(time.Millisecond)
			}
		}
	}()
	for i, want := range bodies {
		got, err := rd.Next()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("frame %d: %d bytes, want %d, differ", i, len(got), len(want))
		}
		if c.charged.Load() != int64(len(rd.buf)) || s.budget.used.Load() != c.charged.Load() {
			t.Fatalf("frame %d: charged %d, buffer %d, budget used %d", i, c.charged.Load(), len(rd.buf), s.budget.used.Load())
		}
	}
	// Between frames, waiting: nothing held.
	next := make(chan error, 1)
	go func() { _, err := rd.Next(); next <- err }()
	waitFor(t, 5*time.Second, "the reader waits", c.waiting.Load)
	if c.charged.Load() != 0 || c.frameStart.Load() != 0 {
		t.Fatalf("idle reader holds %d bytes (frame started %d)", c.charged.Load(), c.frameStart.Load())
	}
	cli.Close()
	if err := <-next; !errors.Is(err, io.EOF) {
		t.Fatalf("at the end of the stream: %v", err)
	}
	rd.close()
	if s.budget.used.Load() != 0 {
		t.Fatalf("budget used %d after close", s.budget.used.Load())
	}
}

// A large frame's header alone costs a small buffer; its buffer grows with
// what arrives; a header above the largest request is refused at once.
func TestConnReaderGrowsAsBytesArrive(t *testing.T) {
	s := testServer(t, defaultClientLimits())
	cli, srv := tcpPair(t)
	c := &serverConn{s: s, nc: srv}
	s.conns[c] = struct{}{}
	rd := newConnReader(c, maxRequestFrame)
	body := bytes.Repeat([]byte{7}, maxRequestFrame)
	frame := frameOf(body)
	next := make(chan error, 1)
	var got []byte
	go func() {
		var err error
		got, err = rd.Next()
		next <- err
	}()
	cli.Write(frame[:lenSize+10])
	waitFor(t, 5*time.Second, "the reader waits for the rest", func() bool { return c.waiting.Load() && c.frameStart.Load() != 0 })
	if h := c.charged.Load(); h > 1024 {
		t.Fatalf("a frame's header and 10 bytes hold %d bytes", h)
	}
	cli.Write(frame[lenSize+10 : 300<<10])
	// 300 KiB fill the 256 KiB class and take the 512 KiB one.
	waitFor(t, 5*time.Second, "300 KiB buffered", func() bool { return c.waiting.Load() && c.charged.Load() >= 512<<10 })
	if h := c.charged.Load(); h > 2*(300<<10) {
		t.Fatalf("300 KiB of a %d-byte frame hold %d bytes", len(frame), h)
	}
	cli.Write(frame[300<<10:])
	if err := <-next; err != nil || !bytes.Equal(got, body) {
		t.Fatalf("the large frame: %d bytes, %v", len(got), err)
	}

	cli.Write(binary.LittleEndian.AppendUint32(nil, uint32(maxRequestFrame+1)))
	var de *proto.DecodeError
	if _, err := rd.Next(); !errors.As(err, &de) {
		t.Fatalf("a header above the largest request: %v", err)
	}
	rd.close()
}

// inProc starts one in-process replica with extra flags and returns its
// client and metrics addresses.
func inProc(t *testing.T, extra ...string) (clientAddr, metricsAddr string) {
	t.Helper()
	addrs := freeAddrs(t, 3)
	args := append([]string{"-id=1", "-peers=1=" + addrs[0], "-client-addr=" + addrs[1], "-metrics-addr=" + addrs[2],
		"-log=mem", "-cluster-id=7", "-tick=2ms", "-election-ticks=15", "-log-level=error"}, extra...)
	cfg, err := parseFlags(args, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	cfg.logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithCancel(context.Background())
	ready, errc := make(chan struct{}), make(chan error, 1)
	go func() { errc <- run(ctx, cfg, func(string, string) { close(ready) }) }()
	select {
	case <-ready:
	case err := <-errc:
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-errc:
			if err != nil {
				t.Errorf("replica stopped with %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Errorf("replica did not stop")
		}
	})
	return addrs[1], addrs[2]
}

// metric returns the value of the series named exactly (labels included)
// on metricsAddr's /metrics; -1 if absent.
func metric(t *testing.T, metricsAddr, series string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindSubmatch(b)
	if m == nil {
		return -1
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}

// dialPreamble connects to addr and sends the preamble.
func dialPreamble(t *testing.T, addr string) net.Conn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	if _, err := nc.Write(proto.Preamble[:]); err != nil {
		t.Fatal(err)
	}
	return nc
}

// roundTrip sends req on nc and reads its response.
func roundTrip(t *testing.T, nc net.Conn, req proto.Request) proto.Response {
	t.Helper()
	if _, err := nc.Write(proto.AppendRequest(nil, &req)); err != nil {
		t.Fatal(err)
	}
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	rd := proto.NewReader(nc, 0, 0)
	body, err := rd.Next()
	if err != nil {
		t.Fatalf("reading the response to %v: %v", req.Op, err)
	}
	resp, err := proto.DecodeResponse(body)
	if err != nil {
		t.Fatal(err)
	}
	resp.Value = bytes.Clone(resp.Value)
	return resp
}

// closedWithin requires that nc's server closes it within d (EOF or a
// reset, not a timeout), reading and discarding what comes first.
func closedWithin(t *testing.T, nc net.Conn, d time.Duration, what string) {
	t.Helper()
	_ = nc.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, nc)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("%s: still open after %v", what, d)
	}
}

// waitLeaderAt waits until the replica at addr says it leads.
func waitLeaderAt(t *testing.T, addr string) {
	t.Helper()
	c, err := client.New([]string{addr}, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitFor(t, 10*time.Second, "a leader", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		st, err := c.Status(ctx, addr)
		return err == nil && st.Role == "leader"
	})
}

// Beyond -max-client-conns a connection is sent a refusal (a response with
// request ID 0) and closed; once one closes, a new one is served.
func TestClientConnLimit(t *testing.T) {
	addr, maddr := inProc(t, "-max-client-conns=3")
	waitLeaderAt(t, addr)
	// waitLeaderAt's own connection is closed, but the server may not
	// have seen it go yet: it would still hold one of the three slots.
	waitFor(t, 5*time.Second, "waitLeaderAt's connection gone", func() bool { return metric(t, maddr, "vestad_client_connections") == 0 })
	var open []net.Conn
	for range 3 {
		nc := dialPreamble(t, addr)
		if r := roundTrip(t, nc, proto.Request{ID: 1, Op: proto.OpGet, Key: []byte("k")}); r.Status != proto.StatusOK {
			t.Fatalf("get: %+v", r)
		}
		open = append(open, nc)
	}
	over := dialPreamble(t, addr)
	_ = over.SetReadDeadline(time.Now().Add(10 * time.Second))
	body, err := proto.NewReader(over, 0, 0).Next()
	if err != nil {
		t.Fatalf("the connection over the limit got no refusal: %v", err)
	}
	r, err := proto.DecodeResponse(body)
	if err != nil || r.ID != 0 || r.Status != proto.StatusUnavailable || !strings.Contains(string(r.Value), "-max-client-conns") {
		t.Fatalf("refusal: %+v (%s) %v", r, r.Value, err)
	}
	closedWithin(t, over, 5*time.Second, "the connection over the limit")
	if v := metric(t, maddr, `vestad_client_refusals_total{reason="max-conns"}`); v != 1 {
		t.Fatalf("max-conns refusals: %v, want 1", v)
	}
	open[0].Close()
	waitFor(t, 5*time.Second, "a connection slot freed", func() bool { return metric(t, maddr, "vestad_client_connections") == 2 })
	nc := dialPreamble(t, addr)
	if r := roundTrip(t, nc, proto.Request{ID: 1, Op: proto.OpGet, Key: []byte("k")}); r.Status != proto.StatusOK {
		t.Fatalf("get after a slot freed: %+v", r)
	}
}

// A client that sends a frame a byte at a time, one that sends a header and
// stalls, and one that never sends its preamble are closed after the read
// timeout; one that sends nothing after its preamble after the idle
// timeout; a client.Client is served meanwhile.
func TestClientReadAndIdleTimeouts(t *testing.T) {
	addr, maddr := inProc(t, "-client-read-timeout=400ms", "-client-idle-timeout=1500ms")
	waitLeaderAt(t, addr)
	c, err := client.New([]string{addr}, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	start := time.Now()
	slow := dialPreamble(t, addr)
	frame := proto.AppendRequest(nil, &proto.Request{ID: 1, Op: proto.OpGet, Key: bytes.Repeat([]byte("k"), 100)})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // a slowloris: a byte every 50 ms, progress all along
		defer wg.Done()
		for _, b := range frame {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			if _, err := slow.Write([]byte{b}); err != nil {
				return
			}
		}
	}()
	stalled := dialPreamble(t, addr)
	stalled.Write(binary.LittleEndian.AppendUint32(nil, 1000))
	mute, err := net.Dial("tcp", addr) // no preamble
	if err != nil {
		t.Fatal(err)
	}
	defer mute.Close()
	idle := dialPreamble(t, addr)

	for i := 0; i < 5; i++ { // served meanwhile
		if err := c.Put(ctx, []byte("k"), []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	closedWithin(t, slow, 3*time.Second, "the slowloris")
	closedWithin(t, stalled, 3*time.Second, "the stalled header")
	closedWithin(t, mute, 3*time.Second, "the connection without a preamble")
	if d := time.Since(start); d < 400*time.Millisecond {
		t.Fatalf("closed after %v, before the read timeout", d)
	}
	close(stop)
	wg.Wait()
	closedWithin(t, idle, 5*time.Second, "the idle connection")
	if d := time.Since(start); d < 1500*time.Millisecond {
		t.Fatalf("the idle connection closed after %v, before the idle timeout", d)
	}
	if v := metric(t, maddr, `vestad_client_refusals_total{reason="read-timeout"}`); v != 3 {
		t.Errorf("read-timeout closes: %v, want 3", v)
	}
	if v := metric(t, maddr, `vestad_client_refusals_total{reason="idle-timeout"}`); v < 1 {
		t.Errorf("idle-timeout closes: %v, want at least 1", v)
	}
	// The client's own connection may have gone idle too: it redials.
	if v, _, err := c.Get(ctx, []byte("k")); err != nil || string(v) != "4" {
		t.Fatalf("get: %q %v", v, err)
	}
}

// Past -client-buffer-bytes the connection holding the largest incomplete
// frame is closed; the others keep theirs, and a large request that
// arrives whole is served.
func TestClientBufferBudget(t *testing.T) {
	addr, maddr := inProc(t, "-client-buffer-bytes=4194304")
	waitLeaderAt(t, addr)
	big := func(key string) []byte {
		return proto.AppendRequest(nil, &proto.Request{ID: 1, Op: proto.OpCAS, Key: []byte(key),
			Value: make([]byte, proto.MaxValueSize), Expect: make([]byte, proto.MaxValueSize)})
	}
	buffered := func() float64 { return metric(t, maddr, "vestad_client_buffer_bytes") }

	a := dialPreamble(t, addr) // 1.5 MiB of a 2 MiB request: a 2 MiB buffer
	a.Write(big("a")[:1536<<10])
	waitFor(t, 10*time.Second, "a's 2 MiB buffered", func() bool { return buffered() >= 2<<20 })
	b := dialPreamble(t, addr) // 600 KiB: a 1 MiB buffer
	fb := big("b")
	b.Write(fb[:600<<10])
	waitFor(t, 10*time.Second, "b's 1 MiB buffered", func() bool { return buffered() >= 3<<20 })

	// c's whole request needs a buffer of its size: past the budget, a goes.
	cc := dialPreamble(t, addr)
	if r := sendFrame(t, cc, big("c")); r.Status != proto.StatusOK {
		t.Fatalf("the whole large request: %+v (%s)", r, r.Value)
	}
	closedWithin(t, a, 5*time.Second, "the largest incomplete frame")
	if v := metric(t, maddr, `vestad_client_refusals_total{reason="buffer-budget"}`); v != 1 {
		t.Fatalf("buffer-budget closes: %v, want 1", v)
	}
	if r := sendFrame(t, b, fb[600<<10:]); r.Status != proto.StatusOK {
		t.Fatalf("the rest of b's request: %+v (%s)", r, r.Value)
	}
	waitFor(t, 5*time.Second, "buffers given back", func() bool { return buffered() == 0 })
}

// sendFrame writes bytes (the rest of a request's frame) on nc and reads a response.
func sendFrame(t *testing.T, nc net.Conn, b []byte) proto.Response {
	t.Helper()
	if _, err := nc.Write(b); err != nil {
		t.Fatal(err)
	}
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	body, err := proto.NewReader(nc, 0, 0).Next()
	if err != nil {
		t.Fatalf("reading a response: %v", err)
	}
	resp, err := proto.DecodeResponse(body)
	if err != nil {
		t.Fatal(err)
	}
	resp.Value = bytes.Clone(resp.Value)
	return resp
}

// An open-session request with client 0 gets a session the store issues;
// reopening an issued ID the store does not hold is refused.
func TestOpenSessionIssuesID(t *testing.T) {
	addr, _ := inProc(t)
	waitLeaderAt(t, addr)
	nc := dialPreamble(t, addr)
	r := roundTrip(t, nc, proto.Request{ID: 1, Op: proto.OpOpenSession})
	if r.Status != proto.StatusOK || len(r.Value) != 8 {
		t.Fatalf("open-session with client 0: %+v", r)
	}
	id := binary.LittleEndian.Uint64(r.Value)
	if !kv.IsIssuedSessionID(id) {
		t.Fatalf("issued %#x", id)
	}
	if r := roundTrip(t, nc, proto.Request{ID: 2, Op: proto.OpPut, Client: id, Seq: 1, Low: 1, Key: []byte("k")}); r.Status != proto.StatusOK {
		t.Fatalf("put in the issued session: %+v", r)
	}
	r = roundTrip(t, nc, proto.Request{ID: 3, Op: proto.OpOpenSession, Client: id + 100})
	if r.Status != proto.StatusSessionExpired || !strings.Contains(string(r.Value), "open a new session") {
		t.Fatalf("reopening an ID never issued: %+v (%s)", r, r.Value)
	}
}

// Refusals are logged at most once a second per reason; the next line, or
// flush, says how many were held back.
func TestRefusalLogIsRateLimited(t *testing.T) {
	var buf bytes.Buffer
	l := newRateLog(slog.New(slog.NewTextHandler(&buf, nil)))
	clock := time.Now()
	l.now = func() time.Time { return clock }
	for range 100 {
		l.logf(refuseReadTimeout, "closing", "remote", "x")
		l.logf(refuseBufferBudget, "closing", "remote", "y")
	}
	if n := strings.Count(buf.String(), "\n"); n != 2 {
		t.Fatalf("%d lines for 200 refusals of two reasons:\n%s", n, buf.String())
	}
	l.flush() // too soon: nothing
	if n := strings.Count(buf.String(), "\n"); n != 2 {
		t.Fatalf("flush within the second logged:\n%s", buf.String())
	}
	clock = clock.Add(rateLogEvery)
	l.flush()
	if !strings.Contains(buf.String(), "reason=read-timeout count=99") || !strings.Contains(buf.String(), "reason=buffer-budget count=99") {
		t.Fatalf("flush does not count what it held back:\n%s", buf.String())
	}
	clock = clock.Add(rateLogEvery)
	l.logf(refuseReadTimeout, "closing", "remote", "x")
	if strings.Contains(buf.String()[strings.LastIndex(buf.String(), "closing"):], "suppressed") {
		t.Fatalf("suppressed counted twice:\n%s", buf.String())
	}
}

// A Writer's Queued counts what is queued and not yet written, a write
// under way included; OnWritten reports what leaves the queue, written or
// dropped after a failed write, so that what was appended less what it
// reported is Queued; Writing says how long a write has been blocked.
func TestWriterQueued(t *testing.T) {
	value := make([]byte, 256<<10)
	frame := len(proto.AppendResponse(nil, &proto.Response{ID: 1, Value: value}))
	for _, r := range []proto.Response{{ID: 1, Value: value}, {}, {ID: 1 << 60, Status: proto.StatusNotLeader, Leader: 3,
		LeaderAddr: strings.Repeat("a", proto.MaxAddrSize)}, {Value: make([]byte, proto.MaxValueSize)}, {Value: make([]byte, 127)}} {
		if n, want := respFrameSize(&r), len(proto.AppendResponse(nil, &r)); n != want {
			t.Fatalf("respFrameSize %d, the frame %d bytes", n, want)
		}
	}
	const n = 64 // 16 MiB: more than the sockets hold
	cli, srv := tcpPair(t)
	var left atomicInt
	w := proto.NewWriter(srv, proto.WriterOptions{WriteTimeout: 300 * time.Millisecond, MaxQueued: 1 << 62,
		DirectWrites: true, OnWritten: func(n int) { left.add(n) }})
	defer w.Close()
	for i := range n {
		if err := w.WriteResponse(&proto.Response{ID: uint64(i + 1), Value: value}); err != nil {
			t.Fatal(err)
		}
	}
	if q := int64(w.Queued()); q <= 0 || q != n*int64(frame)-left.load() {
		t.Fatalf("queued %d, %d appended, %d reported written", q, n*frame, left.load())
	}
	waitFor(t, 5*time.Second, "a write blocked", func() bool { return w.Writing() > 0 })
	// Read everything: the queue empties.
	rd := proto.NewReader(cli, 0, 0)
	_ = cli.SetReadDeadline(time.Now().Add(10 * time.Second))
	for i := range n {
		if _, err := rd.Next(); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
	}
	waitFor(t, 5*time.Second, "the queue written", func() bool {
		return w.Queued() == 0 && left.load() == n*int64(frame) && w.Writing() == 0
	})

	// A peer that never reads (its receive buffer was never grown by
	// reading): the write times out and the queue is dropped.
	_, srv2 := tcpPair(t)
	left = atomicInt{}
	w2 := proto.NewWriter(srv2, proto.WriterOptions{WriteTimeout: 300 * time.Millisecond, MaxQueued: 1 << 62,
		OnWritten: func(n int) { left.add(n) }})
	defer w2.Close()
	appended := 0
	for i := range n {
		if err := w2.WriteResponse(&proto.Response{ID: uint64(i + 1), Value: value}); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		appended += frame
	}
	small := len(proto.AppendResponse(nil, &proto.Response{ID: 1}))
	waitFor(t, 5*time.Second, "the queue dropped after the write timeout", func() bool {
		if w2.WriteResponse(&proto.Response{ID: 1}) == nil {
			appended += small
			return false
		}
		return w2.Queued() == 0 && left.load() == int64(appended)
	})
}

type atomicInt struct {
	mu sync.Mutex
	n  int64
}

func (a *atomicInt) add(d int) { a.mu.Lock(); a.n += int64(d); a.mu.Unlock() }
func (a *atomicInt) load() int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.n
}

// putBig puts a value of the largest size under key, through a client.
func putBig(t *testing.T, addr, key string) {
	t.Helper()
	c, err := client.New([]string{addr}, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Put(ctx, []byte(key), bytes.Repeat([]byte("v"), proto.MaxValueSize)); err != nil {
		t.Fatal(err)
	}
}

// pipelineGets sends n gets of key on nc, with IDs from 1, in one write.
func pipelineGets(t *testing.T, nc net.Conn, key string, n int) {
	t.Helper()
	var b []byte
	for id := range uint64(n) {
		b = proto.AppendRequest(b, &proto.Request{ID: id + 1, Op: proto.OpGet, Key: []byte(key)})
	}
	_ = nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := nc.Write(b); err != nil {
		t.Fatal(err)
	}
}

// A connection whose responses fill its share of -client-response-bytes is
// not read until they are written: a client that pipelines gets of the
// largest value and reads nothing holds its share, not its gets' worth;
// once it reads, it gets every response, in order.
func TestClientResponseShare(t *testing.T) {
	limit := respShares * maxGetResponse
	addr, maddr := inProc(t, fmt.Sprintf("-client-response-bytes=%d", limit))
	waitLeaderAt(t, addr)
	putBig(t, addr, "big")
	const n = 200 // 200 MiB of responses
	nc := dialPreamble(t, addr)
	pipelineGets(t, nc, "big", n)
	share := limit / respShares
	stalls := `vestad_client_response_stalls_total{budget="connection"}`
	waitFor(t, 10*time.Second, "the reader stalls on its share", func() bool { return metric(t, maddr, stalls) >= 1 })
	time.Sleep(200 * time.Millisecond)
	if held := metric(t, maddr, "vestad_client_response_bytes"); held <= 0 || held > float64(share) {
		t.Fatalf("response bytes %v, want at most the share %d", held, share)
	}
	if v := metric(t, maddr, `vestad_responses_total{status="ok"}`); v > n/2 {
		t.Fatalf("%v of %d gets answered before the client read any", v, n)
	}
	rd := proto.NewReader(nc, 0, 0)
	_ = nc.SetReadDeadline(time.Now().Add(30 * time.Second))
	for i := range n {
		body, err := rd.Next()
		if err != nil {
			t.Fatalf("response %d: %v", i, err)
		}
		r, err := proto.DecodeResponse(body)
		if err != nil || r.ID != uint64(i+1) || r.Status != proto.StatusOK || len(r.Value) != proto.MaxValueSize {
			t.Fatalf("response %d: ID %d, %v, %d bytes, %v", i, r.ID, r.Status, len(r.Value), err)
		}
	}
	if v := metric(t, maddr, stalls); v < 2 {
		t.Errorf("stalled %v times, want one per response past the share", v)
	}
	waitFor(t, 5*time.Second, "the budget given back", func() bool { return metric(t, maddr, "vestad_client_response_bytes") == 0 })
}

// Once the response budget is spent, a connection that needs room waits,
// and the connection holding the most queued responses, none written for
// responseStallTimeout, is closed, one a sweep, long before the write
// timeout; a normal client is served. Each attacker pipelines gets of the
// largest value in groups of maxGroupOps, each group answered one value
// (kv.MaxReadBytes) and the rest retries, enough groups to fill its share.
func TestClientResponseBudgetClosesStalled(t *testing.T) {
	const limit, attackers = 16 << 20, 2 * respShares // twice what the budget holds
	addr, maddr := inProc(t, fmt.Sprintf("-client-response-bytes=%d", limit))
	waitLeaderAt(t, addr)
	putBig(t, addr, "big")
	var conns []net.Conn
	for range attackers {
		nc := dialPreamble(t, addr)
		pipelineGets(t, nc, "big", 8*maxGroupOps)
		conns = append(conns, nc)
	}
	global := `vestad_client_response_stalls_total{budget="global"}`
	waitFor(t, 10*time.Second, "a connection waits for room in the budget", func() bool {
		if used := metric(t, maddr, "vestad_client_response_bytes"); used > limit+float64(maxGetResponse) {
			t.Fatalf("response bytes %v, above the limit %d", used, limit)
		}
		return metric(t, maddr, global) >= 1
	})
	c, err := client.New([]string{addr}, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	start := time.Now()
	if err := c.Put(ctx, []byte("k"), []byte("v")); err != nil {
		t.Fatalf("a put while the budget is spent: %v", err)
	}
	t.Logf("a put while %d connections filled the budget with unread responses: %v", attackers, time.Since(start).Round(time.Millisecond))
	closes := `vestad_client_refusals_total{reason="response-budget"}`
	waitFor(t, writeTimeout/2, "a stalled connection closed", func() bool { return metric(t, maddr, closes) >= 1 })
	closed := 0
	for _, nc := range conns {
		// A closed one sees the end of its stream after its responses.
		_ = nc.SetReadDeadline(time.Now().Add(time.Second))
		_, err := io.Copy(io.Discard, nc)
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			closed++
		}
	}
	t.Logf("%v closed by the budget; %d of %d attackers closed", metric(t, maddr, closes), closed, attackers)
	if closed == 0 {
		t.Errorf("no attacker's connection was closed")
	}
}
