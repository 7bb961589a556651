package transport

import (
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vestalabs/vesta/engine/wire"
)

// refusalLines returns the error lines a transport logged about refusals.
func refusalLines(l *logBuf) []string {
	var out []string
	for _, line := range strings.Split(l.String(), "\n") {
		if strings.Contains(line, "level=ERROR") && strings.Contains(line, "refuses") {
			out = append(out, line)
		}
	}
	return out
}

// A replica whose peers refuse it is told why: its dials are counted as
// refused by peer and reason, and it logs one error, at once, naming the
// peer and what to check; the refusals that follow within a minute are
// counted, not logged. Nothing reaches either handler.
func TestTCPRefusedDialerSaysWhy(t *testing.T) {
	for _, tc := range []struct {
		name string
		// refuser is replica 1 at addr; dialer is replica 2, which dials
		// peer dialed at that address.
		refuserCluster, dialerCluster uint64
		refuserPeers                  func(dialerAddr string) map[wire.ReplicaID]string
		dialed                        wire.ReplicaID
		reason                        string
		want                          func(addr string) string
	}{
		{name: "foreign cluster", refuserCluster: 7, dialerCluster: 1,
			refuserPeers: func(d string) map[wire.ReplicaID]string { return map[wire.ReplicaID]string{2: d} },
			dialed:       1, reason: ReasonForeignCluster,
			want: func(a string) string {
				return fmt.Sprintf("peer 1 at %s refuses our cluster ID 1: it is of cluster 7 (check -cluster-id)", a)
			}},
		{name: "unknown replica", refuserCluster: 1, dialerCluster: 1,
			refuserPeers: func(string) map[wire.ReplicaID]string { return map[wire.ReplicaID]string{3: deadAddr(t)} },
			dialed:       1, reason: ReasonUnknownPeer,
			want: func(a string) string {
				return fmt.Sprintf("peer 1 at %s refuses us: it (replica 1 of cluster 1) does not know replica 2 (check -peers)", a)
			}},
		{name: "wrong replica", refuserCluster: 1, dialerCluster: 1,
			refuserPeers: func(d string) map[wire.ReplicaID]string { return map[wire.ReplicaID]string{2: d} },
			dialed:       3, reason: ReasonWrongReplica,
			want: func(a string) string {
				return fmt.Sprintf("peer 3 at %s refuses us: the replica there is 1, not 3 (check -peers)", a)
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkNoLeak(t)
			lnR, lnD := listen(t), listen(t)
			addrR := lnR.Addr().String()
			logsR, logsD := &logBuf{}, &logBuf{}
			colR, colD := &collector{}, &collector{}
			cfgR := testConfig(1, lnR, tc.refuserPeers(lnD.Addr().String()), logsR)
			cfgR.ClusterID = tc.refuserCluster
			r, err := NewTCP(cfgR, colR.Handle)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { r.Close() })
			cfgD := testConfig(2, lnD, map[wire.ReplicaID]string{tc.dialed: addrR}, logsD)
			cfgD.ClusterID = tc.dialerCluster
			d, err := NewTCP(cfgD, colD.Handle)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { d.Close() })
			d.Send([]wire.Message{testMsg(2, tc.dialed, 0)})

			key := PeerReason{Peer: tc.dialed, Reason: tc.reason}
			waitFor(t, "three refused dials", func() bool { return d.Stats().HandshakesRefused[key] >= 3 })
			s := d.Stats()
			if len(s.HandshakesRefused) != 1 || s.DialFailures < s.HandshakesRefused[key] || s.Connects != 0 {
				t.Fatalf("dialer's stats %+v", s)
			}
			lines := refusalLines(logsD)
			if len(lines) != 1 {
				t.Fatalf("%d refusals logged %d error lines, want 1 (at most one a minute):\n%s",
					s.HandshakesRefused[key], len(lines), logsD)
			}
			want := tc.want(addrR)
			for _, sub := range []string{want, "reason=" + tc.reason, "refusals=1", fmt.Sprintf("peer=%d", tc.dialed)} {
				if !strings.Contains(lines[0], sub) {
					t.Errorf("the error line lacks %q:\n%s", sub, lines[0])
				}
			}
			// The refusing side logs and counts as before.
			if n := r.Stats().Closed[tc.reason]; n < 3 {
				t.Errorf("the refusing side counted %d closes for %s:\n%s", n, tc.reason, logsR)
			}
			if colR.Count() != 0 || colD.Count() != 0 {
				t.Fatal("a refused replica's message reached a handler")
			}

			// The counter is exported for vestad.
			reg := prometheus.NewRegistry()
			reg.MustRegister(NewCollector(d))
			if got := refusedSeries(t, reg, tc.dialed, tc.reason); got < 3 {
				t.Fatalf("vesta_transport_handshake_refused_total{peer=%d,reason=%s} = %v, want >= 3", tc.dialed, tc.reason, got)
			}
		})
	}
}

func deadAddr(t *testing.T) string {
	ln := listen(t)
	a := ln.Addr().String()
	ln.Close()
	return a
}

func refusedSeries(t *testing.T, reg *prometheus.Registry, peer wire.ReplicaID, reason string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "vesta_transport_handshake_refused_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["peer"] == fmt.Sprint(peer) && labels["reason"] == reason {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// Once the refusing side is fixed, the dialer connects; a refusal after that
// starts a new outage and is logged at once, not a minute after the last.
func TestTCPRefusalEndsWhenThePeerAccepts(t *testing.T) {
	checkNoLeak(t)
	lnR, lnD := listen(t), listen(t)
	addrR, addrD := lnR.Addr().String(), lnD.Addr().String()
	logsD := &logBuf{}
	colD, colR := &collector{}, &collector{}
	// startR starts replica 1 at addrR, of cluster.
	startR := func(ln net.Listener, cluster uint64) *TCP {
		if ln == nil {
			var err error
			if ln, err = net.Listen("tcp", addrR); err != nil {
				t.Fatal(err)
			}
		}
		cfg := testConfig(1, ln, map[wire.ReplicaID]string{2: addrD}, &logBuf{})
		cfg.ClusterID = cluster
		r, err := NewTCP(cfg, colR.Handle)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		return r
	}
	r := startR(lnR, testCluster+1)
	d, err := NewTCP(testConfig(2, lnD, map[wire.ReplicaID]string{1: addrR}, logsD), colD.Handle)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	key := PeerReason{Peer: 1, Reason: ReasonForeignCluster}
	waitFor(t, "a refused dial", func() bool { return d.Stats().HandshakesRefused[key] >= 1 })
	r.Close()

	r = startR(nil, testCluster) // restarted with the right cluster ID
	waitFor(t, "the dialer to connect", func() bool { return d.Stats().Connects >= 1 })
	d.Send([]wire.Message{testMsg(2, 1, 0)})
	waitFor(t, "a message through", func() bool { return colR.Count() == 1 })
	r.Close()

	startR(nil, testCluster+1) // and wrong again
	// The outbound side learns of the close from a write; keep writing.
	waitFor(t, "a second error line", func() bool {
		d.Send([]wire.Message{testMsg(2, 1, 1)})
		return len(refusalLines(logsD)) == 2
	})
}

func TestRefusalLogLimitsTheRate(t *testing.T) {
	t0 := time.Unix(1000, 0)
	foreign := &Refusal{Reason: ReasonForeignCluster, Replica: 1, Cluster: 7}
	other := &Refusal{Reason: ReasonForeignCluster, Replica: 1, Cluster: 8}
	var l RefusalLog
	for _, step := range []struct {
		at   time.Duration
		r    *Refusal
		log  bool
		want int
	}{
		{0, foreign, true, 1},                           // the first, at once
		{2 * time.Second, foreign, false, 0},            // the same within a minute: counted only
		{30 * time.Second, foreign, false, 0},           //
		{RefusalLogEvery, foreign, true, 3},             // a minute on: logged, with the count
		{RefusalLogEvery + time.Second, other, true, 1}, // another cluster: at once
		{RefusalLogEvery + 2*time.Second, other, false, 0},
	} {
		ok, n := l.Note(t0.Add(step.at), step.r)
		if ok != step.log || n != step.want {
			t.Fatalf("at %v: note = %v, %d; want %v, %d", step.at, ok, n, step.log, step.want)
		}
	}
	l.Reset()
	if ok, n := l.Note(t0.Add(RefusalLogEvery+3*time.Second), other); !ok || n != 1 {
		t.Fatalf("after reset: note = %v, %d; want true, 1", ok, n)
	}
}

// A dialer that predates refusals reads exactly an ack's size: a refusal
// fails its checks (it never mistakes one for an ack), so it fails the dial
// as it did when the connection just closed.
func TestRefusalIsNoAckToAnOldDialer(t *testing.T) {
	tr := &TCP{cfg: TCPConfig{ID: 1, ClusterID: 7}}
	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()
	codec := wire.Codec{ClusterID: 1}
	go tr.refuse(c1, codec, 2, RefuseForeignCluster)
	var b [helloFrame]byte
	if _, err := io.ReadFull(c2, b[:]); err != nil {
		t.Fatal(err)
	}
	if _, _, err := codec.OpenFrame(b[:]); err == nil {
		t.Fatal("the first ack-sized bytes of a refusal open as a frame")
	}
}
