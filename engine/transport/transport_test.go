package transport

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/vestalabs/vesta/engine/wire"
	"github.com/vestalabs/vesta/internal/transporttest"
)

// Tests bound every wait by this, and never assert a speed.
const patience = 10 * time.Second

// waitFor polls cond until it holds or patience runs out.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	transporttest.WaitFor(t, patience, what, cond)
}

// collector is a Handler (Handle) that keeps everything it is given.
type collector = transporttest.Collector

// testMsg is an Accept from -> to whose Slot is seq, whose data says who
// sent it and which it is (transporttest.Msg).
func testMsg(from, to wire.ReplicaID, seq int) wire.Message {
	return transporttest.Msg(from, to, seq, 0)
}

// checkStreams checks that got holds, from each sender, exactly the messages
// 0..n-1 in order with intact content.
func checkStreams(t *testing.T, self wire.ReplicaID, got []wire.Message, senders []wire.ReplicaID, n int) {
	t.Helper()
	transporttest.CheckStreams(t, self, got, senders, n, 0)
}

// logBuf is a goroutine-safe log sink.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuf) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// checkNoLeak records the goroutine count and, at cleanup (after the
// transports' own cleanups, registered later, have closed them), waits for it
// to come back down.
func checkNoLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(patience)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				t.Fatalf("%d goroutines before, %d after Close:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
}

// --- Mem ---

func TestMemMessagesFlowAmongThree(t *testing.T) {
	checkNoLeak(t)
	net := NewNetwork()
	ids := []wire.ReplicaID{1, 2, 3}
	cols := map[wire.ReplicaID]*collector{}
	trs := map[wire.ReplicaID]*Mem{}
	for _, id := range ids {
		cols[id] = &collector{}
		tr, err := net.Join(id, cols[id].Handle, MemConfig{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tr.Close() })
		trs[id] = tr
	}
	const n = 300
	for seq := range n {
		for _, from := range ids {
			var batch []wire.Message
			for _, to := range ids {
				if to != from {
					batch = append(batch, testMsg(from, to, seq))
				}
			}
			trs[from].Send(batch)
			// The caller may reuse what it sent.
			for i := range batch {
				batch[i].Entries[0].Slot = 999999
			}
		}
	}
	for _, id := range ids {
		waitFor(t, fmt.Sprintf("replica %d's messages", id), func() bool { return cols[id].Count() == 2*n })
	}
	for _, id := range ids {
		var others []wire.ReplicaID
		for _, o := range ids {
			if o != id {
				others = append(others, o)
			}
		}
		got := cols[id].Snapshot()
		for _, m := range got {
			if m.Entries[0].Slot == 999999 {
				t.Fatal("Mem delivered the sender's Entries slice instead of a copy")
			}
		}
		checkStreams(t, id, got, others, n)
		if s := trs[id].Stats(); s.FramesSent != 2*n || s.FramesReceived != 2*n {
			t.Fatalf("replica %d stats %+v", id, s)
		}
	}
}

func TestMemDropsToFullOrAbsentPeers(t *testing.T) {
	checkNoLeak(t)
	net := NewNetwork()
	block := make(chan struct{})
	slow, err := net.Join(2, func([]wire.Message) { <-block }, MemConfig{QueueLen: 10})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { slow.Close() })
	t.Cleanup(func() { close(block) })
	a, err := net.Join(1, func([]wire.Message) {}, MemConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	if _, err := net.Join(1, func([]wire.Message) {}, MemConfig{}); err == nil {
		t.Fatal("joined twice under one ID")
	}
	for i := range 100 {
		a.Send([]wire.Message{testMsg(1, 2, i), testMsg(1, 7, i), testMsg(1, 1, i)})
	}
	s := a.Stats()
	// At most the queue and the one batch in the blocked handler got through.
	if s.FramesSent > 20 || s.FramesSent+s.DroppedQueueFull != 100 || s.DroppedNoPeer != 200 {
		t.Fatalf("stats %+v", s)
	}
}

func TestMemRejoinAfterClose(t *testing.T) {
	checkNoLeak(t)
	net := NewNetwork()
	a, _ := net.Join(1, func([]wire.Message) {}, MemConfig{})
	t.Cleanup(func() { a.Close() })
	b, _ := net.Join(2, func([]wire.Message) {}, MemConfig{})
	b.Close()
	b.Close() // idempotent
	a.Send([]wire.Message{testMsg(1, 2, 0)})
	if a.Stats().DroppedNoPeer != 1 {
		t.Fatal("a message to a closed replica was not counted as dropped")
	}
	col := &collector{}
	b2, err := net.Join(2, col.Handle, MemConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b2.Close() })
	a.Send([]wire.Message{testMsg(1, 2, 0)})
	waitFor(t, "delivery to the rejoined replica", func() bool { return col.Count() == 1 })
}

// --- TCP ---

const testCluster = 0xc1a55

// tcpNode is one TCP transport under test with its listener address, so it
// can be restarted on the same port.
type tcpNode struct {
	id   wire.ReplicaID
	addr string
	tr   *TCP
	col  *collector
	logs *logBuf
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func testConfig(id wire.ReplicaID, ln net.Listener, peers map[wire.ReplicaID]string, logs *logBuf) TCPConfig {
	return TCPConfig{
		ClusterID: testCluster, ID: id, Listener: ln, Peers: peers, Logger: logs.logger(),
		BackoffMin: 2 * time.Millisecond, BackoffMax: 50 * time.Millisecond,
		HandshakeTimeout: time.Second, MaxQueueBytes: 16 << 20,
	}
}

// startCluster starts one TCP transport per ID, each knowing all others.
func startCluster(t *testing.T, ids ...wire.ReplicaID) map[wire.ReplicaID]*tcpNode {
	t.Helper()
	lns := map[wire.ReplicaID]net.Listener{}
	addrs := map[wire.ReplicaID]string{}
	for _, id := range ids {
		lns[id] = listen(t)
		addrs[id] = lns[id].Addr().String()
	}
	nodes := map[wire.ReplicaID]*tcpNode{}
	for _, id := range ids {
		peers := map[wire.ReplicaID]string{}
		for _, o := range ids {
			if o != id {
				peers[o] = addrs[o]
			}
		}
		n := &tcpNode{id: id, addr: addrs[id], col: &collector{}, logs: &logBuf{}}
		tr, err := NewTCP(testConfig(id, lns[id], peers, n.logs), n.col.Handle)
		if err != nil {
			t.Fatal(err)
		}
		n.tr = tr
		t.Cleanup(func() { n.tr.Close() })
		nodes[id] = n
	}
	return nodes
}

func TestTCPMessagesFlowAmongThree(t *testing.T) {
	checkNoLeak(t)
	ids := []wire.ReplicaID{1, 2, 3}
	nodes := startCluster(t, ids...)
	const n = 500
	for seq := range n {
		for _, from := range ids {
			var batch []wire.Message
			for _, to := range ids {
				if to != from {
					batch = append(batch, testMsg(from, to, seq))
				}
			}
			nodes[from].tr.Send(batch)
		}
	}
	for _, id := range ids {
		waitFor(t, fmt.Sprintf("replica %d's messages", id), func() bool { return nodes[id].col.Count() == 2*n })
	}
	for _, id := range ids {
		var others []wire.ReplicaID
		for _, o := range ids {
			if o != id {
				others = append(others, o)
			}
		}
		checkStreams(t, id, nodes[id].col.Snapshot(), others, n)
		s := nodes[id].tr.Stats()
		if s.FramesSent != 2*n || s.FramesReceived != 2*n || s.WriteCalls == 0 || s.BytesSent == 0 || s.Connects != 2 {
			t.Fatalf("replica %d stats %+v", id, s)
		}
		if len(s.Closed) != 0 {
			t.Fatalf("replica %d closed connections: %v\n%s", id, s.Closed, nodes[id].logs)
		}
	}
}

func TestTCPSendToUnknownPeerIsDropped(t *testing.T) {
	checkNoLeak(t)
	nodes := startCluster(t, 1, 2)
	nodes[1].tr.Send([]wire.Message{testMsg(1, 5, 0), testMsg(1, 2, 0)})
	if s := nodes[1].tr.Stats(); s.DroppedNoPeer != 1 {
		t.Fatalf("stats %+v", s)
	}
	waitFor(t, "the message to the known peer", func() bool { return nodes[2].col.Count() == 1 })
}

func TestTCPLargeFrameGetsItsOwnBuffer(t *testing.T) {
	checkNoLeak(t)
	nodes := startCluster(t, 1, 2)
	m := testMsg(1, 2, 0)
	m.Entries[0].Value.Data = bytes.Repeat([]byte("x"), 1<<20) // 4x the read buffer
	nodes[1].tr.Send([]wire.Message{m, testMsg(1, 2, 1)})
	waitFor(t, "two messages", func() bool { return nodes[2].col.Count() == 2 })
	got := nodes[2].col.Snapshot()
	if !got[0].Entries[0].Value.Equal(m.Entries[0].Value) {
		t.Fatal("large value corrupted")
	}
}

func TestTCPPeerRestartIsReconnected(t *testing.T) {
	checkNoLeak(t)
	nodes := startCluster(t, 1, 2)
	a, b := nodes[1], nodes[2]
	a.tr.Send([]wire.Message{testMsg(1, 2, 0)})
	waitFor(t, "first delivery", func() bool { return b.col.Count() == 1 })

	b.tr.Close()
	ln, err := net.Listen("tcp", b.addr) // the restarted replica, same address
	if err != nil {
		t.Fatal(err)
	}
	b2 := &tcpNode{id: 2, addr: b.addr, col: &collector{}, logs: &logBuf{}}
	b2.tr, err = NewTCP(testConfig(2, ln, map[wire.ReplicaID]string{1: a.addr}, b2.logs), b2.col.Handle)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b2.tr.Close() })

	// Messages sent into the broken connection are lost; keep sending until
	// the new incarnation hears one, both ways.
	deadline := time.Now().Add(patience)
	for seq := 1; b2.col.Count() == 0 || a.col.Count() == 0; seq++ {
		if time.Now().After(deadline) {
			t.Fatalf("no traffic after restart; stats a=%+v b2=%+v\nlogs a:\n%s", a.tr.Stats(), b2.tr.Stats(), a.logs)
		}
		a.tr.Send([]wire.Message{testMsg(1, 2, seq)})
		b2.tr.Send([]wire.Message{testMsg(2, 1, seq)})
		time.Sleep(5 * time.Millisecond)
	}
	if s := a.tr.Stats(); s.Reconnects < 1 {
		t.Fatalf("a reconnected %d times; stats %+v", s.Reconnects, s)
	}
}

// A peer that connects to us is up: a writer waiting out a dial backoff
// redials it at once instead. Here the backoff is an hour, so only that can
// connect replica 1 to replica 2, which started after 1 gave up dialling it.
func TestTCPPeerThatConnectsEndsTheDialBackoff(t *testing.T) {
	checkNoLeak(t)
	// Replica 2's listener, on which nobody accepts yet: replica 1's dial
	// connects, its handshake times out, and that counts as a failed dial.
	ln2 := listen(t)
	addr2 := ln2.Addr().String()

	logsA := &logBuf{}
	cfgA := testConfig(1, listen(t), map[wire.ReplicaID]string{2: addr2}, logsA)
	cfgA.BackoffMin, cfgA.BackoffMax = time.Hour, time.Hour
	colA := &collector{}
	a, err := NewTCP(cfgA, colA.Handle)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	waitFor(t, "replica 1's first failed dial", func() bool { return a.Stats().DialFailures >= 1 })
	// That dial's connection, hello and all, waits in ln2's backlog. Take
	// it out: replica 2 would otherwise accept it too, and if its hello
	// were handled after the second dial's, it would supersede the live
	// connection, and with an hour of backoff replica 1 would never redial
	// (CI saw that once).
	stale, err := ln2.Accept()
	if err != nil {
		t.Fatal(err)
	}
	stale.Close()

	logsB := &logBuf{}
	colB := &collector{}
	b, err := NewTCP(testConfig(2, ln2, map[wire.ReplicaID]string{1: a.Addr().String()}, logsB), colB.Handle)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })

	waitFor(t, "replica 1 to connect to replica 2 before its hour of backoff", func() bool { return a.Stats().Connects >= 1 })
	a.Send([]wire.Message{testMsg(1, 2, 0)})
	waitFor(t, "a message from 1 to 2", func() bool { return colB.Count() == 1 })
}

// rawConn dials addr and, if hello, completes a handshake as replica from of
// cluster, so a test can then write whatever bytes it likes.
func rawConn(t *testing.T, addr string, cluster uint64, from, to wire.ReplicaID, hello bool) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if !hello {
		return c
	}
	var p [helloSize]byte
	binary.LittleEndian.PutUint32(p[0:], uint32(from))
	binary.LittleEndian.PutUint32(p[4:], uint32(to))
	codec := wire.Codec{ClusterID: cluster}
	f, _ := codec.AppendFrame(nil, frameHello, p[:])
	if _, err := c.Write(f); err != nil {
		t.Fatal(err)
	}
	var ack [refusalFrame]byte
	c.SetReadDeadline(time.Now().Add(patience))
	if _, err := io.ReadFull(c, ack[:wire.HeaderSize]); err != nil {
		return c // refused in silence; the test checks the closing
	}
	h, err := codec.ReadHeader(ack[:])
	if err != nil || (h.Type != frameHelloAck && h.Type != frameRefusal) || h.FrameSize() > len(ack) {
		t.Fatalf("bad answer to hello: type %#02x, %v", h.Type, err)
	}
	if _, err := io.ReadFull(c, ack[wire.HeaderSize:h.FrameSize()]); err != nil {
		t.Fatalf("reading the answer to hello: %v", err)
	}
	if _, _, err := codec.OpenFrame(ack[:h.FrameSize()]); err != nil {
		t.Fatalf("bad answer to hello: %v", err)
	}
	return c // acknowledged, or refused with a reason; the test checks the closing
}

// expectClosed waits for the transport to close c: reads end in EOF or reset.
func expectClosed(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(patience))
	var b [64]byte
	for {
		_, err := c.Read(b[:])
		if err == nil {
			continue
		}
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatal("connection left open")
		}
		return
	}
}

func frame(t *testing.T, cluster uint64, m wire.Message) []byte {
	t.Helper()
	f, err := wire.Codec{ClusterID: cluster}.Append(nil, &m)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// Every kind of bad input closes its connection with a logged and counted
// reason, and nothing of it reaches the handler.
func TestTCPClosesBadConnections(t *testing.T) {
	checkNoLeak(t)
	good := testMsg(2, 1, 7)
	for _, tc := range []struct {
		name   string
		reason string
		hello  bool // complete a valid handshake first
		helloC uint64
		from   wire.ReplicaID
		to     wire.ReplicaID
		send   func(t *testing.T) []byte
	}{
		{name: "foreign cluster hello", reason: "foreign_cluster", hello: true, helloC: 0xf0e1, from: 2, to: 1},
		{name: "unknown peer", reason: ReasonUnknownPeer, hello: true, from: 9, to: 1},
		{name: "hello for another replica", reason: ReasonWrongReplica, hello: true, from: 2, to: 3},
		{name: "message before hello", reason: ReasonBadHandshake,
			send: func(t *testing.T) []byte { return frame(t, testCluster, good) }},
		{name: "garbage before hello", reason: "bad_magic",
			send: func(t *testing.T) []byte { return bytes.Repeat([]byte("GET / HTTP/1.1\r\n"), 2) }},
		{name: "silence", reason: ReasonBadHandshake, send: func(t *testing.T) []byte { return nil }},
		{name: "corrupted frame", reason: "bad_crc", hello: true, from: 2, to: 1,
			send: func(t *testing.T) []byte {
				f := frame(t, testCluster, good)
				f[len(f)-3] ^= 0x10
				return f
			}},
		{name: "oversized frame", reason: "oversized", hello: true, from: 2, to: 1,
			send: func(t *testing.T) []byte {
				f := frame(t, testCluster, good)
				binary.LittleEndian.PutUint32(f[16:], 1<<20) // limit is 64 KiB here
				return f[:wire.HeaderSize]
			}},
		{name: "unknown version", reason: "unknown_version", hello: true, from: 2, to: 1,
			send: func(t *testing.T) []byte {
				f := frame(t, testCluster, good)
				f[4] = 2
				return f
			}},
		{name: "foreign cluster frame", reason: "foreign_cluster", hello: true, from: 2, to: 1,
			send: func(t *testing.T) []byte { return frame(t, 0xf0e1, good) }},
		{name: "control frame after hello", reason: "unknown_type", hello: true, from: 2, to: 1,
			send: func(t *testing.T) []byte {
				f, _ := wire.Codec{ClusterID: testCluster}.AppendFrame(nil, frameHello, make([]byte, helloSize))
				return f
			}},
		{name: "refusal frame after hello", reason: "unknown_type", hello: true, from: 2, to: 1,
			send: func(t *testing.T) []byte {
				f, _ := wire.Codec{ClusterID: testCluster}.AppendFrame(nil, frameRefusal, make([]byte, refusalSize))
				return f
			}},
		{name: "sender mismatch", reason: ReasonSenderMismatch, hello: true, from: 2, to: 1,
			send: func(t *testing.T) []byte { return frame(t, testCluster, testMsg(3, 1, 0)) }},
		{name: "misrouted", reason: ReasonMisrouted, hello: true, from: 2, to: 1,
			send: func(t *testing.T) []byte { return frame(t, testCluster, testMsg(2, 3, 0)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Peers 2 and 3 exist on paper only: a closed port.
			dead := listen(t)
			deadAddr := dead.Addr().String()
			dead.Close()
			logs := &logBuf{}
			col := &collector{}
			cfg := testConfig(1, listen(t), map[wire.ReplicaID]string{2: deadAddr, 3: deadAddr}, logs)
			cfg.MaxFrameSize = 64 << 10
			cfg.HandshakeTimeout = 200 * time.Millisecond
			tr, err := NewTCP(cfg, col.Handle)
			if err != nil {
				t.Fatal(err)
			}
			defer tr.Close()
			cluster := tc.helloC
			if cluster == 0 {
				cluster = testCluster
			}
			c := rawConn(t, tr.Addr().String(), cluster, tc.from, tc.to, tc.hello)
			if tc.send != nil {
				if b := tc.send(t); len(b) > 0 {
					c.Write(b) // may fail if already closed
				}
			}
			expectClosed(t, c)
			waitFor(t, "the close to be counted", func() bool { return tr.Stats().Closed[tc.reason] == 1 })
			if want := "reason=" + tc.reason; !bytes.Contains([]byte(logs.String()), []byte(want)) {
				t.Fatalf("log lacks %q:\n%s", want, logs)
			}
			if s := tr.Stats(); col.Count() != 0 || s.FramesReceived != 0 || len(s.Closed) != 1 {
				t.Fatalf("handler got %d messages; stats %+v", col.Count(), s)
			}
		})
	}
}

// A whole transport of another cluster dialling in is refused; it backs off
// and retries, and the refusing side's handler sees nothing.
func TestTCPForeignClusterTransportIsRefused(t *testing.T) {
	checkNoLeak(t)
	lnA, lnF := listen(t), listen(t)
	logsA, logsF := &logBuf{}, &logBuf{}
	colA, colF := &collector{}, &collector{}
	a, err := NewTCP(testConfig(1, lnA, map[wire.ReplicaID]string{2: lnF.Addr().String()}, logsA), colA.Handle)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	cfgF := testConfig(2, lnF, map[wire.ReplicaID]string{1: lnA.Addr().String()}, logsF)
	cfgF.ClusterID = testCluster + 1
	f, err := NewTCP(cfgF, colF.Handle)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	f.Send([]wire.Message{testMsg(2, 1, 0)})
	a.Send([]wire.Message{testMsg(1, 2, 0)})
	waitFor(t, "both sides to refuse the other twice", func() bool {
		return a.Stats().Closed["foreign_cluster"] >= 2 && f.Stats().Closed["foreign_cluster"] >= 2 &&
			a.Stats().DialFailures >= 2 && f.Stats().DialFailures >= 2
	})
	if colA.Count() != 0 || colF.Count() != 0 {
		t.Fatal("a foreign cluster's message reached a handler")
	}
	if !bytes.Contains([]byte(logsA.String()), []byte("reason=foreign_cluster")) {
		t.Fatalf("refusal not logged:\n%s", logsA)
	}
}

// Close stops every goroutine, also with connections up and peers down, and
// twice is fine.
func TestTCPCloseStopsEverything(t *testing.T) {
	checkNoLeak(t)
	nodes := startCluster(t, 1, 2, 3)
	for i := range 50 {
		nodes[1].tr.Send([]wire.Message{testMsg(1, 2, i), testMsg(1, 3, i)})
	}
	waitFor(t, "traffic", func() bool { return nodes[2].col.Count() == 50 && nodes[3].col.Count() == 50 })
	nodes[3].tr.Close() // the others now redial it
	for i := range 20 {
		nodes[1].tr.Send([]wire.Message{testMsg(1, 3, i)})
	}
	time.Sleep(20 * time.Millisecond)
	for _, n := range nodes {
		if err := n.tr.Close(); err != nil {
			t.Logf("close %d: %v", n.id, err)
		}
		n.tr.Close()
	}
	// checkNoLeak's cleanup does the counting.
}

func TestTCPDropsWhenPeerQueueIsFull(t *testing.T) {
	checkNoLeak(t)
	dead := listen(t)
	deadAddr := dead.Addr().String()
	dead.Close()
	logs := &logBuf{}
	cfg := testConfig(1, listen(t), map[wire.ReplicaID]string{2: deadAddr}, logs)
	cfg.MaxQueueBytes = 4 << 10
	tr, err := NewTCP(cfg, func([]wire.Message) {})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	m := testMsg(1, 2, 50)
	n := 2 * cfg.MaxQueueBytes / wire.FrameSize(&m)
	for range n {
		tr.Send([]wire.Message{m})
	}
	if s := tr.Stats(); s.DroppedQueueFull == 0 || s.DroppedQueueFull >= uint64(n) || s.FramesSent != 0 {
		t.Fatalf("sent %d to an unreachable peer with a %d B queue; stats %+v", n, cfg.MaxQueueBytes, s)
	}
}

// BenchmarkTCPOneWay measures one-way throughput of Accepts carrying one 64 B
// value between two transports on loopback, with the sender handing over
// `batch` messages per Send and keeping at most `window` unacknowledged by
// the receiver's handler (so nothing is dropped).
func BenchmarkTCPOneWay(b *testing.B) {
	for _, batch := range []int{1, 64} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) { benchOneWay(b, batch) })
	}
}

func benchOneWay(b *testing.B, batch int) {
	const window = 16384
	lnA, lnB := listenB(b), listenB(b)
	quiet := slog.New(slog.DiscardHandler)
	var got int64
	var mu sync.Mutex
	progress := make(chan struct{}, 1)
	recv := func(ms []wire.Message) {
		mu.Lock()
		got += int64(len(ms))
		mu.Unlock()
		select {
		case progress <- struct{}{}:
		default:
		}
	}
	cfg := func(id wire.ReplicaID, ln net.Listener, peer wire.ReplicaID, addr string) TCPConfig {
		return TCPConfig{ClusterID: testCluster, ID: id, Listener: ln, Peers: map[wire.ReplicaID]string{peer: addr},
			Logger: quiet, MaxQueueBytes: 64 << 20}
	}
	a, err := NewTCP(cfg(1, lnA, 2, lnB.Addr().String()), func([]wire.Message) {})
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close()
	bt, err := NewTCP(cfg(2, lnB, 1, lnA.Addr().String()), recv)
	if err != nil {
		b.Fatal(err)
	}
	defer bt.Close()

	ballot := wire.Ballot{Round: 1, Replica: 1}
	msgs := make([]wire.Message, batch)
	for i := range msgs {
		msgs[i] = wire.Message{Type: wire.MsgAccept, From: 1, To: 2, Ballot: ballot, Commit: 1,
			Entries: []wire.Entry{{Slot: wire.Slot(i), Ballot: ballot, Value: wire.Value{Kind: wire.ValueBatch, Data: make([]byte, 64)}}}}
	}
	received2 := func() int64 { mu.Lock(); defer mu.Unlock(); return got }
	b.SetBytes(int64(wire.FrameSize(&msgs[0])))
	b.ResetTimer()
	start := time.Now()
	sent := 0
	for sent < b.N {
		for int64(sent)-received2() > window {
			select {
			case <-progress:
			case <-time.After(patience):
				b.Fatalf("stalled: sent %d, received %d, stats %+v", sent, received2(), a.Stats())
			}
		}
		k := min(batch, b.N-sent)
		a.Send(msgs[:k])
		sent += k
	}
	for received2() < int64(b.N) {
		select {
		case <-progress:
		case <-time.After(patience):
			b.Fatalf("stalled: sent %d, received %d, stats %+v", sent, received2(), a.Stats())
		}
	}
	el := time.Since(start)
	b.StopTimer()
	s := a.Stats()
	if s.DroppedQueueFull+s.DroppedOnDisconnect != 0 {
		b.Fatalf("dropped messages: %+v", s)
	}
	b.ReportMetric(float64(b.N)/el.Seconds(), "msgs/s")
	b.ReportMetric(float64(s.FramesSent)/float64(max(s.WriteCalls, 1)), "frames/write")
	rs := bt.Stats()
	b.ReportMetric(float64(rs.FramesReceived)/float64(max(rs.Deliveries, 1)), "msgs/delivery")
}

func listenB(b *testing.B) net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	return ln
}

// A peer that connects again replaces its old inbound connection, which is
// closed and counted as superseded; the new one carries on.
func TestTCPReconnectingPeerSupersedesOldConnection(t *testing.T) {
	checkNoLeak(t)
	dead := listen(t)
	deadAddr := dead.Addr().String()
	dead.Close()
	logs, col := &logBuf{}, &collector{}
	tr, err := NewTCP(testConfig(1, listen(t), map[wire.ReplicaID]string{2: deadAddr}, logs), col.Handle)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	first := rawConn(t, tr.Addr().String(), testCluster, 2, 1, true)
	first.Write(frame(t, testCluster, testMsg(2, 1, 0)))
	waitFor(t, "the first connection's message", func() bool { return col.Count() == 1 })
	second := rawConn(t, tr.Addr().String(), testCluster, 2, 1, true)
	expectClosed(t, first)
	second.Write(frame(t, testCluster, testMsg(2, 1, 1)))
	waitFor(t, "the second connection's message", func() bool { return col.Count() == 2 })
	waitFor(t, "the old connection to be counted", func() bool { return tr.Stats().Closed[ReasonSuperseded] == 1 })
	checkStreams(t, 1, col.Snapshot(), []wire.ReplicaID{2}, 2)
}

// Senders on several goroutines, values large enough to fill the socket
// buffers and a handler that stalls now and then: frames to one peer still
// arrive in each sender's order, whether a sender wrote them itself, left
// the rest of a partial write to the writer goroutine, or only queued them,
// and the byte counts of both sides agree.
func TestTCPConcurrentSendersKeepOrder(t *testing.T) {
	checkNoLeak(t)
	lnA, lnB := listen(t), listen(t)
	var mu sync.Mutex
	next := map[uint64]int{}
	got := 0
	var bad string
	recv := func(batch []wire.Message) {
		mu.Lock()
		for _, m := range batch {
			g := m.Ballot.Round
			if int(m.Slot) != next[g] && bad == "" {
				bad = fmt.Sprintf("sender %d: got #%d, want #%d", g, m.Slot, next[g])
			}
			next[g] = int(m.Slot) + 1
			got++
		}
		n := got
		mu.Unlock()
		if n%97 == 0 {
			time.Sleep(2 * time.Millisecond) // let the socket buffers fill
		}
	}
	logsA, logsB := &logBuf{}, &logBuf{}
	cfgA := testConfig(1, lnA, map[wire.ReplicaID]string{2: lnB.Addr().String()}, logsA)
	cfgA.MaxQueueBytes = 256 << 20
	a, err := NewTCP(cfgA, func([]wire.Message) {})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := NewTCP(testConfig(2, lnB, map[wire.ReplicaID]string{1: lnA.Addr().String()}, logsB), recv)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	// Once the connection is up, senders can write themselves.
	a.Send([]wire.Message{{Type: wire.MsgAccept, From: 1, To: 2, Ballot: wire.Ballot{Round: 99, Replica: 1}}})
	waitFor(t, "the connection", func() bool { mu.Lock(); defer mu.Unlock(); return got == 1 })

	const senders, n = 4, 1500
	var wg sync.WaitGroup
	for g := range senders {
		wg.Go(func() {
			for seq := range n {
				size := 64
				switch {
				case seq%500 == 250:
					size = 4 << 20 // its own chunk; more than a socket buffer takes at once
				case seq%10 == 0:
					size = 48 << 10
				}
				m := wire.Message{Type: wire.MsgAccept, From: 1, To: 2, Ballot: wire.Ballot{Round: uint64(g), Replica: 1}, Slot: wire.Slot(seq),
					Entries: []wire.Entry{{Slot: wire.Slot(seq), Value: wire.Value{Kind: wire.ValueBatch, Data: make([]byte, size)}}}}
				a.Send([]wire.Message{m})
				if seq%50 == 0 {
					time.Sleep(100 * time.Microsecond) // let queues drain, so senders write too
				}
			}
		})
	}
	wg.Wait()
	waitFor(t, "every message", func() bool { mu.Lock(); defer mu.Unlock(); return got == 1+senders*n || bad != "" })
	mu.Lock()
	defer mu.Unlock()
	if bad != "" {
		t.Fatal(bad)
	}
	// The sender counts a write after it returns, maybe after the delivery.
	waitFor(t, "the sender's counts", func() bool { return a.Stats().FramesSent == 1+senders*n })
	sa, sb := a.Stats(), b.Stats()
	if sa.FramesSent != 1+senders*n || sa.BytesSent != sb.BytesReceived || sa.DroppedQueueFull+sa.DroppedOnDisconnect != 0 || len(sa.Closed) != 0 {
		t.Fatalf("stats sender %+v receiver %+v", sa, sb)
	}
}

// A sender's direct write into a connection whose peer went away hands the
// failure to the writer goroutine: the connection is closed for
// write_error, its frames counted as lost, the peer redialled with backoff;
// Send neither blocks nor writes meanwhile.
func TestTCPDirectWriteFailureIsTheWritersToHandle(t *testing.T) {
	checkNoLeak(t)
	nodes := startCluster(t, 1, 2)
	a, b := nodes[1], nodes[2]
	a.tr.Send([]wire.Message{testMsg(1, 2, 0)}) // queued until the connection is up
	waitFor(t, "first delivery", func() bool { return b.col.Count() == 1 })
	// A message on an idle connection is written by its sender (unless the
	// writer goroutine has not yet let go of the token after the last one).
	seq := 1
	for ; a.tr.stats.DirectCalls.Load() == 0; seq++ {
		if seq > 100 {
			t.Fatalf("no message on an idle connection was written by its sender; stats %+v", a.tr.Stats())
		}
		a.tr.Send([]wire.Message{testMsg(1, 2, seq)})
		waitFor(t, "delivery", func() bool { return b.col.Count() == seq+1 })
	}
	b.tr.Close()
	deadline := time.Now().Add(patience)
	for ; a.tr.Stats().Closed[ReasonWriteError] == 0; seq++ {
		if time.Now().After(deadline) {
			t.Fatalf("write failure not handled; stats %+v\n%s", a.tr.Stats(), a.logs)
		}
		start := time.Now()
		a.tr.Send([]wire.Message{testMsg(1, 2, seq)})
		if d := time.Since(start); d > time.Second {
			t.Fatalf("Send blocked %v", d)
		}
		time.Sleep(time.Millisecond)
	}
	waitFor(t, "a failed redial", func() bool { return a.tr.Stats().DialFailures > 0 })
	s := a.tr.Stats()
	if s.DroppedOnDisconnect == 0 || s.Closed[ReasonWriteError] != 1 {
		t.Fatalf("stats %+v\n%s", s, a.logs)
	}
	sent := s.FramesSent
	for seq := range 10 {
		start := time.Now()
		a.tr.Send([]wire.Message{testMsg(1, 2, 1000+seq)})
		if d := time.Since(start); d > time.Second {
			t.Fatalf("Send blocked %v while the peer is down", d)
		}
	}
	if s := a.tr.Stats(); s.FramesSent != sent {
		t.Fatalf("frames sent while the peer is down: %+v", s)
	}
}

// A frame larger than the socket takes at once, sent on an idle connection:
// its sender writes what fits and leaves the rest to the writer goroutine;
// the frames queued meanwhile follow it, in order and intact.
func TestTCPPartialDirectWriteIsFinishedByTheWriter(t *testing.T) {
	checkNoLeak(t)
	nodes := startCluster(t, 1, 2)
	a, b := nodes[1], nodes[2]
	a.tr.Send([]wire.Message{testMsg(1, 2, 0)})
	waitFor(t, "first delivery", func() bool { return b.col.Count() == 1 })
	big := testMsg(1, 2, 1)
	big.Entries[0].Value.Data = bytes.Repeat([]byte("y"), 12<<20)
	a.tr.Send([]wire.Message{big})
	const n = 50
	for seq := 2; seq < n; seq++ {
		a.tr.Send([]wire.Message{testMsg(1, 2, seq)})
	}
	waitFor(t, "every message", func() bool { return b.col.Count() == n })
	waitFor(t, "the sender's counts", func() bool { return a.tr.Stats().FramesSent == n })
	got := b.col.Snapshot()
	if !got[1].Entries[0].Value.Equal(big.Entries[0].Value) {
		t.Fatal("large value corrupted")
	}
	got[1] = testMsg(1, 2, 1)
	checkStreams(t, 2, got, []wire.ReplicaID{1}, n)
	sa, sb := a.tr.Stats(), b.tr.Stats()
	if sa.FramesSent != n || sa.BytesSent != sb.BytesReceived || len(sa.Closed) != 0 {
		t.Fatalf("stats sender %+v receiver %+v", sa, sb)
	}
}
