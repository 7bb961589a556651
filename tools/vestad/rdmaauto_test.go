//go:build linux && rdma

package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vestalabs/vesta/client"
)

// TestRDMAAutoPartialDevices runs three vestad processes with -transport
// auto where only replicas 1 and 2 have an RDMA device (replica 3 is given
// an -rdma-device that does not exist, so it has none): the link between 1
// and 2 must go to RDMA, every link of replica 3 stay on TCP, each /status
// must say so with the reason, and the cluster must commit over the mixed
// links. tools/vmlab test-rdma runs it on soft-RoCE with
// VESTA_VESTAD=/vmlab/vestad.
func TestRDMAAutoPartialDevices(t *testing.T) {
	bin := os.Getenv("VESTA_VESTAD")
	if bin == "" {
		if os.Getenv("VESTA_RDMA_REQUIRE") == "1" {
			t.Fatal("VESTA_RDMA_REQUIRE=1 and no VESTA_VESTAD (a vestad built with -tags rdma)")
		}
		t.Skip("needs VESTA_VESTAD (a vestad built with -tags rdma) and an RDMA device: go run ./tools/vmlab test-rdma")
	}
	const n, puts, noDevice = 3, 300, "vesta-no-such-device"
	dir := t.TempDir()
	addrs := freeAddrs(t, 3*n)
	peers, clients, metrics := addrs[:n], addrs[n:2*n], addrs[2*n:]
	cl := &procCluster{t: t, clientAddrs: clients}
	for i := range n {
		id := i + 1
		p := &vproc{cl: cl, id: id, bin: bin,
			dataDir: filepath.Join(dir, fmt.Sprintf("data%d", id)),
			logPath: filepath.Join(dir, fmt.Sprintf("vestad%d.log", id))}
		device := os.Getenv("VESTA_RDMA_DEVICE") // "": the first
		// Replica 3: no device, and a long election timeout, so that a
		// replica with a device leads and its links carry both transports.
		election := "50"
		if id == 3 {
			device, election = noDevice, "500"
		}
		p.args = []string{"-id", fmt.Sprint(id), "-peers", addrMap(peers), "-clients", addrMap(clients),
			"-metrics-addr", metrics[i], "-data", p.dataDir, "-cluster-id", "42", "-tick", "10ms", "-election-ticks", election,
			"-transport", modeAuto, "-log-level", "info"}
		if device != "" {
			p.args = append(p.args, "-rdma-device", device)
		}
		cl.procs = append(cl.procs, p)
	}
	cl.startRDMA(clients)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	leader := cl.waitLeader(ctx, 60*time.Second)
	if leader < 0 {
		t.Fatal("no leader elected within 60 s of starting")
	}

	// want is the transport and a piece of the reason of link from>to.
	want := func(from, to int) (string, string) {
		switch {
		case from == 3:
			return modeTCP, "no local RDMA device"
		case to == 3:
			return modeTCP, "the peer has no usable RDMA device"
		}
		return modeRDMA, "both ends have an RDMA device"
	}
	links := func() (map[string]linkStatus, string) {
		got := map[string]linkStatus{}
		for i, m := range metrics {
			st, err := fetchStatus(ctx, m)
			if err != nil {
				return nil, err.Error()
			}
			if st.Transport.Mode != modeAuto || len(st.Transport.Links) != n-1 {
				return nil, fmt.Sprintf("replica %d: %+v", i+1, st.Transport)
			}
			for _, l := range st.Transport.Links {
				tr, why := want(i+1, int(l.Peer))
				if l.Transport != tr || !strings.Contains(l.Why, why) || (tr == modeRDMA && (l.Up == nil || !*l.Up)) {
					return nil, fmt.Sprintf("replica %d's link to %d: %+v, want %s (%q)", i+1, l.Peer, l, tr, why)
				}
				got[fmt.Sprintf("%d>%d", i+1, l.Peer)] = l
			}
		}
		return got, ""
	}
	var before map[string]linkStatus
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		var last string
		if before, last = links(); before != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the links did not settle to rdma between 1 and 2 and tcp to 3: %s", last)
		}
	}
	if why := before["3>1"].Why; !strings.Contains(why, noDevice) {
		t.Errorf("replica 3's reason does not name the missing device %q: %q", noDevice, why)
	}
	t.Logf("links settled; leader is replica %d; 1>2 %q, 1>3 %q, 3>1 %q", leader+1, before["1>2"].Why, before["1>3"].Why, before["3>1"].Why)

	// Commit over the mixed links, and read it all back.
	c, err := client.New(clients, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range puts {
		pctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		err := c.Put(pctx, fmt.Appendf(nil, "auto/%d", i), fmt.Appendf(nil, "v%d", i))
		cancel()
		if err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
	}
	for i := range puts {
		gctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		v, found, err := c.Get(gctx, fmt.Appendf(nil, "auto/%d", i))
		cancel()
		if err != nil || !found || string(v) != fmt.Sprintf("v%d", i) {
			t.Fatalf("get auto/%d: %q, found %v, %v", i, v, found, err)
		}
	}
	cl.checkConverged(ctx, t)
	after, last := links()
	if after == nil {
		t.Fatalf("the links changed under load: %s", last)
	}
	// The load went over both kinds of link: the RDMA link between 1 and 2
	// and the TCP links to 3 (from whichever of 1 and 2 leads).
	grew := func(keys ...string) bool {
		var b, a uint64
		for _, k := range keys {
			if before[k].FramesSent == nil || after[k].FramesSent == nil {
				return false
			}
			b, a = b+*before[k].FramesSent, a+*after[k].FramesSent
		}
		return a > b
	}
	if l := cl.waitLeader(ctx, 20*time.Second); l >= 0 && l != 2 {
		if !grew("1>2", "2>1") {
			t.Errorf("the RDMA link between 1 and 2 carried nothing during %d puts: before %+v %+v, after %+v %+v",
				puts, before["1>2"], before["2>1"], after["1>2"], after["2>1"])
		}
		if !grew("1>3", "2>3") {
			t.Errorf("the TCP links to 3 carried nothing during %d puts", puts)
		}
	}
	if f := cl.failures(); len(f) > 0 {
		t.Fatalf("replica processes failed:\n%s", strings.Join(f, "\n"))
	}
	cl.stopAll(t)
}

// startRDMA starts the replicas of an RDMA guest test, with a status
// client on clients (procCluster.watch).
func (cl *procCluster) startRDMA(clients []string) {
	cl.watch(clients)
	cl.startAll()
}
