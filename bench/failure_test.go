package bench

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// stallingTarget serves until stop is set, then never completes anything:
// a cluster whose replicas stopped (issue 12, item 6).
type stallingTarget struct {
	stop atomic.Bool
}

func (s *stallingTarget) Submit(op Op, done func(error)) {
	if s.stop.Load() {
		return // never answered
	}
	go func() { time.Sleep(100 * time.Microsecond); done(nil) }()
}

// A cluster that stops serving fails the run: it used to report 0 ops/s for
// the rest of the run with "errors 0", as if that were a figure.
func TestStalledRunFails(t *testing.T) {
	st := &stallingTarget{}
	time.AfterFunc(600*time.Millisecond, func() { st.stop.Store(true) })
	w := Workload{Clients: 1, Inflight: 4, Size: 16, Keys: 10, Duration: 30 * time.Second, Warmup: 100 * time.Millisecond,
		Seed: 1, StallAfter: 2 * time.Second}
	t0 := time.Now()
	res, err := Run(context.Background(), st, w, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Stalled || !strings.Contains(res.Failure, "stopped serving") {
		t.Fatalf("stalled %v, failure %q", res.Stalled, res.Failure)
	}
	if d := time.Since(t0); d > 10*time.Second {
		t.Fatalf("the run took %v to notice the stall", d)
	}
	if res.Elapsed > 5*time.Second || res.Ops == 0 {
		t.Fatalf("measured %d ops over %v: the window must end at the stall", res.Ops, res.Elapsed)
	}
	var out bytes.Buffer
	if err := NewReport(res, Conditions{Duration: w.Duration.String()}).WriteTable(&out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "FAILED: no operation succeeded") {
		t.Fatalf("the table does not say the run failed:\n%s", out.String())
	}
}

// A caller that cancels the run with a cause (a replica exited) gets the
// cause as the run's failure.
func TestCancelCauseIsTheFailure(t *testing.T) {
	ft := &fakeTarget{delay: 100 * time.Microsecond}
	ctx, cancel := context.WithCancelCause(context.Background())
	time.AfterFunc(300*time.Millisecond, func() { cancel(errors.New("vestad 2 exited: exit status 1")) })
	res, err := Run(ctx, ft, Workload{Clients: 1, Inflight: 2, Keys: 10, Duration: 10 * time.Second, Seed: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Failure != "vestad 2 exited: exit status 1" {
		t.Fatalf("failure %q", res.Failure)
	}
	if rep := NewReport(res, Conditions{}); rep.Interrupted || rep.Failure == "" {
		t.Fatalf("report: interrupted %v, failure %q", rep.Interrupted, rep.Failure)
	}
}
