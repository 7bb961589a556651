package main

import (
	"bytes"
	"context"
	"encoding/json"
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
	"github.com/vestalabs/vesta/engine/wire"
	"github.com/vestalabs/vesta/rdma"
)

func TestTransportFlag(t *testing.T) {
	base := []string{"-id=1", "-peers=1=127.0.0.1:7001,2=127.0.0.1:7002", "-client-addr=127.0.0.1:7101", "-log=mem", "-cluster-id=7"}
	cfg, err := parseFlags(base, io.Discard)
	if err != nil || cfg.transport.mode != modeTCP {
		t.Fatalf("default transport: %+v %v", cfg, err)
	}
	for _, m := range []string{modeTCP, modeRDMA, modeAuto} {
		cfg, err := parseFlags(append(base, "-transport="+m, "-rdma-device=rxe0"), io.Discard)
		if err != nil || cfg.transport.mode != m || cfg.transport.device != "rxe0" {
			t.Fatalf("-transport %s: %+v %v", m, cfg, err)
		}
	}
	if _, err := parseFlags(append(base, "-transport=udp"), io.Discard); err == nil || !strings.Contains(err.Error(), "-transport") {
		t.Fatalf("-transport udp: %v", err)
	}
}

// syncBuffer is a log sink several replicas share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestTransportRDMAWithoutDevice: -transport rdma on a host without an
// RDMA device (or a build without the rdma tag) fails at start and says
// why and what to do.
func TestTransportRDMAWithoutDevice(t *testing.T) {
	if rdmaDevicePresent() {
		t.Skip("this host has an RDMA device, and this test checks vestad without one; TestRDMACluster (go run ./tools/vmlab test-rdma) covers the device path")
	}
	addrs := freeAddrs(t, 3)
	cfg, err := parseFlags([]string{"-id=1", "-peers=1=" + addrs[0] + ",2=" + addrs[1], "-client-addr=" + addrs[2],
		"-log=mem", "-cluster-id=7", "-transport=rdma"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	cfg.logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = run(ctx, cfg, func(string, string) { t.Error("serving without an RDMA device") })
	if err == nil {
		t.Fatal("-transport rdma without a device started")
	}
	msg := err.Error()
	t.Logf("the error: %v", msg)
	if !strings.Contains(msg, "-transport rdma") || !strings.Contains(msg, "-transport auto") ||
		(!strings.Contains(msg, "no usable RDMA device") && !strings.Contains(msg, "built without RDMA support")) {
		t.Fatalf("unclear error: %v", msg)
	}
	// The replication address is free again.
	ln, err := net.Listen("tcp", addrs[0])
	if err != nil {
		t.Fatalf("the failed start left its listener: %v", err)
	}
	ln.Close()
}

func rdmaDevicePresent() bool {
	tr, err := rdma.New(rdma.Config{ID: 1, ListenAddr: "127.0.0.1:0", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))},
		func([]wire.Message) {})
	if err != nil {
		return false
	}
	tr.Close()
	return true
}

// TestTransportAutoFallsBackToTCP: a cluster with -transport auto and no
// RDMA device replicates over TCP, says so in its log, and shows tcp on
// every peer link in /status and the metrics, with the links' counters.
func TestTransportAutoFallsBackToTCP(t *testing.T) {
	if rdmaDevicePresent() {
		t.Skip("this host has an RDMA device, and this test checks vestad without one; TestRDMACluster (go run ./tools/vmlab test-rdma) covers the device path")
	}
	const n = 3
	addrs := freeAddrs(t, 3*n)
	peers, clients, metrics := addrs[:n], addrs[n:2*n], addrs[2*n:]
	var logs syncBuffer
	var cancels []context.CancelFunc
	var errs []chan error
	for i := range n {
		cfg, err := parseFlags([]string{fmt.Sprint("-id=", i+1), "-peers=" + addrMap(peers), "-clients=" + addrMap(clients),
			"-metrics-addr=" + metrics[i], "-log=mem", "-cluster-id=7", "-tick=2ms", "-election-ticks=15", "-transport=auto"}, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		cfg.logger = slog.New(slog.NewTextHandler(&logs, nil)).With("r", i+1)
		ctx, cancel := context.WithCancel(context.Background())
		ready := make(chan struct{})
		errc := make(chan error, 1)
		go func() { errc <- run(ctx, cfg, func(string, string) { close(ready) }) }()
		select {
		case <-ready:
		case err := <-errc:
			t.Fatalf("replica %d: %v", i+1, err)
		}
		cancels, errs = append(cancels, cancel), append(errs, errc)
	}
	defer func() {
		for i := range cancels {
			cancels[i]()
			if err := <-errs[i]; err != nil {
				t.Errorf("replica %d stopped with %v", i+1, err)
			}
		}
	}()
	c, err := client.New(clients, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := range 50 {
		k := []byte(fmt.Sprint("k", i))
		if err := c.Put(ctx, k, k); err != nil {
			t.Fatalf("put: %v", err)
		}
	}
	if !strings.Contains(logs.String(), "no usable RDMA device; replicating over TCP to every peer") {
		t.Errorf("the log does not say that auto fell back to TCP:\n%s", logs.String())
	}
	var sent uint64
	for i, m := range metrics {
		st := getStatus(t, m)
		if st.Transport.Mode != modeAuto || len(st.Transport.Links) != n-1 {
			t.Fatalf("replica %d: transport %+v", i+1, st.Transport)
		}
		for _, l := range st.Transport.Links {
			if l.Transport != modeTCP || !strings.Contains(l.Why, "no local RDMA device") || l.FramesSent == nil || l.Completions != nil {
				t.Errorf("replica %d: link %+v", i+1, l)
			}
			if l.FramesSent != nil {
				sent += *l.FramesSent
			}
		}
		body := getBody(t, "http://"+m+"/metrics")
		for j := range n {
			if j == i {
				continue
			}
			want := fmt.Sprintf(`vesta_link_info{peer="%d",transport="tcp"} 1`, j+1)
			if !strings.Contains(body, want) {
				t.Errorf("replica %d's metrics lack %s", i+1, want)
			}
		}
		if !strings.Contains(body, "vesta_link_frames_sent_total{") {
			t.Errorf("replica %d's metrics lack vesta_link_frames_sent_total", i+1)
		}
	}
	if sent == 0 {
		t.Error("no frames counted on any link")
	}
}

// TestTransportTCPStatus: the default transport's /status names tcp on
// every link.
func TestTransportTCPStatus(t *testing.T) {
	cl := startInProc(t, 3)
	st := getStatus(t, cl.metricsAddrs[0])
	if st.Transport.Mode != modeTCP || len(st.Transport.Links) != 2 {
		t.Fatalf("transport %+v", st.Transport)
	}
	for _, l := range st.Transport.Links {
		if l.Transport != modeTCP || l.Why != "-transport tcp" {
			t.Errorf("link %+v", l)
		}
	}
}

type statusWithTransport struct {
	Role      string          `json:"role"`
	Transport transportStatus `json:"transport"`
}

func getStatus(t *testing.T, metricsAddr string) statusWithTransport {
	t.Helper()
	var st statusWithTransport
	if err := json.Unmarshal([]byte(getBody(t, "http://"+metricsAddr+"/status")), &st); err != nil {
		t.Fatal(err)
	}
	return st
}

func getBody(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestDemuxAndProbe: the shared listener routes TCP's and RDMA's hellos to
// their transports and answers probes with what this replica has.
func TestDemuxAndProbe(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := newDemux(ln, 7, 2, slog.New(slog.NewTextHandler(io.Discard, nil)))
	d.start()
	defer d.close()
	ctx := context.Background()
	has, dev, err := probePeer(ctx, 7, 1, 2, ln.Addr().String())
	if err != nil || has {
		t.Fatalf("probe of a replica without RDMA: %v %q %v", has, dev, err)
	}
	d.hasRDMA.Store(true)
	d.device.Store("rxe0")
	has, dev, err = probePeer(ctx, 7, 1, 2, ln.Addr().String())
	if err != nil || !has || dev != "rxe0" {
		t.Fatalf("probe of a replica with RDMA: %v %q %v", has, dev, err)
	}
	if _, _, err := probePeer(ctx, 7, 1, 3, ln.Addr().String()); err == nil {
		t.Fatal("a probe for another replica was answered")
	}
	if _, _, err := probePeer(ctx, 8, 1, 2, ln.Addr().String()); err == nil {
		t.Fatal("a probe of another cluster was answered")
	}
	for _, c := range []struct {
		typ uint8
		sub *subListener
	}{{typeTCPHello, d.tcp}, {typeRDMAHello, d.rdma}} {
		codec := wire.Codec{ClusterID: 7}
		f, _ := codec.AppendFrame(nil, c.typ, []byte("12345678"))
		nc, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		nc.Write(f)
		got, err := c.sub.Accept()
		if err != nil {
			t.Fatal(err)
		}
		b := make([]byte, len(f))
		if _, err := io.ReadFull(got, b); err != nil || !bytes.Equal(b, f) {
			t.Fatalf("type %#x: the routed connection reads %x %v, want %x", c.typ, b, err, f)
		}
		got.Close()
		nc.Close()
	}
}
