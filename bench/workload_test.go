package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// fakeTarget completes each operation after delay, from a goroutine of its
// own; one in every failEvery operations fails.
type fakeTarget struct {
	delay     time.Duration
	failEvery int
	mu        sync.Mutex
	n         int
	writes    int
	keys      map[string]bool
}

func (f *fakeTarget) Submit(op Op, done func(error)) {
	f.mu.Lock()
	f.n++
	n := f.n
	if op.Write {
		f.writes++
	}
	if f.keys != nil {
		f.keys[string(op.Key)] = true
	}
	f.mu.Unlock()
	go func() {
		time.Sleep(f.delay)
		if f.failEvery > 0 && n%f.failEvery == 0 {
			done(errors.New("injected"))
			return
		}
		done(nil)
	}()
}

func TestClosedLoopMeasuresAfterWarmup(t *testing.T) {
	ft := &fakeTarget{delay: 200 * time.Microsecond, keys: map[string]bool{}}
	res, err := Run(context.Background(), ft, Workload{Clients: 2, Inflight: 4, Size: 16, ReadRatio: 0.5, Keys: 10,
		Duration: 1500 * time.Millisecond, Warmup: 500 * time.Millisecond, Seed: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Ops == 0 || res.Ops >= uint64(ft.n) {
		t.Fatalf("ops in window %d, submitted %d: warm-up not excluded", res.Ops, ft.n)
	}
	if p50 := res.Latency.Quantile(0.5); p50 < 200*time.Microsecond {
		t.Fatalf("p50 %v below the target's delay", p50)
	}
	if len(ft.keys) > 10 || ft.writes == 0 || ft.writes == ft.n {
		t.Fatalf("keys %d, writes %d of %d", len(ft.keys), ft.writes, ft.n)
	}
	if len(res.Series) < 1 {
		t.Fatal("no per-second series")
	}
}

// An open-loop run counts latency from each operation's intended send time:
// a target slower than the offered rate shows its queueing.
func TestOpenLoopLatencyIncludesQueueing(t *testing.T) {
	// A target that serializes: one operation at a time, 2ms each, offered
	// 1000 ops/s: the backlog grows and latency with it.
	var mu sync.Mutex
	slow := targetFunc(func(op Op, done func(error)) {
		go func() {
			mu.Lock()
			time.Sleep(2 * time.Millisecond)
			mu.Unlock()
			done(nil)
		}()
	})
	res, err := Run(context.Background(), slow, Workload{Rate: 1000, Size: 8, Keys: 1, Duration: time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p99 := res.Latency.Quantile(0.99); p99 < 50*time.Millisecond {
		t.Fatalf("p99 %v: queueing hidden (coordinated omission)", p99)
	}
}

type targetFunc func(Op, func(error))

func (f targetFunc) Submit(op Op, done func(error)) { f(op, done) }

func TestErrorsAreCountedAndReported(t *testing.T) {
	ft := &fakeTarget{delay: 100 * time.Microsecond, failEvery: 5}
	res, err := Run(context.Background(), ft, Workload{Clients: 1, Inflight: 2, Keys: 3, Duration: 300 * time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors == 0 || res.FirstError != "injected" {
		t.Fatalf("errors %d first %q", res.Errors, res.FirstError)
	}
}

func TestReportJSONAndPlot(t *testing.T) {
	ft := &fakeTarget{delay: 50 * time.Microsecond}
	var progress bytes.Buffer
	res, err := Run(context.Background(), ft, Workload{Clients: 1, Inflight: 8, Keys: 3, Duration: 1200 * time.Millisecond}, &progress)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(progress.Bytes(), []byte("ops/s")) {
		t.Fatalf("no progress line: %q", progress.String())
	}
	cond := MachineConditions()
	cond.Duration, cond.Warmup, cond.Replicas, cond.Mode = "1.2s", "0s", 3, "inproc"
	rep := NewReport(res, cond)
	var buf bytes.Buffer
	if err := rep.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	lat, _ := m["latency_us"].(map[string]any)
	for _, k := range []string{"p50", "p99", "p999"} {
		if _, ok := lat[k]; !ok {
			t.Fatalf("latency_us.%s missing: %s", k, buf.String())
		}
	}
	if m["ops_per_sec"].(float64) <= 0 || m["conditions"].(map[string]any)["cpu"] == "" {
		t.Fatalf("json: %s", buf.String())
	}
	var table bytes.Buffer
	if err := rep.WriteTable(&table); err != nil || !bytes.Contains(table.Bytes(), []byte("conditions")) {
		t.Fatalf("table: %v %s", err, table.String())
	}
	png := filepath.Join(t.TempDir(), "r.png")
	if err := WritePlot(png, rep, res.Latency); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(png); err != nil || st.Size() < 1000 {
		t.Fatalf("plot: %v", err)
	}
}

func TestWorkloadValidateNamesTheProblem(t *testing.T) {
	bad := []Workload{
		{Clients: 0, Inflight: 1, Keys: 1, Duration: time.Second},
		{Clients: 1, Inflight: 1, Keys: 0, Duration: time.Second},
		{Clients: 1, Inflight: 1, Keys: 1, Duration: 0},
		{Clients: 1, Inflight: 1, Keys: 1, Duration: time.Second, ReadRatio: 2},
		{Clients: 1, Inflight: 1, Keys: 1, Duration: time.Second, Zipf: 0.5},
	}
	for _, w := range bad {
		if err := w.Validate(); err == nil {
			t.Errorf("%+v accepted", w)
		}
	}
}

// A run its caller stops early says so, and its rate is over the part of the
// measurement window it covered, not the whole.
func TestInterruptedRunReportsThePartItMeasured(t *testing.T) {
	ft := &fakeTarget{delay: 100 * time.Microsecond}
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel()
	w := Workload{Clients: 1, Inflight: 4, Size: 16, Keys: 10, Duration: 10 * time.Second, Warmup: 200 * time.Millisecond, Seed: 1}
	res, err := Run(ctx, ft, w, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Interrupted {
		t.Fatal("a run whose context ended early is not marked interrupted")
	}
	if res.Elapsed < 300*time.Millisecond || res.Elapsed > 2*time.Second {
		t.Fatalf("measured %v of the window; the run measured about 500 ms", res.Elapsed)
	}
	if want := float64(res.Ops) / res.Elapsed.Seconds(); res.Ops == 0 || res.OpsPerSec != want {
		t.Fatalf("%d ops over %v gave %.0f ops/s, want %.0f", res.Ops, res.Elapsed, res.OpsPerSec, want)
	}
	var out bytes.Buffer
	if err := NewReport(res, Conditions{Duration: w.Duration.String()}).WriteTable(&out); err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(out.Bytes(), []byte("INTERRUPTED")) {
		t.Fatalf("the table does not say the run was interrupted:\n%s", out.String())
	}

	// Stopped during warm-up: nothing measured, no rate.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel2()
	res, err = Run(ctx2, ft, w, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Interrupted || res.Elapsed != 0 || res.Ops != 0 || res.OpsPerSec != 0 {
		t.Fatalf("stopped in warm-up: interrupted %v, measured %v, %d ops, %.0f ops/s; want true, 0, 0, 0",
			res.Interrupted, res.Elapsed, res.Ops, res.OpsPerSec)
	}
}
