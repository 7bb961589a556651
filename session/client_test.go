package session

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vestalabs/vesta/engine"
	"github.com/vestalabs/vesta/engine/storage"
	"github.com/vestalabs/vesta/engine/transport"
	"github.com/vestalabs/vesta/engine/wire"
)

// flaky applies commands to a wrapped machine, one slot each, and fails
// attempts as a replica losing its leadership would: lost, after applying
// (ErrOutcomeUnknown), or before (ErrNotLeader).
type flaky struct {
	mu    sync.Mutex
	sm    engine.StateMachine
	slot  wire.Slot
	n     int
	fail  func(n int) error // the error of attempt n, and whether it applies first
	after func(n int) bool
}

func (f *flaky) Propose(ctx context.Context, cmd []byte) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	err := f.fail(f.n)
	if err != nil && !f.after(f.n) {
		return nil, err
	}
	f.slot++
	res := applyOne(f.sm, f.slot, cmd)
	if err != nil {
		return nil, err
	}
	return res[0], nil
}

func TestClientRetriesSameSequence(t *testing.T) {
	inner := &listSM{}
	f := &flaky{sm: Wrap(inner, Options{}),
		fail: func(n int) error {
			switch n % 3 {
			case 2:
				return engine.ErrOutcomeUnknown // applied, the answer lost
			case 0:
				return &engine.NotLeaderError{}
			}
			return nil
		},
		after: func(n int) bool { return n%3 == 2 }}
	ctx := context.Background()
	c, err := Open(ctx, f)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		res, err := c.Propose(ctx, []byte(fmt.Sprint(i)))
		if err != nil || string(res) != fmt.Sprintf("%d:%d", i+1, i) {
			t.Fatalf("command %d: %q %v", i, res, err)
		}
	}
	if got := strings.Join(inner.list(), ","); got != "0,1,2,3,4,5,6,7,8,9" {
		t.Fatalf("applied %q", got)
	}
	// The low mark follows: the session keeps no result below the last.
	if in, _ := Unwrap(f.sm).t.Info(c.ID()); in.Low != 10 || in.Results != 1 {
		t.Fatalf("session %+v", in)
	}
}

func TestClientErrors(t *testing.T) {
	ctx := context.Background()
	sm := Wrap(&listSM{}, Options{MaxSessions: 1})
	always := func(err error) *flaky {
		return &flaky{sm: sm, fail: func(int) error { return err }, after: func(int) bool { return false }}
	}
	ok := always(nil)
	c, err := Open(ctx, ok)
	if err != nil {
		t.Fatal(err)
	}
	// A final error of the proposer is returned at once.
	c.p = always(engine.ErrTooLarge)
	if _, err := c.Propose(ctx, []byte("x")); !errors.Is(err, engine.ErrTooLarge) {
		t.Fatalf("too large: %v", err)
	}
	// A context that ends while the leader is away: outcome unknown.
	c.p = always(engine.ErrOutcomeUnknown)
	tctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if _, err := c.Propose(tctx, []byte("x")); !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, engine.ErrOutcomeUnknown) {
		t.Fatalf("deadline: %v", err)
	}
	// Evicted by a newer session: expired, and stays so.
	c.p = ok
	if _, err := Open(ctx, ok); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := c.Propose(ctx, []byte("x")); !errors.Is(err, ErrExpired) || !strings.Contains(err.Error(), "open a new session") {
			t.Fatalf("expired: %v", err)
		}
	}
}

// TestClientConcurrent: commands in flight at once from many goroutines,
// each attempt possibly lost, apply once each.
func TestClientConcurrent(t *testing.T) {
	inner := &listSM{}
	var k atomic.Int64
	f := &flaky{sm: Wrap(inner, Options{}),
		fail: func(int) error {
			if k.Add(1)%4 == 0 {
				return engine.ErrOutcomeUnknown
			}
			return nil
		},
		after: func(n int) bool { return n%2 == 0 }}
	c, err := Open(context.Background(), f)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				if _, err := c.Propose(context.Background(), []byte(fmt.Sprintf("%d-%d", g, i))); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	got := inner.list()
	sort.Strings(got)
	if len(got) != 400 {
		t.Fatalf("%d applied, want 400", len(got))
	}
	for i := 1; i < len(got); i++ {
		if got[i] == got[i-1] {
			t.Fatalf("%s applied twice", got[i])
		}
	}
	if c.low != 401 || len(c.done) != 0 {
		t.Fatalf("client low %d, %d done above", c.low, len(c.done))
	}
}

// partitionable wraps a replica's transport so a test can cut its links.
type partitionable struct {
	transport.Transport
	in, out *atomic.Bool // true: drop what arrives, what leaves
}

func (p partitionable) Send(msgs []wire.Message) {
	if !p.out.Load() {
		p.Transport.Send(msgs)
	}
}

// TestClientExactlyOnceOnCluster runs a Client against a real 3-replica
// cluster and makes the leader lose its leadership while commands are in
// flight, twice: first its acknowledgements are cut (its accepts still
// reach the others, so commands may be chosen without it knowing), then
// all its links, until another replica leads; then the links heal and the
// old leader steps down, failing its pending commands with
// ErrOutcomeUnknown. Every command is applied exactly once on every
// replica.
func TestClientExactlyOnceOnCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: runs a 3-replica in-process cluster under load for a few seconds; make test runs it")
	}
	net := transport.NewNetwork()
	members := []wire.ReplicaID{1, 2, 3}
	replicas := map[wire.ReplicaID]*engine.Replica{}
	inners := map[wire.ReplicaID]*listSM{}
	cut := map[wire.ReplicaID][2]*atomic.Bool{}
	for _, id := range members {
		in, out := &atomic.Bool{}, &atomic.Bool{}
		cut[id] = [2]*atomic.Bool{in, out}
		inner := &listSM{}
		cfg := engine.Config{
			ID: id, Members: members, Log: storage.NewMemLog(),
			Transport: func(h transport.Handler) (transport.Transport, error) {
				m, err := net.Join(id, func(b []wire.Message) {
					if !in.Load() {
						h(b)
					}
				}, transport.MemConfig{})
				if err != nil {
					return nil, err
				}
				return partitionable{m, in, out}, nil
			},
			TickInterval: 2 * time.Millisecond, ElectionTicks: 15, HeartbeatTicks: 2,
		}
		r, err := engine.Start(cfg, Wrap(inner, Options{}))
		if err != nil {
			t.Fatal(err)
		}
		replicas[id], inners[id] = r, inner
	}
	t.Cleanup(func() {
		for _, r := range replicas {
			r.Stop()
		}
	})
	leader := func(not wire.ReplicaID) wire.ReplicaID {
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			for id, r := range replicas {
				if id != not && r.Leader() == id { // Leader, not Status: Status reads a MemLog's size racily
					return id
				}
			}
			time.Sleep(2 * time.Millisecond)
		}
		t.Fatal("no leader within 10s")
		return 0
	}
	var unknown atomic.Int64 // attempts that ended in ErrOutcomeUnknown
	var ps []Proposer
	for _, id := range members {
		ps = append(ps, counting{replicas[id], &unknown})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	leader(0)
	c, err := Open(ctx, Failover(ps...))
	if err != nil {
		t.Fatal(err)
	}

	const writers, each = 4, 40
	var wg sync.WaitGroup
	var progress atomic.Int64
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				cmd := []byte(fmt.Sprintf("w%d-%03d", g, i))
				if _, err := c.Propose(ctx, cmd); err != nil {
					t.Errorf("%s: %v", cmd, err)
					return
				}
				progress.Add(1)
			}
		}()
	}
	for round := range 2 {
		for progress.Load() < int64((round+1)*writers*each/4) {
			time.Sleep(time.Millisecond)
		}
		old := leader(0)
		cut[old][0].Store(true) // its acknowledgements are lost
		time.Sleep(5 * time.Millisecond)
		cut[old][1].Store(true) // and then everything
		leader(old)
		cut[old][0].Store(false)
		cut[old][1].Store(false)
	}
	wg.Wait()
	t.Logf("%d attempts ended in ErrOutcomeUnknown", unknown.Load())

	want := writers * each
	deadline := time.Now().Add(20 * time.Second)
	for {
		done := true
		for id, inner := range inners {
			got := inner.list()
			seen := map[string]int{}
			for _, g := range got {
				seen[g]++
				if seen[g] > 1 {
					t.Fatalf("replica %d applied %s twice", id, g)
				}
			}
			if len(got) < want {
				done = false
			}
			if len(got) > want {
				t.Fatalf("replica %d applied %d commands, want %d", id, len(got), want)
			}
		}
		if done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("replicas did not converge")
		}
		time.Sleep(10 * time.Millisecond)
	}
	for id, inner := range inners {
		if strings.Join(inner.list(), ",") != strings.Join(inners[1].list(), ",") {
			t.Fatalf("replica %d applied another sequence", id)
		}
	}
}

// counting counts the attempts that end in engine.ErrOutcomeUnknown.
type counting struct {
	p Proposer
	n *atomic.Int64
}

func (c counting) Propose(ctx context.Context, cmd []byte) ([]byte, error) {
	res, err := c.p.Propose(ctx, cmd)
	if errors.Is(err, engine.ErrOutcomeUnknown) {
		c.n.Add(1)
	}
	return res, err
}
