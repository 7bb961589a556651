//go:build rdma

package rdma

import (
	"bytes"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/vestalabs/vesta/cgo/verbs"
	"github.com/vestalabs/vesta/engine/wire"
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

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

type collector struct {
	mu   sync.Mutex
	msgs []wire.Message
}

func (c *collector) handle(b []wire.Message) {
	c.mu.Lock()
	c.msgs = append(c.msgs, b...)
	c.mu.Unlock()
}

func (c *collector) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.msgs)
}

func (c *collector) snapshot() []wire.Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]wire.Message(nil), c.msgs...)
}

// testMsg's data says who sent it and which it is; every 97th is large
// (spans many slots).
func testMsg(from, to wire.ReplicaID, seq int) wire.Message {
	data := fmt.Appendf(nil, "%d->%d #%d ", from, to, seq)
	n := seq % 100
	if seq%97 == 0 {
		n = 100 << 10
	}
	data = append(data, bytes.Repeat([]byte{byte(seq)}, n)...)
	b := wire.Ballot{Round: 1, Replica: from}
	return wire.Message{
		Type: wire.MsgAccept, From: from, To: to, Ballot: b, Slot: wire.Slot(seq), Commit: wire.Slot(seq),
		Entries: []wire.Entry{{Slot: wire.Slot(seq), Ballot: b, Value: wire.Value{Kind: wire.ValueBatch, Data: data}}},
	}
}

func checkStreams(t *testing.T, self wire.ReplicaID, got []wire.Message, senders []wire.ReplicaID, n int) {
	t.Helper()
	next := map[wire.ReplicaID]int{}
	for _, m := range got {
		want := testMsg(m.From, self, next[m.From])
		if m.To != self || m.Slot != want.Slot || len(m.Entries) != 1 || !m.Entries[0].Value.Equal(want.Entries[0].Value) {
			t.Fatalf("replica %d got %v, want %v", self, m, want)
		}
		next[m.From]++
	}
	for _, s := range senders {
		if next[s] != n {
			t.Fatalf("replica %d got %d messages from %d, want %d", self, next[s], s, n)
		}
	}
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
		tr, err := New(cfg, cs[i].handle)
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
		waitFor(t, fmt.Sprintf("replica %d's messages", i+1), func() bool { return c.count() >= per*(n-1) })
	}
	for i, c := range cs {
		self := wire.ReplicaID(i + 1)
		checkStreams(t, self, c.snapshot(), ids(n, self), per)
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
	waitFor(t, "the first message", func() bool { return cs[1].count() == 1 })
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
		SlotSize: 4096, RecvSlots: 4, SendSlots: 4}, c2.handle)
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
		return c2.count() > 0 && cs[0].count() > 0
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
	waitFor(t, "delivery", func() bool { return cs[1].count() == 1 && cs[2].count() == 1 })
	for _, tr := range ts {
		if err := tr.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		tr.Close() // idempotent
	}
	waitFor(t, "goroutines to end", func() bool { return runtime.NumGoroutine() <= before })
}
