package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Op is one operation. Key and Value belong to the harness and stay valid
// until the operation's done callback runs.
type Op struct {
	Write bool
	Key   []byte
	Value []byte
}

// Target executes operations against the system under test.
type Target interface {
	// Submit starts op and returns without waiting for it; done is called
	// exactly once with its outcome, from any goroutine. Submit may call done
	// before returning only with an error.
	Submit(op Op, done func(err error))
}

// Workload describes the load. Rate > 0 makes it open loop (operations sent
// at that rate whatever the latency); otherwise it is closed loop: Clients
// clients each keep Inflight operations outstanding.
type Workload struct {
	Clients   int
	Inflight  int
	Rate      float64
	Size      int     // value size in bytes
	ReadRatio float64 // fraction of reads, 0..1
	Keys      int
	Zipf      float64 // key skew: 0 uniform, else a Zipf exponent > 1
	Duration  time.Duration
	Warmup    time.Duration
	Seed      uint64
	// MaxOutstanding bounds an open-loop run's operations in flight; past it
	// the run stops and says the system was overloaded (default 1<<20).
	MaxOutstanding int
	// StallAfter stops the run when no operation succeeded for this long
	// (default 5 s; negative: never): a cluster that stopped serving is a
	// failed run, not one of 0 ops/s.
	StallAfter time.Duration
}

// Validate names the first field that is wrong.
func (w Workload) Validate() error {
	switch {
	case w.Rate < 0:
		return fmt.Errorf("rate %v: must be >= 0", w.Rate)
	case w.Rate == 0 && (w.Clients < 1 || w.Inflight < 1):
		return fmt.Errorf("closed loop needs clients >= 1 and inflight >= 1 (have %d, %d)", w.Clients, w.Inflight)
	case w.Size < 0:
		return fmt.Errorf("size %d: must be >= 0", w.Size)
	case w.ReadRatio < 0 || w.ReadRatio > 1:
		return fmt.Errorf("read ratio %v: must be in [0,1]", w.ReadRatio)
	case w.Keys < 1:
		return fmt.Errorf("keys %d: must be >= 1", w.Keys)
	case w.Zipf != 0 && w.Zipf <= 1:
		return fmt.Errorf("zipf %v: must be 0 (uniform) or > 1", w.Zipf)
	case w.Duration <= 0:
		return fmt.Errorf("duration %v: must be > 0", w.Duration)
	case w.Warmup < 0:
		return fmt.Errorf("warmup %v: must be >= 0", w.Warmup)
	}
	return nil
}

// Result is what a run measured, over the measurement window (after warm-up).
type Result struct {
	Ops        uint64
	Errors     uint64
	FirstError string
	Elapsed    time.Duration
	OpsPerSec  float64
	Latency    *Histogram
	// Series is the operations completed in each second of the whole run,
	// warm-up included (WarmupSeconds of them).
	Series        []float64
	WarmupSeconds int
	Overloaded    bool
	// Interrupted: the caller's context ended the run early. Elapsed is
	// then the part of the measurement window the run covered (0 if it
	// ended during warm-up), and OpsPerSec is over that part.
	Interrupted bool
	// Stalled: no operation succeeded for Workload.StallAfter, and the run
	// stopped there (Elapsed as for Interrupted).
	Stalled bool
	// Failure is why the run failed: a stall, or the cause the caller's
	// context was cancelled with (context.Cause), such as a replica that
	// exited. Empty for a run that went as planned or was interrupted.
	Failure string
}

// run is the shared state of one workload run.
type run struct {
	w      Workload
	target Target
	hist   Histogram
	// base is the run's start. Operation times are nanoseconds since it,
	// read with time.Since: one monotonic clock read, where time.Now reads
	// the wall clock too (~10% of a loaded bench process's CPU here).
	base     time.Time
	measFrom atomic.Int64 // nanoseconds since base: measurement window
	measTo   atomic.Int64
	stopping atomic.Bool
	done     atomic.Uint64 // all completions, for the per-second series
	ops      atomic.Uint64 // completions in the window
	errs     atomic.Uint64
	okAll    atomic.Uint64 // successful completions, warm-up included: the stall detector
	firstErr atomic.Pointer[string]
	inflight sync.WaitGroup
	outstand atomic.Int64
}

// gen makes one client slot's operations: its own random stream, key and
// value buffers (no allocation per operation).
type gen struct {
	rng   *rand.Rand
	zipf  *rand.Zipf
	w     *Workload
	key   []byte
	value []byte
}

func newGen(w *Workload, seed uint64) *gen {
	g := &gen{rng: rand.New(rand.NewPCG(w.Seed, seed)), w: w, key: make([]byte, 0, 24), value: make([]byte, w.Size)}
	if w.Zipf > 1 {
		g.zipf = rand.NewZipf(g.rng, w.Zipf, 1, uint64(w.Keys-1))
	}
	for i := range g.value {
		g.value[i] = byte(g.rng.Uint32())
	}
	return g
}

func (g *gen) next() Op {
	var k uint64
	if g.zipf != nil {
		k = g.zipf.Uint64()
	} else {
		k = g.rng.Uint64N(uint64(g.w.Keys))
	}
	g.key = strconv.AppendUint(append(g.key[:0], 'k'), k, 10)
	if g.w.ReadRatio > 0 && g.rng.Float64() < g.w.ReadRatio {
		return Op{Key: g.key}
	}
	if len(g.value) > 0 {
		g.value[0]++ // values differ from one write to the next
	}
	return Op{Write: true, Key: g.key, Value: g.value}
}

// now is the time since the run's start.
func (r *run) now() int64 { return int64(time.Since(r.base)) }

// finish records one completed operation that was meant to start at t0 and
// completed at now (both from r.now).
func (r *run) finish(t0, now int64, err error) {
	r.done.Add(1)
	r.outstand.Add(-1)
	in := now >= r.measFrom.Load() && now < r.measTo.Load()
	if err != nil {
		r.errs.Add(1)
		s := err.Error()
		r.firstErr.CompareAndSwap(nil, &s)
		return
	}
	r.okAll.Add(1)
	if in {
		r.ops.Add(1)
		r.hist.Record(time.Duration(now - t0))
	}
}

// Run drives target with w, printing a progress line every second to
// progress (nil: silent), and returns what it measured after warm-up.
func Run(ctx context.Context, target Target, w Workload, progress io.Writer) (Result, error) {
	if err := w.Validate(); err != nil {
		return Result{}, err
	}
	if w.MaxOutstanding == 0 {
		w.MaxOutstanding = 1 << 20
	}
	if w.StallAfter == 0 {
		w.StallAfter = 5 * time.Second
	}
	start := time.Now()
	r := &run{w: w, target: target, base: start}
	r.measFrom.Store(int64(w.Warmup))
	r.measTo.Store(int64(w.Warmup + w.Duration))
	caller := ctx
	ctx, cancel := context.WithDeadline(ctx, start.Add(w.Warmup+w.Duration))
	defer cancel()

	if w.Rate > 0 {
		go r.openLoop(ctx, start)
	} else {
		for c := range w.Clients {
			for s := range w.Inflight {
				r.startSlot(newGen(&w, uint64(c*w.Inflight+s+1)))
			}
		}
	}
	res := Result{WarmupSeconds: int(w.Warmup / time.Second)}
	tick := time.NewTicker(time.Second)
	var last, lastOK uint64
	lastProgress := start
	for loop := true; loop; {
		select {
		case <-ctx.Done():
			loop = false
		case now := <-tick.C:
			d := r.done.Load()
			res.Series = append(res.Series, float64(d-last))
			last = d
			if progress != nil {
				phase := "warm-up"
				if int64(now.Sub(start)) >= r.measFrom.Load() {
					phase = "measuring"
				}
				fmt.Fprintf(progress, "%5.0fs %-9s %10.0f ops/s   p50 %8s   p99 %8s   errors %d\n",
					now.Sub(start).Seconds(), phase, res.Series[len(res.Series)-1],
					fmtDur(r.hist.Quantile(0.5)), fmtDur(r.hist.Quantile(0.99)), r.errs.Load())
			}
			if r.outstand.Load() > int64(w.MaxOutstanding) {
				res.Overloaded = true
				loop = false
			}
			if ok := r.okAll.Load(); ok != lastOK {
				lastOK, lastProgress = ok, now
			} else if w.StallAfter > 0 && now.Sub(lastProgress) >= w.StallAfter {
				res.Stalled = true
				res.Failure = fmt.Sprintf("no operation succeeded for %s: the cluster stopped serving", now.Sub(lastProgress).Round(time.Second))
				if p := r.firstErr.Load(); p != nil {
					res.Failure += " (first error: " + *p + ")"
				}
				loop = false
			}
		}
	}
	tick.Stop()
	// The measurement window ends here if the run stops early: operations
	// that complete while it drains no longer count.
	stoppedAt := r.now()
	res.Interrupted = caller.Err() != nil
	if cause := context.Cause(caller); res.Interrupted && cause != nil && !errors.Is(cause, context.Canceled) && !errors.Is(cause, context.DeadlineExceeded) {
		res.Failure = cause.Error()
	}
	if res.Interrupted || res.Overloaded || res.Stalled {
		r.measTo.Store(min(r.measTo.Load(), stoppedAt))
	}
	r.stopping.Store(true)
	// Let outstanding operations finish (bounded): their latency counts.
	// A failed run does not wait for what will never come.
	waited := make(chan struct{})
	go func() { r.inflight.Wait(); close(waited) }()
	drain := 10 * time.Second
	if res.Failure != "" {
		drain = time.Second
	}
	select {
	case <-waited:
	case <-time.After(drain):
	}
	res.Ops, res.Errors = r.ops.Load(), r.errs.Load()
	if p := r.firstErr.Load(); p != nil {
		res.FirstError = *p
	}
	res.Elapsed = time.Duration(max(0, r.measTo.Load()-r.measFrom.Load()))
	if res.Elapsed > 0 {
		res.OpsPerSec = float64(res.Ops) / res.Elapsed.Seconds()
	}
	res.Latency = &r.hist
	return res, nil
}

// startSlot keeps one operation of a closed-loop client outstanding: each
// completion issues the next.
func (r *run) startSlot(g *gen) {
	r.inflight.Add(1)
	var issue func()
	var t0 int64
	done := func(err error) {
		// One clock read serves as this operation's end and the next one's
		// start: on some virtual machines a read costs tens of nanoseconds.
		now := r.now()
		r.finish(t0, now, err)
		t0 = now
		if r.stopping.Load() {
			r.inflight.Done()
			return
		}
		if err != nil {
			// Do not spin on a failing target; errors may also come
			// synchronously from Submit, so never recurse here.
			go func() { time.Sleep(time.Millisecond); t0 = r.now(); issue() }()
			return
		}
		issue()
	}
	issue = func() {
		if r.stopping.Load() {
			r.inflight.Done()
			return
		}
		r.outstand.Add(1)
		r.target.Submit(g.next(), done)
	}
	t0 = r.now()
	issue()
}

// openLoop sends operations at w.Rate; each one's latency counts from its
// intended send time.
func (r *run) openLoop(ctx context.Context, start time.Time) {
	interval := time.Duration(float64(time.Second) / r.w.Rate)
	// A pool of generators, so an operation's buffers stay untouched until
	// it completes.
	var mu sync.Mutex
	var free []*gen
	seed := uint64(1)
	for k := int64(0); ; k++ {
		intended := start.Add(time.Duration(k) * interval)
		if d := time.Until(intended); d > 50*time.Microsecond {
			select {
			case <-ctx.Done():
				return
			case <-time.After(d):
			}
		} else if ctx.Err() != nil {
			return
		}
		mu.Lock()
		var g *gen
		if n := len(free); n > 0 {
			g, free = free[n-1], free[:n-1]
		}
		mu.Unlock()
		if g == nil {
			g = newGen(&r.w, seed)
			seed++
		}
		r.inflight.Add(1)
		r.outstand.Add(1)
		t0 := int64(intended.Sub(r.base))
		r.target.Submit(g.next(), func(err error) {
			r.finish(t0, r.now(), err)
			mu.Lock()
			free = append(free, g)
			mu.Unlock()
			r.inflight.Done()
		})
	}
}

func fmtDur(d time.Duration) string {
	switch {
	case d == 0:
		return "-"
	case d < time.Millisecond:
		return fmt.Sprintf("%.1fµs", float64(d)/1e3)
	case d < time.Second:
		return fmt.Sprintf("%.2fms", float64(d)/1e6)
	default:
		return fmt.Sprintf("%.2fs", d.Seconds())
	}
}
