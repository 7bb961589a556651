package client

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/vestalabs/vesta/tools/vestad/kv"
)

// A leader that goes silent after applying a write (paused before it
// answered) while another is elected: the client asks the others who leads
// after the hedge delay and moves the write there, long before the attempt
// timeout; the moved write carries its session and sequence number, so the
// store, reached twice, applies it once and the retry gets its result.
func TestSilentLeaderHedgesToNewLeader(t *testing.T) {
	fc := newFakeCluster(t, 3, kv.Options{})
	const attempt = 10 * time.Second
	c, err := New(fc.addrs(), Options{AttemptTimeout: attempt, BackoffMin: time.Millisecond, BackoffMax: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := ctxT(t)
	if ok, err := c.CAS(ctx, []byte("n"), nil, []byte("1")); err != nil || !ok {
		t.Fatalf("first increment: %v %v", ok, err)
	}
	// Server 2 (the leader) applies and goes silent; server 0 is elected.
	fc.mu.Lock()
	fc.mute, fc.muteApplies = 2, true
	fc.mu.Unlock()
	fc.setLeader(0)
	start := time.Now()
	ok, err := c.CAS(ctx, []byte("n"), []byte("1"), []byte("2"))
	took := time.Since(start)
	if err != nil || !ok {
		t.Fatalf("increment across the failover: swapped=%v err=%v (a retried write must get its first result)", ok, err)
	}
	if took > attempt/4 {
		t.Fatalf("the increment took %v: the client waited for the attempt timeout (%v) instead of finding the new leader", took, attempt)
	}
	if v, _, err := c.Get(ctx, []byte("n")); err != nil || string(v) != "2" {
		t.Fatalf("n = %q (%v), want 2: the write applied other than once", v, err)
	}
	fc.mu.Lock()
	twice := 0
	for _, n := range fc.applied {
		if n > 1 {
			twice++
		}
	}
	leaderAfter := *c.leader.Load()
	fc.mu.Unlock()
	if twice != 1 {
		t.Fatalf("%d writes reached the store twice, want 1 (the moved one)", twice)
	}
	if leaderAfter != fc.addrs()[0] {
		t.Fatalf("the client's leader is %s, want the new one %s", leaderAfter, fc.addrs()[0])
	}
	t.Logf("the write moved to the new leader after %v", took.Round(time.Millisecond))
}

// A leader that is silent while nobody else claims to lead keeps its
// requests: hedging asks, and moves nothing (no duplicate sends to
// followers), until the attempt timeout. The deadline's error names the
// silence.
func TestSilentLeaderWithNoRivalKeepsRequests(t *testing.T) {
	fc := newFakeCluster(t, 2, kv.Options{})
	c, err := New(fc.addrs(), Options{HedgeDelay: 20 * time.Millisecond, AttemptTimeout: 5 * time.Second, BackoffMin: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Put(ctxT(t), []byte("k"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	fc.mu.Lock()
	fc.hang = true // the leader reads writes and never answers; it still answers status
	before := fc.reqs[0]
	fc.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 400*time.Millisecond)
	defer cancel()
	err = c.Put(ctx, []byte("k"), []byte("w"))
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("write to a hung leader past its deadline: %v", err)
	}
	var ce *CallError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), fc.addrs()[1]+": no answer for") {
		t.Fatalf("the error does not name the silent leader: %v", err)
	}
	fc.mu.Lock()
	sent := fc.reqs[0] - before
	fc.mu.Unlock()
	if sent != 0 {
		t.Fatalf("the follower got %d requests while the leader was silent and nobody else led", sent)
	}
	t.Log(err)
}

// A call whose deadline passes while the servers fail fails with an error
// that matches the context's and names each server's last failure: a
// refused connection, and a failed replica's own words.
func TestDeadlineErrorNamesEachServer(t *testing.T) {
	fc := newFakeCluster(t, 2, kv.Options{})
	c := newTestClient(t, fc.addrs())
	if err := c.Put(ctxT(t), []byte("k"), []byte("v")); err != nil { // opens the session
		t.Fatal(err)
	}
	fc.stop(0)
	fc.mu.Lock()
	fc.refuse[1] = "replica failed: pmem: log full (the log needs a snapshot)"
	fc.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err := c.Put(ctx, []byte("k"), []byte("w"))
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("write past its deadline: %v", err)
	}
	msg := err.Error()
	for _, want := range []string{
		fc.addrs()[0] + ": connecting: connect: connection refused",
		fc.addrs()[1] + ": unavailable: replica failed: pmem: log full",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("the error does not say %q:\n%s", want, msg)
		}
	}
	_, _, err = c.Get(ctx, []byte("k"))
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrOutcomeUnknown) || !strings.Contains(err.Error(), "replica failed") {
		t.Fatalf("read past its deadline: %v", err)
	}
	t.Log(msg)
}

// A replica that failed answers with its cause and then exits: the error of
// a call that runs out of time afterwards names the refused connection and
// what the replica said before.
func TestFailedReplicaWordsOutliveIt(t *testing.T) {
	fc := newFakeCluster(t, 1, kv.Options{})
	c := newTestClient(t, fc.addrs())
	if err := c.Put(ctxT(t), []byte("k"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	fc.mu.Lock()
	fc.refuse[0] = "replica failed: sync: input/output error"
	fc.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := c.Put(ctx, []byte("k"), []byte("w")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("write to a failed replica: %v", err)
	}
	fc.stop(0) // the replica exits
	ctx, cancel = context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, _, err := c.Get(ctx, []byte("k"))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("read after the replica exited: %v", err)
	}
	msg := err.Error()
	if !strings.Contains(msg, "connection refused") || !strings.Contains(msg, "after it answered unavailable: replica failed: sync: input/output error") {
		t.Fatalf("the error does not name both the refused connection and the replica's failure:\n%s", msg)
	}
	t.Log(msg)
}

// CallTimeout bounds the calls that have no deadline: asynchronous ones,
// and blocking ones under a context without one. Their errors match
// ErrCallTimeout and context.DeadlineExceeded and name the cause.
func TestCallTimeout(t *testing.T) {
	fc := newFakeCluster(t, 2, kv.Options{})
	const bound = 300 * time.Millisecond
	c, err := New(fc.addrs(), Options{CallTimeout: bound, BackoffMin: time.Millisecond, BackoffMax: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Put(ctxT(t), []byte("k"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	fc.mu.Lock()
	fc.refuse[0] = "replica failed: pmem: log full"
	fc.refuse[1] = "replica failed: pmem: log full"
	fc.mu.Unlock()
	check := func(what string, err error, took time.Duration, unknown bool) {
		t.Helper()
		if !errors.Is(err, ErrCallTimeout) || !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrOutcomeUnknown) != unknown {
			t.Errorf("%s: %v", what, err)
			return
		}
		if !strings.Contains(err.Error(), "replica failed: pmem: log full") {
			t.Errorf("%s: the error does not name the cause: %v", what, err)
		}
		// The sweeper scans a quarter of the bound apart; 5 s is for a
		// loaded machine, far below "forever".
		// The deadline is set from the coarse clock, up to a tick early.
		if took < bound*3/4 || took > 5*time.Second {
			t.Errorf("%s: failed after %v, bound %v", what, took, bound)
		}
	}
	start := time.Now()
	errc := make(chan error, 2)
	c.PutAsync([]byte("k"), []byte("w"), func(err error) { errc <- err })
	c.GetAsync([]byte("k"), func(_ []byte, _ bool, err error) { errc <- err })
	for i := 0; i < 2; i++ {
		select {
		case err := <-errc:
			var ce *CallError
			if errors.As(err, &ce) && ce.Op == "put" {
				check("async put", err, time.Since(start), true)
			} else {
				check("async get", err, time.Since(start), false)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("an asynchronous call to a failed cluster did not end: CallTimeout is not enforced")
		}
	}
	start = time.Now()
	_, _, err = c.Get(context.Background(), []byte("k"))
	check("blocking get without a deadline", err, time.Since(start), false)
	t.Log(err)
}

// A new client whose every server refuses connections: the writes waiting
// for their session fail with the session's error, which names the cause
// and says nothing about an unknown outcome (nothing was sent).
func TestCallTimeoutOpeningSession(t *testing.T) {
	fc := newFakeCluster(t, 2, kv.Options{})
	fc.close()
	c, err := New(fc.addrs(), Options{CallTimeout: 200 * time.Millisecond, BackoffMin: time.Millisecond, BackoffMax: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	errc := make(chan error, 1)
	c.PutAsync([]byte("k"), []byte("v"), func(err error) { errc <- err })
	select {
	case err := <-errc:
		if !errors.Is(err, ErrCallTimeout) || errors.Is(err, ErrOutcomeUnknown) || !strings.Contains(err.Error(), "connection refused") {
			t.Fatalf("put with no server: %v", err)
		}
		t.Log(err)
	case <-time.After(10 * time.Second):
		t.Fatal("the put did not end")
	}
}

func TestHedgeDelayBounds(t *testing.T) {
	c := &Client{opts: Options{}}
	c.opts.setDefaults()
	c.sw = newSweepTiming(&c.opts)
	cn := &conn{}
	if d := time.Duration(c.hedgeDelayLocked(cn)); d != hedgeMin {
		t.Fatalf("no samples: %v, want %v", d, hedgeMin)
	}
	for i := 0; i < 50; i++ {
		c.sampleLocked(cn, int64(time.Millisecond))
	}
	if d := time.Duration(c.hedgeDelayLocked(cn)); d != hedgeMin {
		t.Fatalf("1 ms responses: %v, want the floor %v", d, hedgeMin)
	}
	for i := 0; i < 50; i++ {
		c.sampleLocked(cn, int64(80*time.Millisecond)+int64(i%2)*int64(40*time.Millisecond))
	}
	if d := time.Duration(c.hedgeDelayLocked(cn)); d < 100*time.Millisecond || d >= hedgeMax {
		t.Fatalf("80-120 ms responses: %v, want between 100 ms and %v", d, hedgeMax)
	}
	for i := 0; i < 50; i++ {
		c.sampleLocked(cn, int64(10*time.Second))
	}
	if d := time.Duration(c.hedgeDelayLocked(cn)); d != hedgeMax {
		t.Fatalf("10 s responses: %v, want the ceiling %v", d, hedgeMax)
	}
	c.opts.AttemptTimeout = 200 * time.Millisecond
	c.sw = newSweepTiming(&c.opts)
	if d := time.Duration(c.hedgeDelayLocked(cn)); d != 50*time.Millisecond {
		t.Fatalf("AttemptTimeout 200 ms: hedge %v, want AttemptTimeout/4", d)
	}
	c.opts.HedgeDelay = -1
	c.sw = newSweepTiming(&c.opts)
	if d := c.hedgeDelayLocked(cn); d != 0 {
		t.Fatalf("HedgeDelay off: %v", d)
	}
}

func TestBallotOrder(t *testing.T) {
	cases := []struct {
		a, b string
		less bool
	}{
		{"", "1.1", true}, {"1.1", "", false}, {"3.2", "3.3", true}, {"3.3", "4.1", true},
		{"10.1", "9.3", false}, {"2.2", "2.2", false}, {"x.1", "1.1", true}, {"chosen", "0.1", true},
	}
	for _, tc := range cases {
		if got := parseBallot(tc.a).less(parseBallot(tc.b)); got != tc.less {
			t.Errorf("%q < %q: %v, want %v", tc.a, tc.b, got, tc.less)
		}
	}
}
