//go:build linux && rdma

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/vestalabs/vesta/client"
)

// TestRDMACluster runs three vestad processes replicating over RDMA
// (-transport rdma, a write-ahead log each), drives them with a pipelined
// load of write-once puts (as vesta-bench does) beside the process fault
// tests' history-recording load, until at least VESTA_RDMA_COMMANDS
// (100,000) commands are acknowledged; meanwhile it SIGKILLs the leader and
// restarts it. Then it checks that every acknowledged write reads back, that
// the whole history (both loads and the final reads) is linearizable, that
// the replicas converge, and that every replica's /status shows rdma on
// every peer link, connected. tools/vmlab test-rdma runs it on soft-RoCE
// with VESTA_VESTAD=/vmlab/vestad.
func TestRDMACluster(t *testing.T) {
	bin := os.Getenv("VESTA_VESTAD")
	if bin == "" {
		if os.Getenv("VESTA_RDMA_REQUIRE") == "1" {
			t.Fatal("VESTA_RDMA_REQUIRE=1 and no VESTA_VESTAD (a vestad built with -tags rdma)")
		}
		t.Skip("needs VESTA_VESTAD (a vestad built with -tags rdma) and an RDMA device: go run ./tools/vmlab test-rdma")
	}
	target := 100_000
	if s := os.Getenv("VESTA_RDMA_COMMANDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatal(err)
		}
		target = n
	}
	// VESTA_CLUSTER_TRANSPORT=auto runs the same test where there is no
	// device (over TCP, the links then checked to be tcp): a check of the
	// test itself.
	mode, wantLink := modeRDMA, modeRDMA
	if m := os.Getenv("VESTA_CLUSTER_TRANSPORT"); m != "" {
		mode, wantLink = m, modeTCP
	}
	start := time.Now()
	logf := func(format string, args ...any) {
		t.Logf("%6.2fs "+format, append([]any{time.Since(start).Seconds()}, args...)...)
	}
	const n = 3
	dir := t.TempDir()
	addrs := freeAddrs(t, 3*n)
	peers, clients, metrics := addrs[:n], addrs[n:2*n], addrs[2*n:]
	cl := &procCluster{t: t, clientAddrs: clients}
	for i := range n {
		p := &vproc{cl: cl, id: i + 1, bin: bin,
			dataDir: filepath.Join(dir, fmt.Sprintf("data%d", i+1)),
			logPath: filepath.Join(dir, fmt.Sprintf("vestad%d.log", i+1))}
		// Small WAL segments and frequent checkpoints: the guest's /tmp is
		// memory.
		p.args = []string{"-id", fmt.Sprint(i + 1), "-peers", addrMap(peers), "-clients", addrMap(clients),
			"-metrics-addr", metrics[i], "-data", p.dataDir, "-cluster-id", "42", "-tick", "10ms", "-election-ticks", "50",
			"-wal-segment-bytes", fmt.Sprint(4 << 20), "-checkpoint-bytes", fmt.Sprint(4 << 20),
			"-transport", mode, "-log-level", "info"}
		if d := os.Getenv("VESTA_RDMA_DEVICE"); d != "" {
			p.args = append(p.args, "-rdma-device", d)
		}
		cl.procs = append(cl.procs, p)
	}
	cl.startRDMA(clients)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	if cl.waitLeader(ctx, 60*time.Second) < 0 {
		t.Fatal("no leader elected within 60 s of starting")
	}
	waitLinks(t, ctx, metrics, mode, wantLink, 30*time.Second)
	logf("leader elected; every peer link is %s", wantLink)

	hist := newLoad(clients, 2, 3)
	hist.start(t)
	defer hist.stop()
	bl := &pipeLoad{l: hist}
	bl.start(t, clients, 2, 128)
	defer bl.stop()

	// Commands: acknowledged writes of both loads (reads are not counted).
	total := func() int { return hist.ackedWrites() }
	waitFor := func(n int, limit time.Duration) {
		deadline := time.Now().Add(limit)
		last := time.Now()
		for total() < n {
			if time.Now().After(deadline) {
				t.Fatalf("only %d commands acknowledged of %d after %v", total(), n, limit)
			}
			if time.Since(last) > 10*time.Second {
				logf("%d commands acknowledged", total())
				last = time.Now()
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFor(target*2/5, 5*time.Minute)
	leader := cl.waitLeader(ctx, 20*time.Second)
	if leader < 0 {
		t.Fatal("no leader under load")
	}
	killedAt := total()
	logf("%d commands acknowledged; SIGKILL the leader, replica %d", killedAt, leader+1)
	cl.procs[leader].kill()
	time.Sleep(time.Second)
	logf("%d commands acknowledged; restart replica %d", total(), leader+1)
	cl.procs[leader].start()
	waitLinks(t, ctx, metrics, mode, wantLink, time.Minute)
	rejoined := total()
	logf("%d commands acknowledged; replica %d is back, every peer link %s again", rejoined, leader+1, wantLink)
	// The load goes on with the restarted replica in the cluster.
	waitFor(max(target, rejoined+target/5), 6*time.Minute)
	logf("%d commands acknowledged; stop the load", total())
	bl.stop()
	hist.stop()
	loadTime := time.Since(start)
	if cl.waitLeader(ctx, 30*time.Second) < 0 {
		t.Fatal("no leader after the load")
	}

	verified := hist.verify(t, ctx)
	verified += bl.verify(t)
	logf("%d acknowledged writes read back intact (%d pipelined puts acknowledged, %d failed or unknown)",
		verified, bl.acked.Load(), bl.failed.Load())
	history := hist.history()
	res, _ := porcupine.CheckOperationsVerbose(kvModel, history, 2*time.Minute)
	switch res {
	case porcupine.Illegal:
		t.Fatalf("the client history of %d operations is not linearizable", len(history))
	case porcupine.Unknown:
		t.Fatalf("the linearizability check of %d operations timed out", len(history))
	}
	logf("history of %d operations is linearizable", len(history))
	cl.checkConverged(ctx, t)
	links := waitLinks(t, ctx, metrics, mode, wantLink, 30*time.Second)
	logf("every replica's /status shows %s on every peer link: %s", wantLink, links)
	if f := cl.failures(); len(f) > 0 {
		t.Fatalf("replica processes failed:\n%s", strings.Join(f, "\n"))
	}
	// One line for tools/vmlab's report.
	fmt.Printf("@@VMLAB cluster replicas=%d transport=%s commands=%d load_s=%.1f killed=%d killed_at=%d verified=%d history=%d linearizable=1 links=%s\n",
		n, wantLink, total(), loadTime.Seconds(), leader+1, killedAt, verified, len(history), strings.ReplaceAll(links, " ", ","))
	cl.stopAll(t)
}

// waitLinks waits until every replica's /status shows transport mode and
// each peer link on link (and up, for rdma); it returns the links as
// "1>2:rdma:frames=...:reconnects=...:stalls=... ...".
func waitLinks(t *testing.T, ctx context.Context, metrics []string, mode, link string, d time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(d)
	var last string
	for {
		var parts []string
		ok := true
		for i, m := range metrics {
			st, err := fetchStatus(ctx, m)
			if err != nil {
				ok, last = false, err.Error()
				break
			}
			if st.Transport.Mode != mode || len(st.Transport.Links) != len(metrics)-1 {
				ok, last = false, fmt.Sprintf("replica %d: %+v", i+1, st.Transport)
				break
			}
			for _, l := range st.Transport.Links {
				if l.Transport != link || (link == modeRDMA && (l.Up == nil || !*l.Up)) {
					ok, last = false, fmt.Sprintf("replica %d: link %+v", i+1, l)
					break
				}
				if link != modeRDMA {
					parts = append(parts, fmt.Sprintf("%d>%d:%s", i+1, l.Peer, l.Transport))
					continue
				}
				parts = append(parts, fmt.Sprintf("%d>%d:rdma:frames=%d:reconnects=%d:stalls=%d", i+1, l.Peer, *l.FramesSent, *l.Reconnects, *l.CreditStalls))
			}
		}
		if ok {
			return strings.Join(parts, " ")
		}
		if time.Now().After(deadline) {
			t.Fatalf("the peer links are not all rdma and up: %s", last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func fetchStatus(ctx context.Context, metricsAddr string) (statusWithTransport, error) {
	var st statusWithTransport
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(rctx, http.MethodGet, "http://"+metricsAddr+"/status", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return st, err
	}
	return st, json.Unmarshal(b, &st)
}

// pipeLoad is vesta-bench's kind of load: each client keeps many puts in
// flight (PutAsync), each of a fresh write-once key. Every put goes into
// the history of l (open-ended when its outcome is unknown), and every
// acknowledged one must read back.
type pipeLoad struct {
	l       *load
	clients []*client.Client
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	once    sync.Once
	next    atomic.Uint64
	acked   atomic.Int64
	failed  atomic.Int64

	mu   sync.Mutex
	keys []uint64 // acknowledged
}

func (b *pipeLoad) start(t *testing.T, addrs []string, clients, inflight int) {
	ctx, cancel := context.WithCancel(context.Background())
	b.cancel = cancel
	for ci := range clients {
		c, err := client.New(addrs, client.Options{})
		if err != nil {
			t.Fatal(err)
		}
		b.clients = append(b.clients, c)
		b.wg.Add(1)
		go b.run(ctx, c, 2000+ci, inflight)
	}
}

func (b *pipeLoad) run(ctx context.Context, c *client.Client, worker, inflight int) {
	defer b.wg.Done()
	sem := make(chan struct{}, inflight)
	for ctx.Err() == nil {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			continue
		}
		k := b.next.Add(1)
		key := fmt.Sprintf("pipe/%d", k)
		val := fmt.Sprintf("p%d", k)
		call := b.l.now()
		c.PutAsync([]byte(key), []byte(val), func(err error) {
			ret := b.l.now()
			in := kvIn{Op: mPut, Key: key, Value: val}
			if err == nil {
				b.acked.Add(1)
				b.mu.Lock()
				b.keys = append(b.keys, k)
				b.mu.Unlock()
				b.l.record(worker, in, kvOut{}, call, ret)
			} else {
				b.failed.Add(1)
				b.l.record(worker, in, kvOut{Unknown: true}, call, -1)
			}
			<-sem
		})
	}
	for range inflight {
		sem <- struct{}{}
	}
}

func (b *pipeLoad) stop() {
	b.once.Do(func() {
		b.cancel()
		b.wg.Wait()
		for _, c := range b.clients {
			c.Close()
		}
	})
}

// verify reads back every acknowledged put, pipelined, adding the reads to
// the history; it returns how many read back intact.
func (b *pipeLoad) verify(t *testing.T) int {
	c, err := client.New(b.l.addrs, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b.mu.Lock()
	keys := append([]uint64(nil), b.keys...)
	b.mu.Unlock()
	sem := make(chan struct{}, 256)
	var ok, lost atomic.Int64
	var wg sync.WaitGroup
	for i, k := range keys {
		sem <- struct{}{}
		wg.Add(1)
		key, want := fmt.Sprintf("pipe/%d", k), fmt.Sprintf("p%d", k)
		call := b.l.now()
		c.GetAsync([]byte(key), func(v []byte, found bool, err error) {
			defer wg.Done()
			defer func() { <-sem }()
			if err != nil {
				t.Errorf("reading back %s: %v", key, err)
				return
			}
			b.l.record(3000+i%256, kvIn{Op: mGet, Key: key}, kvOut{Value: string(v), Found: found}, call, b.l.now())
			if !found || string(v) != want {
				if lost.Add(1) <= 10 {
					t.Errorf("acknowledged write lost: %s = %q (found %v), want %q", key, v, found, want)
				}
				return
			}
			ok.Add(1)
		})
	}
	wg.Wait()
	if l := lost.Load(); l > 0 {
		t.Errorf("%d acknowledged writes lost", l)
	}
	return int(ok.Load())
}

// ackedWrites is how many writes (commands) were acknowledged.
func (l *load) ackedWrites() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.writes
}
