package engine

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vestalabs/vesta/engine/storage"
	"github.com/vestalabs/vesta/engine/transport"
	"github.com/vestalabs/vesta/engine/wire"
)

var errDiskGone = errors.New("sync: input/output error")

// flakyLog is a cheap-sync log (persisted inline by the core loop) whose
// failAt-th Sync fails and every later one succeeds: what a retry after a
// failed persist would exploit.
type flakyLog struct {
	storage.MemLog
	syncs    atomic.Int64
	failAt   int64
	failedAt atomic.Pointer[time.Time]
}

func (l *flakyLog) Sync() error {
	if l.syncs.Add(1) == l.failAt {
		now := time.Now()
		l.failedAt.Store(&now)
		return errDiskGone
	}
	return nil
}

// recordingTransport remembers which messages left after the log failed.
type recordingTransport struct {
	transport.Transport
	log *flakyLog
	mu  sync.Mutex
	bad []wire.Message // votes and promises sent after the failed sync
}

func (t *recordingTransport) Send(msgs []wire.Message) {
	if t.log.failedAt.Load() != nil {
		t.mu.Lock()
		for _, m := range msgs {
			switch m.Type {
			case wire.MsgAccepted, wire.MsgPromise, wire.MsgNack:
				t.bad = append(t.bad, m)
			}
		}
		t.mu.Unlock()
	}
	t.Transport.Send(msgs)
}

// A failed append or sync stops the core loop before anything else leaves
// it (issue 12, item 2). Before, the next loop iteration persisted the same
// Readys again and, that succeeding, sent the votes they carried (whether it
// got that iteration was a race with the asynchronous Stop, hence several
// rounds); now the replica fails at once, says so, and sends nothing that
// reveals a vote.
func TestFailedPersistIsNeverRetried(t *testing.T) {
	for round := range 10 {
		failedPersistRound(t, int64(10+7*round))
	}
}

func failedPersistRound(t *testing.T, failAt int64) {
	t.Helper()
	net := transport.NewNetwork()
	members := []wire.ReplicaID{1, 2, 3}
	flaky := &flakyLog{failAt: failAt}
	var rec *recordingTransport
	var replicas []*Replica
	for _, id := range members {
		var log storage.Log = storage.NewMemLog()
		if id == 3 {
			log = flaky
		}
		r, err := Start(Config{ID: id, Members: members, Log: log,
			Transport: func(h transport.Handler) (transport.Transport, error) {
				tr, err := net.Join(id, h, transport.MemConfig{})
				if id == 3 {
					rec = &recordingTransport{Transport: tr, log: flaky}
					return rec, err
				}
				return tr, err
			},
			TickInterval: 2 * time.Millisecond, ElectionTicks: 15, HeartbeatTicks: 2,
		}, &counterSM{})
		if err != nil {
			t.Fatal(err)
		}
		replicas = append(replicas, r)
		defer r.Stop()
	}
	// Load the cluster, through whichever replica leads, until replica
	// 3's log fails, and a little longer.
	load := func(rounds int) {
		for range rounds {
			for _, r := range replicas {
				r.ProposeAsync([]byte("x"), func([]byte, error) {})
			}
			time.Sleep(time.Millisecond)
		}
	}
	for deadline := time.Now().Add(10 * time.Second); flaky.failedAt.Load() == nil && time.Now().Before(deadline); {
		load(1)
	}
	if flaky.failedAt.Load() == nil {
		t.Fatal("replica 3's log never failed")
	}
	r3 := replicas[2]
	// It says so at once, not when the stop is over.
	st := r3.Status()
	if st.Role != "failed" || !st.Failed || !strings.Contains(st.Err, errDiskGone.Error()) || st.Leader != 0 {
		t.Fatalf("status right after the failure: %+v", st)
	}
	load(20)
	select {
	case <-r3.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done not closed after the failure")
	}
	var fe *FailedError
	if err := r3.Err(); !errors.As(err, &fe) || !errors.Is(err, errDiskGone) || !errors.Is(err, ErrStopped) {
		t.Fatalf("Err: %v", err)
	}
	if _, err := r3.Propose(context.Background(), []byte("y")); !errors.Is(err, errDiskGone) || !errors.Is(err, ErrStopped) {
		t.Fatalf("Propose on a failed replica: %v", err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.bad) > 0 {
		t.Fatalf("replica 3 sent %d votes or promises after its sync failed, first %v", len(rec.bad), rec.bad[0])
	}
	if n := flaky.syncs.Load(); n != flaky.failAt {
		t.Fatalf("the log was synced %d times; the failed sync (number %d) must be the last", n, flaky.failAt)
	}
}

// slowSM's Apply of "slow" takes 1.5 s.
type slowSM struct{ counterSM }

func (s *slowSM) Apply(slot wire.Slot, cmds [][]byte, results [][]byte) {
	for _, c := range cmds {
		if string(c) == "slow" {
			time.Sleep(1500 * time.Millisecond)
		}
	}
	s.counterSM.Apply(slot, cmds, results)
}

// A slow Apply costs its commands' latency, never leadership (issue 12,
// item 8): the core loop, which ticks and sends heartbeats, never waits for
// the state machine. Before, one 1.5 s Apply applied inline by the core
// loop let the others elect a new leader.
func TestSlowApplyKeepsLeadership(t *testing.T) {
	net := transport.NewNetwork()
	members := []wire.ReplicaID{1, 2, 3}
	replicas := map[wire.ReplicaID]*Replica{}
	reg := prometheus.NewRegistry()
	for _, id := range members {
		r, err := Start(Config{ID: id, Members: members, Log: storage.NewMemLog(),
			Transport: func(h transport.Handler) (transport.Transport, error) {
				return net.Join(id, h, transport.MemConfig{})
			},
			TickInterval: 10 * time.Millisecond, ElectionTicks: 10, HeartbeatTicks: 2, Registerer: reg,
		}, &slowSM{})
		if err != nil {
			t.Fatal(err)
		}
		replicas[id] = r
		defer r.Stop()
	}
	var leader *Replica
	for deadline := time.Now().Add(10 * time.Second); leader == nil && time.Now().Before(deadline); {
		for _, r := range replicas {
			if r.Status().Role == "leader" {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				if _, err := r.Propose(ctx, []byte("probe")); err == nil {
					leader = r
				}
				cancel()
				break
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	if leader == nil {
		t.Fatal("no leader")
	}
	before := leader.Status()
	done := make(chan error, 1)
	go func() {
		_, err := leader.Propose(context.Background(), []byte("slow"))
		done <- err
	}()
	// 1.5 s is 150 ticks, 7 to 15 election timeouts.
	for t0 := time.Now(); time.Since(t0) < 1400*time.Millisecond; time.Sleep(20 * time.Millisecond) {
		for id, r := range replicas {
			st := r.Status()
			if st.Leader != before.ID || (r == leader && st.Ballot != before.Ballot) {
				t.Fatalf("leadership changed during a slow Apply: replica %d sees %+v (before: leader %d in %s)", id, st, before.ID, before.Ballot)
			}
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := seriesValue(t, reg, "vesta_slow_applies_total", before.ID); n < 1 {
		t.Fatalf("vesta_slow_applies_total %v", n)
	}
}

// Replicas share a Prometheus registry (labelled by cluster and replica), and
// one restarted in the same process registers again (issue 12, item 7).
// Before, the second Start panicked inside MustRegister.
func TestReplicasShareARegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	net := transport.NewNetwork()
	start := func(cluster uint64, id wire.ReplicaID) (*Replica, error) {
		return Start(Config{ClusterID: cluster, ID: id, Members: []wire.ReplicaID{1, 2}, Log: storage.NewMemLog(),
			Transport: func(h transport.Handler) (transport.Transport, error) {
				return net.Join(wire.ReplicaID(cluster*10)+id, h, transport.MemConfig{})
			},
			Registerer: reg,
		}, &counterSM{})
	}
	a, err := start(1, 1)
	if err != nil {
		t.Fatal(err)
	}
	b, err := start(1, 2)
	if err != nil {
		t.Fatal(err)
	}
	c, err := start(2, 1) // another cluster's replica 1
	if err != nil {
		t.Fatal(err)
	}
	if _, err := start(1, 1); err == nil || !strings.Contains(err.Error(), "already registered") {
		t.Fatalf("a second replica 1 of cluster 1 on one registry: %v", err)
	}
	if n := seriesCount(t, reg, "vesta_commit_index"); n != 3 {
		t.Fatalf("%d vesta_commit_index series, want 3 (one per replica)", n)
	}
	a.Stop()
	if n := seriesCount(t, reg, "vesta_commit_index"); n != 2 {
		t.Fatalf("%d series after Stop, want 2", n)
	}
	a2, err := start(1, 1) // restarted in the same process
	if err != nil {
		t.Fatalf("restart on the same registry: %v", err)
	}
	for _, r := range []*Replica{a2, b, c} {
		r.Stop()
	}
}

// seriesCount is how many series of the metric the registry gathers.
func seriesCount(t *testing.T, reg *prometheus.Registry, name string) int {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return len(mf.GetMetric())
		}
	}
	return 0
}

// seriesValue is the counter's value for replica id.
func seriesValue(t *testing.T, reg *prometheus.Registry, name string, id wire.ReplicaID) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "replica" && lp.GetValue() == strconv.FormatUint(uint64(id), 10) {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
