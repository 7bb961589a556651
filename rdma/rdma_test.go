//go:build rdma

package rdma

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/vestalabs/vesta/cgo/verbs"
	"github.com/vestalabs/vesta/engine/transport"
	"github.com/vestalabs/vesta/engine/wire"
	"github.com/vestalabs/vesta/internal/transporttest"
)

// Every wait is bounded by patience, generous for QEMU's TCG; no test
// asserts a speed.
const patience = 60 * time.Second

func needDevice(t *testing.T) {
	t.Helper()
	devs, err := verbs.Devices()
	if err == nil && len(devs) > 0 {
		return
	}
	msg := fmt.Sprintf("no RDMA device (%v)", err)
	if os.Getenv("VESTA_RDMA_REQUIRE") == "1" {
		t.Fatalf("%s with VESTA_RDMA_REQUIRE=1", msg)
	}
	t.Skipf("%s: run under `go run ./tools/vmlab test-rdma`", msg)
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	transporttest.WaitFor(t, patience, what, cond)
}

type collector = transporttest.Collector

// testMsg's data says who sent it and which it is; every 97th is large
// (spans many slots).
func testMsg(from, to wire.ReplicaID, seq int) wire.Message {
	return transporttest.Msg(from, to, seq, 97)
}

func checkStreams(t *testing.T, self wire.ReplicaID, got []wire.Message, senders []wire.ReplicaID, n int) {
	t.Helper()
	transporttest.CheckStreams(t, self, got, senders, n, 97)
}

// cluster starts n transports on loopback side channels. Small slots and
// few receives make the credits and the stream reassembly work hard.
func cluster(t *testing.T, n int, tweak func(*Config)) ([]*Transport, []*collector, []net.Listener) {
	t.Helper()
	needDevice(t)
	lns := make([]net.Listener, n)
	addrs := map[wire.ReplicaID]string{}
	for i := range lns {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns[i] = ln
		addrs[wire.ReplicaID(i+1)] = ln.Addr().String()
	}
	ts := make([]*Transport, n)
	cs := make([]*collector, n)
	for i := range ts {
		id := wire.ReplicaID(i + 1)
		peers := map[wire.ReplicaID]string{}
		for p, a := range addrs {
			if p != id {
				peers[p] = a
			}
		}
		cfg := Config{ClusterID: 42, ID: id, Listener: lns[i], Peers: peers,
			SlotSize: 4096, RecvSlots: 4, SendSlots: 4, ReadBufferSize: 16 << 10,
			Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
		if tweak != nil {
			tweak(&cfg)
		}
		cs[i] = &collector{}
		tr, err := New(cfg, cs[i].Handle)
		if err != nil {
			t.Fatal(err)
		}
		ts[i] = tr
		t.Cleanup(func() { tr.Close() })
	}
	return ts, cs, lns
}

func ids(n int, except wire.ReplicaID) []wire.ReplicaID {
	var r []wire.ReplicaID
	for i := 1; i <= n; i++ {
		if wire.ReplicaID(i) != except {
			r = append(r, wire.ReplicaID(i))
		}
	}
	return r
}

func TestMessagesFlowAmongThree(t *testing.T) {
	const n, per = 3, 600
	ts, cs, _ := cluster(t, n, nil)
	var wg sync.WaitGroup
	for i, tr := range ts {
		from := wire.ReplicaID(i + 1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := 0; seq < per; seq += 10 {
				var batch []wire.Message
				for k := seq; k < seq+10; k++ {
					for _, to := range ids(n, from) {
						batch = append(batch, testMsg(from, to, k))
					}
				}
				// Never more queued than MaxQueueBytes: wait for the
				// queue to drain a little.
				for {
					st := tr.Stats()
					if st.FramesSent+uint64(4*n) >= uint64(seq*(n-1)) {
						break
					}
					time.Sleep(time.Millisecond)
				}
				tr.Send(batch)
			}
		}()
	}
	wg.Wait()
	for i, c := range cs {
		waitFor(t, fmt.Sprintf("replica %d's messages", i+1), func() bool { return c.Count() >= per*(n-1) })
	}
	for i, c := range cs {
		self := wire.ReplicaID(i + 1)
		checkStreams(t, self, c.Snapshot(), ids(n, self), per)
		st := ts[i].Stats()
		t.Logf("replica %d: %+v", self, st)
		if st.DroppedQueueFull+st.DroppedOnDisconnect+st.DroppedUnencodable != 0 || st.Reconnects != 0 {
			t.Errorf("replica %d dropped or reconnected: %+v", self, st)
		}
		for r, k := range st.Closed {
			t.Errorf("replica %d closed %d connections for %s (an RNR NAK would show as %s)", self, k, r, ReasonQPError)
		}
		if st.FramesSent != uint64(per*(n-1)) || st.WriteCalls >= st.FramesSent {
			t.Errorf("replica %d: %d frames in %d posts", self, st.FramesSent, st.WriteCalls)
		}
	}
}

func TestPeerRestartIsReconnected(t *testing.T) {
	ts, cs, lns := cluster(t, 2, nil)
	ts[0].Send([]wire.Message{testMsg(1, 2, 0)})
	waitFor(t, "the first message", func() bool { return cs[1].Count() == 1 })
	addr := lns[1].Addr().String()
	if err := ts[1].Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "replica 1 to see the connection go", func() bool { return len(ts[0].Stats().Closed) > 0 })
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c2 := &collector{}
	tr2, err := New(Config{ClusterID: 42, ID: 2, Listener: ln, Peers: map[wire.ReplicaID]string{1: lns[0].Addr().String()},
		SlotSize: 4096, RecvSlots: 4, SendSlots: 4}, c2.Handle)
	if err != nil {
		t.Fatal(err)
	}
	defer tr2.Close()
	// Messages sent meanwhile may be lost; keep sending until one lands
	// both ways.
	seq := 1
	waitFor(t, "a message over the new connection", func() bool {
		ts[0].Send([]wire.Message{testMsg(1, 2, seq)})
		tr2.Send([]wire.Message{testMsg(2, 1, seq)})
		seq++
		time.Sleep(5 * time.Millisecond)
		return c2.Count() > 0 && cs[0].Count() > 0
	})
	if st := ts[0].Stats(); st.Reconnects == 0 {
		t.Errorf("replica 1 counts no reconnect: %+v", st)
	}
}

func TestForeignClusterIsRefused(t *testing.T) {
	ts, _, lns := cluster(t, 2, nil)
	_ = ts
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// Replica 1 of cluster 43 dials replica 2 of cluster 42.
	foreign, err := New(Config{ClusterID: 43, ID: 1, Listener: ln, Peers: map[wire.ReplicaID]string{2: lns[1].Addr().String()}}, func([]wire.Message) {})
	if err != nil {
		t.Fatal(err)
	}
	defer foreign.Close()
	waitFor(t, "the refusal", func() bool {
		return foreign.Stats().HandshakesRefused[transportPeerReason(2, ReasonForeignCluster)] > 0
	})
}

func TestSendToUnknownPeerAndOversized(t *testing.T) {
	ts, _, _ := cluster(t, 2, func(c *Config) { c.MaxFrameSize = 64 << 10 })
	ts[0].Send([]wire.Message{testMsg(1, 9, 1), testMsg(1, 2, 97)}) // 97: 100 KiB, over the limit
	st := ts[0].Stats()
	if st.DroppedNoPeer != 1 || st.DroppedUnencodable != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestCloseStopsEverything(t *testing.T) {
	before := runtime.NumGoroutine()
	ts, cs, _ := cluster(t, 3, nil)
	ts[0].Send([]wire.Message{testMsg(1, 2, 0), testMsg(1, 3, 0)})
	waitFor(t, "delivery", func() bool { return cs[1].Count() == 1 && cs[2].Count() == 1 })
	for _, tr := range ts {
		if err := tr.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		tr.Close() // idempotent
	}
	waitFor(t, "goroutines to end", func() bool { return runtime.NumGoroutine() <= before })
}

// TestOneWayStreamWithFewestSlots streams one way only, so that credits
// come back in credit-only SENDs alone, with the fewest receive slots a
// configuration may ask for. With 2 slots (once allowed) the sender spent
// its one usable credit and the receiver never owed enough to answer: the
// stream stalled after one SEND.
func TestOneWayStreamWithFewestSlots(t *testing.T) {
	const n = 200
	ts, cs, _ := cluster(t, 2, func(c *Config) { c.RecvSlots, c.SendSlots, c.SlotSize = 2, 2, 1024 })
	for seq := 0; seq < n; seq += 10 {
		var batch []wire.Message
		for k := seq; k < seq+10; k++ {
			batch = append(batch, testMsg(1, 2, k))
		}
		ts[0].Send(batch)
	}
	waitFor(t, "the one-way stream", func() bool { return cs[1].Count() >= n })
	checkStreams(t, 2, cs[1].Snapshot(), []wire.ReplicaID{1}, n)
	if st := ts[1].Stats(); st.FramesSent != 0 {
		t.Fatalf("replica 2 sent %d frames; the test needs a one-way stream", st.FramesSent)
	}
	for i, tr := range ts {
		if st := tr.Stats(); len(st.Closed) != 0 || st.DroppedQueueFull != 0 {
			t.Errorf("replica %d: %+v", i+1, st)
		}
	}
}

// TestReturnCreditsChecked: a peer cannot return more credits than it has
// receives.
func TestReturnCreditsChecked(t *testing.T) {
	c := &conn{credits: 1, peerSlots: 4}
	if err := c.returnCredits(3); err != nil || c.credits != 4 {
		t.Fatalf("returning 3 of 4: credits %d, %v", c.credits, err)
	}
	if err := c.returnCredits(0); err != nil {
		t.Fatalf("returning none: %v", err)
	}
	for _, imm := range []uint32{1, 1<<31 + 5, 1<<32 - 1} {
		err := c.returnCredits(imm)
		var b *errBroken
		if !errors.As(err, &b) || b.reason != ReasonBadCredit || c.credits != 4 {
			t.Fatalf("returning %d more: credits %d, %v", imm, c.credits, err)
		}
	}
}

// TestBadSideChannelInput speaks to a transport's side channel as a broken
// or misconfigured peer would: garbage is closed without an answer and
// counted; sound hellos that cannot be accepted are refused with the
// engine's refusal frame, which says why; the transport keeps working.
func TestBadSideChannelInput(t *testing.T) {
	ts, cs, lns := cluster(t, 2, nil)
	send := func(addr string, cluster uint64, typ uint8, payload []byte) (net.Conn, error) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		f, err := wire.Codec{ClusterID: cluster}.AppendFrame(nil, typ, payload)
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Write(f)
		return c, err
	}
	// Garbage, a frame that is not a hello, a hello with one receive slot:
	// closed, no answer.
	garbage := []struct {
		reason string
		conn   func() net.Conn
	}{
		{"bad_magic", func() net.Conn {
			c, _ := net.Dial("tcp", lns[1].Addr().String())
			c.Write(bytes.Repeat([]byte("garbage!"), 8))
			return c
		}},
		{ReasonBadHandshake, func() net.Conn { c, _ := send(lns[1].Addr().String(), 42, frameReady, nil); return c }},
		{ReasonBadHandshake, func() net.Conn {
			h := testHello()
			h.RecvSlots = 1
			c, _ := send(lns[1].Addr().String(), 42, frameHello, h.payload())
			return c
		}},
	}
	for _, g := range garbage {
		before := ts[1].Stats().Closed[g.reason]
		c := g.conn()
		c.SetReadDeadline(time.Now().Add(patience))
		if n, err := c.Read(make([]byte, 64)); err == nil {
			t.Fatalf("%s: answered with %d bytes", g.reason, n)
		}
		c.Close()
		waitFor(t, g.reason+" counted", func() bool { return ts[1].Stats().Closed[g.reason] > before })
	}
	// Sound hellos that are refused, and why.
	hl := func(from, to wire.ReplicaID) []byte {
		h := testHello()
		h.From, h.To = from, to
		return h.payload()
	}
	refusals := []struct {
		name    string
		addr    string
		cluster uint64
		from    wire.ReplicaID
		payload []byte
		reason  string
	}{
		{"foreign cluster", lns[1].Addr().String(), 43, 1, hl(1, 2), ReasonForeignCluster},
		{"unknown peer", lns[1].Addr().String(), 42, 9, hl(9, 2), ReasonUnknownPeer},
		{"wrong replica", lns[1].Addr().String(), 42, 1, hl(1, 3), ReasonWrongReplica},
		{"wrong direction", lns[0].Addr().String(), 42, 2, hl(2, 1), ReasonWrongDirection},
	}
	for _, r := range refusals {
		c, err := send(r.addr, r.cluster, frameHello, r.payload)
		if err != nil {
			t.Fatalf("%s: %v", r.name, err)
		}
		h, p, err := readFrame(c, wire.Codec{ClusterID: r.cluster}, patience, false)
		c.Close()
		if err != nil || h.Type != transport.FrameRefusal {
			t.Fatalf("%s: answered %+v, %v", r.name, h, err)
		}
		ref, err := transport.ParseRefusal(p, 0, r.addr, r.from, r.cluster)
		if err != nil || ref.Reason != r.reason || ref.Cluster != 42 {
			t.Fatalf("%s: refusal %+v, %v", r.name, ref, err)
		}
	}
	// The real link is untouched.
	ts[0].Send([]wire.Message{testMsg(1, 2, 0)})
	ts[1].Send([]wire.Message{testMsg(2, 1, 0)})
	waitFor(t, "messages both ways", func() bool { return cs[0].Count() == 1 && cs[1].Count() == 1 })
	if st := ts[0].Stats(); st.Reconnects != 0 {
		t.Errorf("replica 1 reconnected: %+v", st)
	}
}
