package ringbuf

import (
	"math/rand/v2"
	"runtime"
	"testing"
	"time"

	"github.com/vestalabs/vesta/internal/contract"
)

// scale sizes the concurrent tests: smaller under the race detector
// (race_test.go), which slows them about tenfold.
var scale = func() int {
	if race {
		return 2
	}
	return 8
}()

// within fails the test if fn does not return in d: a lost wakeup or a lost
// item shows up as a consumer waiting forever.
func within(t *testing.T, d time.Duration, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	select {
	case <-done:
	case <-time.After(d):
		buf := make([]byte, 1<<20)
		t.Fatalf("still running after %v (lost wakeup or lost item?)\n%s", d, buf[:runtime.Stack(buf, true)])
	}
}

// item encodes (producer, seq) in one int.
func item(p, seq int) int      { return p<<32 | seq }
func split(v int) (p, seq int) { return v >> 32, v & (1<<32 - 1) }

// produce pushes seqs 0..n-1 for producer p through push and pushBatch,
// mixing single pushes and batches of random size, retrying while full.
func produce(p, n int, seed uint64, push func(int) bool, pushBatch func([]int) int) {
	r := rand.New(rand.NewPCG(seed, uint64(p)))
	var buf [64]int
	for seq := 0; seq < n; {
		if r.IntN(3) == 0 {
			for !push(item(p, seq)) {
				runtime.Gosched()
			}
			seq++
			continue
		}
		k := min(r.IntN(len(buf))+1, n-seq)
		for i := range k {
			buf[i] = item(p, seq+i)
		}
		for rest := buf[:k]; len(rest) > 0; {
			m := pushBatch(rest)
			seq += m
			rest = rest[m:]
			if len(rest) > 0 {
				runtime.Gosched()
			}
		}
	}
}

type consumer interface {
	PopBatch([]int) int
	Wait(stop <-chan struct{}) bool
}

// consume pops total items with random dst sizes, sleeping in Wait when the
// ring is empty, and calls check on each; it stops early when check reports
// an error (with t.Errorf: it runs off the test goroutine).
func consume(q consumer, total int, seed uint64, check func(v int) bool) {
	r := rand.New(rand.NewPCG(seed, 99))
	dst := make([]int, 100)
	for got := 0; got < total; {
		n := q.PopBatch(dst[:r.IntN(len(dst))+1])
		if n == 0 {
			q.Wait(nil)
			continue
		}
		for _, v := range dst[:n] {
			if !check(v) {
				return
			}
		}
		got += n
	}
}

// fifoChecker checks that each producer's items arrive exactly once and in
// order: the next seq of producer p must be exactly one more than its last.
type fifoChecker struct {
	t    *testing.T
	next []int
}

func (c *fifoChecker) check(v int) bool {
	p, seq := split(v)
	if p < 0 || p >= len(c.next) {
		c.t.Errorf("popped %x: no such producer", v)
		return false
	}
	if seq != c.next[p] {
		c.t.Errorf("producer %d: popped seq %d, want %d (lost, duplicated or reordered)", p, seq, c.next[p])
		return false
	}
	c.next[p]++
	return true
}

func TestSPSCConcurrentFIFO(t *testing.T) {
	for _, capacity := range []int{1, 8, 1024} {
		seed := rand.Uint64()
		n := 50_000 * scale
		q := NewSPSC[int](capacity)
		c := &fifoChecker{t: t, next: make([]int, 1)}
		within(t, 20*time.Second, func() {
			go produce(0, n, seed, q.TryPush, q.PushBatch)
			consume(q, n, seed, c.check)
		})
		if t.Failed() {
			t.Fatalf("capacity %d, seed %d", capacity, seed)
		}
		if q.Len() != 0 {
			t.Fatalf("capacity %d, seed %d: %d items left", capacity, seed, q.Len())
		}
	}
}

func TestMPSCConcurrentFIFOPerProducer(t *testing.T) {
	for _, tc := range []struct{ producers, capacity int }{{2, 2}, {4, 16}, {8, 1024}} {
		seed := rand.Uint64()
		n := 10_000 * scale
		q := NewMPSC[int](tc.capacity)
		c := &fifoChecker{t: t, next: make([]int, tc.producers)}
		within(t, 20*time.Second, func() {
			for p := range tc.producers {
				go produce(p, n, seed, q.TryPush, q.PushBatch)
			}
			consume(q, n*tc.producers, seed, c.check)
		})
		if t.Failed() {
			t.Fatalf("%+v, seed %d", tc, seed)
		}
		if q.Len() != 0 {
			t.Fatalf("%+v, seed %d: %d items left", tc, seed, q.Len())
		}
	}
}

// TestShardedConcurrentExactlyOnce pushes through random shards (no order
// promised) and through Producer handles (FIFO per handle).
func TestShardedConcurrentExactlyOnce(t *testing.T) {
	for _, tc := range []struct{ shards, capacity, producers int }{{2, 2, 4}, {4, 16, 6}, {0, 256, 3}} {
		seed := rand.Uint64()
		n := 10_000 * scale
		s := NewSharded[int](tc.shards, tc.capacity)
		// Producers 0..producers-1 push at random; producers..2*producers-1
		// each through a handle of their own.
		seen := make([][]bool, tc.producers)
		for i := range seen {
			seen[i] = make([]bool, n)
		}
		fifo := &fifoChecker{t: t, next: make([]int, 2*tc.producers)}
		check := func(v int) bool {
			p, seq := split(v)
			if p >= tc.producers {
				return fifo.check(v)
			}
			if seen[p][seq] {
				t.Errorf("producer %d seq %d popped twice", p, seq)
				return false
			}
			seen[p][seq] = true
			return true
		}
		within(t, 20*time.Second, func() {
			for p := range tc.producers {
				go produce(p, n, seed, s.TryPush, s.PushBatch)
				h := s.Producer()
				go produce(tc.producers+p, n, seed, h.TryPush, h.PushBatch)
			}
			consume(s, 2*n*tc.producers, seed, check)
		})
		if t.Failed() {
			t.Fatalf("%+v, seed %d", tc, seed)
		}
		for p := range seen {
			for seq, ok := range seen[p] {
				if !ok {
					t.Fatalf("%+v: producer %d seq %d never popped", tc, p, seq)
				}
			}
		}
		if s.Len() != 0 {
			t.Fatalf("%+v: %d items left", tc, s.Len())
		}
	}
}

// TestConsumerRoleIsChecked: in contracts builds two goroutines popping at
// once is caught; here the overlap is forced by entering the role by hand.
func TestConsumerRoleIsChecked(t *testing.T) {
	if !contract.Enabled {
		t.Skip("the check exists only with -tags contracts")
	}
	var s solo
	s.enter("consumer")
	defer func() {
		if recover() == nil {
			t.Fatal("entering a solo role twice did not panic")
		}
	}()
	s.enter("consumer")
}
