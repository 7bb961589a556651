package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vestalabs/vesta/client"
	"github.com/vestalabs/vesta/client/proto"
)

func TestFlagErrorsNameTheFlag(t *testing.T) {
	peers := "-peers=1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003"
	clients := "-clients=1=127.0.0.1:7101,2=127.0.0.1:7102,3=127.0.0.1:7103"
	cases := []struct {
		args []string
		flag string
	}{
		{[]string{peers, clients, "-data=/tmp/x"}, "-id"},
		{[]string{"-id=4", peers, clients, "-data=/tmp/x"}, "-peers"},
		{[]string{"-id=1", clients, "-data=/tmp/x"}, "-peers"},
		{[]string{"-id=1", "-peers=1=localhost", clients, "-data=/tmp/x"}, "-peers"},
		{[]string{"-id=1", "-peers=1=127.0.0.1:1,1=127.0.0.1:2", "-client-addr=:1", "-data=/tmp/x"}, "-peers"},
		{[]string{"-id=1", "-peers=x=127.0.0.1:1", "-client-addr=:1", "-data=/tmp/x"}, "-peers"},
		{[]string{"-id=1", "-peers=1=127.0.0.1:1,2=127.0.0.1:1", "-client-addr=:1", "-data=/tmp/x"}, "-peers"},
		{[]string{"-id=1", peers, "-clients=9=127.0.0.1:1", "-data=/tmp/x"}, "-clients"},
		{[]string{"-id=1", peers, "-data=/tmp/x"}, "-client-addr"},
		{[]string{"-id=1", peers, "-client-addr=nope", "-data=/tmp/x"}, "-client-addr"},
		{[]string{"-id=1", peers, clients}, "-data"},
		{[]string{"-id=1", peers, clients, "-log=mem", "-data=/tmp/x"}, "-data"},
		{[]string{"-id=1", peers, clients, "-log=disk"}, "-log"},
		{[]string{"-id=1", peers, clients, "-data=/tmp/x", "-metrics-addr=:x"}, "-metrics-addr"},
		{[]string{"-id=1", peers, clients, "-data=/tmp/x", "-cluster-id=0"}, "-cluster-id"},
		{[]string{"-id=1", peers, clients, "-data=/tmp/x", "-cluster-id="}, "-cluster-id"},
		{[]string{"-id=1", peers, clients, "-data=/tmp/x", "-tick=0s"}, "-tick"},
		{[]string{"-id=1", peers, clients, "-data=/tmp/x", "-log-level=loud"}, "-log-level"},
		{[]string{"-id=1", peers, clients, "-data=/tmp/x", "-log-format=xml"}, "-log-format"},
		{[]string{"-id=1", peers, clients, "-data=/tmp/x", "-max-sessions=0"}, "-max-sessions"},
		{[]string{"-id=1", peers, clients, "-data=/tmp/x", "extra"}, "argument"},
		{[]string{"-id=1", peers, clients, "-log=pmem:"}, "-log pmem"},
		{[]string{"-id=1", peers, clients, "-log=pmem:/tmp/p", "-data=/tmp/x"}, "-data"},
		{[]string{"-id=1", peers, clients, "-log=pmem:/tmp/p", "-pmem-size=10"}, "-pmem-size"},
		{[]string{"-id=1", peers, clients, "-data=/tmp/x", "-window=-1"}, "-window"},
		{[]string{"-id=1", peers, clients, "-data=/tmp/x", "-max-batch=-1"}, "-max-batch"},
		{[]string{"-id=1", peers, clients, "-data=/tmp/x", "-sched=fifo"}, "-sched"},
		{[]string{"-id=1", peers, clients, "-data=/tmp/x", "-max-batch-bytes=4194305"}, "-max-batch-bytes"},
	}
	for _, c := range cases {
		// Every case names the cluster but the one that sets it to 0.
		_, err := parseFlags(append([]string{"-cluster-id=7"}, c.args...), io.Discard)
		if err == nil || !strings.Contains(err.Error(), c.flag) {
			t.Errorf("%v: got %v, want an error naming %s", c.args, err, c.flag)
		}
	}
	if _, err := parseFlags([]string{"-id=2", peers, clients, "-log=mem"}, io.Discard); err == nil || !strings.Contains(err.Error(), "-cluster-id: required") {
		t.Fatalf("no -cluster-id: %v", err)
	}
	cfg, err := parseFlags([]string{"-id=2", peers, clients, "-log=mem", "-cluster-id=7"}, io.Discard)
	if err != nil || cfg.clientAddr != "127.0.0.1:7102" || !cfg.memLog || len(cfg.peers) != 3 {
		t.Fatalf("good flags: %+v %v", cfg, err)
	}
	cfg, err = parseFlags([]string{"-id=1", peers, clients, "-log=pmem:/dev/shm/r1.pmem", "-pmem-size=1073741824", "-window=64", "-cluster-id=7"}, io.Discard)
	if err != nil || cfg.pmemPath != "/dev/shm/r1.pmem" || cfg.pmemSize != 1<<30 || cfg.window != 64 {
		t.Fatalf("pmem flags: %+v %v", cfg, err)
	}
}

// freeAddrs returns n loopback addresses that were free a moment ago.
// givenAddrs are the addresses freeAddrs handed out in this process: the
// kernel may hand a port released by one call to the next, and two replicas
// (or a client port and a metrics port) must never share one.
var givenAddrs sync.Map

func freeAddrs(t testing.TB, n int) []string {
	t.Helper()
	var lns []net.Listener
	var out []string
	for len(out) < n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln) // held until the end: no port twice in one call
		if _, taken := givenAddrs.LoadOrStore(ln.Addr().String(), true); taken {
			continue
		}
		out = append(out, ln.Addr().String())
	}
	for _, ln := range lns {
		ln.Close()
	}
	return out
}

func addrMap(addrs []string) string {
	var parts []string
	for i, a := range addrs {
		parts = append(parts, fmt.Sprintf("%d=%s", i+1, a))
	}
	return strings.Join(parts, ",")
}

// inProcCluster runs n vestad replicas in this process through run().
type inProcCluster struct {
	clientAddrs  []string
	metricsAddrs []string
	cancels      []context.CancelFunc
	errs         []chan error
}

func startInProc(t testing.TB, n int, extra ...string) *inProcCluster {
	t.Helper()
	addrs := freeAddrs(t, 3*n)
	peers, clients, metrics := addrs[:n], addrs[n:2*n], addrs[2*n:]
	c := &inProcCluster{clientAddrs: clients, metricsAddrs: metrics}
	for i := 0; i < n; i++ {
		cfg, err := parseFlags(append([]string{fmt.Sprint("-id=", i+1), "-peers=" + addrMap(peers), "-clients=" + addrMap(clients),
			"-metrics-addr=" + metrics[i], "-log=mem", "-cluster-id=7", "-tick=2ms", "-election-ticks=15", "-log-level=error"}, extra...), io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		cfg.logger = slog.New(slog.NewTextHandler(io.Discard, nil))
		ctx, cancel := context.WithCancel(context.Background())
		ready := make(chan struct{})
		errc := make(chan error, 1)
		go func() { errc <- run(ctx, cfg, func(string, string) { close(ready) }) }()
		select {
		case <-ready:
		case err := <-errc:
			t.Fatalf("replica %d: %v", i+1, err)
		}
		c.cancels = append(c.cancels, cancel)
		c.errs = append(c.errs, errc)
	}
	t.Cleanup(func() {
		for i := range c.cancels {
			c.stop(t, i)
		}
	})
	return c
}

func (c *inProcCluster) stop(t testing.TB, i int) {
	if c.cancels[i] == nil {
		return
	}
	c.cancels[i]()
	c.cancels[i] = nil
	select {
	case err := <-c.errs[i]:
		if err != nil {
			t.Errorf("replica %d stopped with %v", i+1, err)
		}
	case <-time.After(20 * time.Second):
		t.Errorf("replica %d did not stop", i+1)
	}
}

func TestServeClients(t *testing.T) {
	cl := startInProc(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.New(cl.clientAddrs, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	// Concurrent writers on one connection; every write acknowledged is read back.
	var wg sync.WaitGroup
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				k := []byte(fmt.Sprintf("k-%d-%d", g, i))
				if err := c.Put(ctx, k, k); err != nil {
					t.Errorf("put %s: %v", k, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	for g := 0; g < 16; g++ {
		k := []byte(fmt.Sprintf("k-%d-19", g))
		if v, found, err := c.Get(ctx, k); err != nil || !found || string(v) != string(k) {
			t.Fatalf("get %s: %q %v %v", k, v, found, err)
		}
	}
	if ok, err := c.CAS(ctx, []byte("k-0-0"), []byte("k-0-0"), []byte("x")); err != nil || !ok {
		t.Fatalf("cas: %v %v", ok, err)
	}
	if existed, err := c.Delete(ctx, []byte("k-0-0")); err != nil || !existed {
		t.Fatalf("delete: %v %v", existed, err)
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), proto.MaxValueSize/16)
	if err := c.Put(ctx, []byte("big"), big); err != nil {
		t.Fatalf("put of a value at the size limit: %v", err)
	}
	if v, _, err := c.Get(ctx, []byte("big")); err != nil || !bytes.Equal(v, big) {
		t.Fatalf("get of a value at the size limit: %d bytes, %v", len(v), err)
	}

	// Status over the client protocol and over HTTP agree on the leader.
	leader := 0
	for i, a := range cl.clientAddrs {
		st, err := c.Status(ctx, a)
		if err != nil {
			t.Fatal(err)
		}
		if st.Role == "leader" {
			leader = i + 1
		}
		if st.Durability != "memory (NO DURABILITY)" {
			t.Errorf("durability %q", st.Durability)
		}
	}
	if leader == 0 {
		t.Fatal("no leader")
	}
	resp, err := http.Get("http://" + cl.metricsAddrs[0] + "/status")
	if err != nil {
		t.Fatal(err)
	}
	var st client.ServerStatus
	err = json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if err != nil || int(st.Leader) != leader || st.LeaderAddr != cl.clientAddrs[leader-1] {
		t.Fatalf("/status: %+v %v (leader %d)", st, err, leader)
	}
	resp, err = http.Get("http://" + cl.metricsAddrs[leader-1] + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, series := range []string{"vesta_commit_index", "vesta_proposals_total", `vestad_requests_total{op="put"}`, "vestad_client_connections", "vestad_kv_keys"} {
		if !strings.Contains(string(body), series) {
			t.Errorf("/metrics lacks %s", series)
		}
	}

	// The leader stops gracefully; a new one takes over and serves.
	cl.stop(t, leader-1)
	if err := c.Put(ctx, []byte("after"), []byte("failover")); err != nil {
		t.Fatalf("put after the leader stopped: %v", err)
	}
	if v, _, err := c.Get(ctx, []byte("k-3-7")); err != nil || string(v) != "k-3-7" {
		t.Fatalf("get after failover: %q %v", v, err)
	}
}

// A connection that does not speak the protocol is closed; one that sends
// a malformed frame too; the server keeps serving others.
func TestMalformedClientsAreClosed(t *testing.T) {
	cl := startInProc(t, 1)
	addr := cl.clientAddrs[0]
	for _, junk := range [][]byte{
		[]byte("GET / HTTP/1.1\r\n\r\n"),
		append(proto.Preamble[:], 0xff, 0xff, 0xff, 0x7f),              // oversized frame
		append(proto.Preamble[:], 3, 0, 0, 0, proto.KindRequest, 1, 2), // truncated request
	} {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		nc.Write(junk)
		nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		var ne net.Error
		if _, err := nc.Read(make([]byte, 1)); err == nil || (errors.As(err, &ne) && ne.Timeout()) {
			t.Errorf("junk %q: connection not closed: %v", junk, err) // EOF or a reset is right
		}
		nc.Close()
	}
	c, err := client.New([]string{addr}, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Put(ctx, []byte("k"), []byte("v")); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkPipelinedPut measures 64-byte puts from many goroutines sharing
// one client (one connection per server) against three in-process replicas
// with in-memory logs: the client protocol, the server and the engine,
// without disks. It measures; it asserts nothing about speed.
func BenchmarkPipelinedPut(b *testing.B) {
	cl := startInProc(b, 3)
	c, err := client.New(cl.clientAddrs, client.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	if err := c.Put(ctx, []byte("warm"), []byte("up")); err != nil {
		b.Fatal(err)
	}
	value := bytes.Repeat([]byte("v"), 64)
	b.SetParallelism(128)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		key := []byte("key-0000")
		for i := 0; pb.Next(); i++ {
			key[4] = byte('0' + i%10)
			if err := c.Put(ctx, key, value); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
