package ringbuf

import (
	"math/rand/v2"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// sleeper is the consumer side of every ring.
type sleeper interface {
	PopBatch([]int) int
	Arm() bool
	C() <-chan struct{}
	Disarm()
	Wait(stop <-chan struct{}) bool
}

type pusher func(int) bool

func rings(capacity int) map[string]struct {
	q    sleeper
	push pusher
} {
	spsc := NewSPSC[int](capacity)
	mpsc := NewMPSC[int](capacity)
	sh := NewSharded[int](3, capacity)
	sh2 := NewSharded[int](3, capacity)
	h := sh2.Producer()
	return map[string]struct {
		q    sleeper
		push pusher
	}{
		"SPSC":     {spsc, spsc.TryPush},
		"MPSC":     {mpsc, mpsc.TryPush},
		"Sharded":  {sh, sh.TryPush},
		"Producer": {sh2, h.TryPush}, // a Sharded pushed to through a handle
	}
}

// TestWakeupPingPong makes the consumer go to sleep before nearly every
// push: the producer pushes one item, then spins until the consumer has
// taken it, and pushes the next at once, racing the consumer's way from an
// empty PopBatch into Arm. Each round crosses the arm/re-check/notify
// window once; a lost wakeup leaves the consumer asleep and the test times
// out.
func TestWakeupPingPong(t *testing.T) {
	rounds := 5000 * scale
	for name, r := range rings(4) {
		t.Run(name, func(t *testing.T) {
			var taken atomic.Int64
			slept := 0
			within(t, 20*time.Second, func() {
				go func() {
					for i := range rounds {
						if !r.push(i) {
							t.Errorf("push %d into an empty ring failed", i)
							return
						}
						for taken.Load() <= int64(i) {
							runtime.Gosched()
						}
					}
				}()
				dst := make([]int, 4)
				for i := 0; i < rounds; {
					n := r.q.PopBatch(dst)
					if n == 0 {
						if r.q.Arm() {
							<-r.q.C()
							slept++
						}
						r.q.Disarm()
						continue
					}
					if n != 1 || dst[0] != i {
						t.Errorf("round %d: popped %v", i, dst[:n])
						return
					}
					i++
					taken.Store(int64(i))
				}
			})
			if slept == 0 {
				t.Errorf("the consumer never slept in %d rounds: the test did not exercise wakeups", rounds)
			}
			t.Logf("%d rounds, consumer slept %d times", rounds, slept)
		})
	}
}

// TestWakeupStress runs several producers that push in short bursts with
// random pauses, so the consumer keeps falling asleep and waking, with
// pushes racing its arm and re-check from several cores. Every item must
// arrive within the deadline.
func TestWakeupStress(t *testing.T) {
	const producers = 4
	perProducer := 4000 * scale
	for name, r := range rings(8) {
		if name == "SPSC" {
			continue // one producer only: covered by the ping-pong test
		}
		t.Run(name, func(t *testing.T) {
			within(t, 20*time.Second, func() {
				for p := range producers {
					go func() {
						rnd := rand.New(rand.NewPCG(uint64(p), 1))
						for seq := 0; seq < perProducer; seq++ {
							for !r.push(item(p, seq)) {
								runtime.Gosched()
							}
							switch rnd.IntN(8) {
							case 0:
								time.Sleep(time.Duration(rnd.IntN(20)) * time.Microsecond)
							case 1, 2:
								runtime.Gosched()
							}
						}
					}()
				}
				dst := make([]int, 16)
				for got := 0; got < producers*perProducer; {
					n := r.q.PopBatch(dst)
					if n == 0 {
						r.q.Wait(nil)
					}
					got += n
				}
			})
		})
	}
}

// TestWaitStops: Wait on an empty ring returns false once stop is closed,
// and true at once on a non-empty ring.
func TestWaitStops(t *testing.T) {
	for name, r := range rings(4) {
		t.Run(name, func(t *testing.T) {
			stop := make(chan struct{})
			within(t, 10*time.Second, func() {
				go func() {
					time.Sleep(time.Millisecond)
					close(stop)
				}()
				if r.q.Wait(stop) {
					t.Error("Wait on an empty ring reported an item")
				}
				r.push(1)
				if !r.q.Wait(stop) {
					t.Error("Wait on a non-empty ring reported none")
				}
			})
		})
	}
}

// TestArmInSelect is the engine's use: the consumer sleeps in a select with
// another channel (its ticker) and must not miss pushes that arrive while
// it handles ticks.
func TestArmInSelect(t *testing.T) {
	s := NewSharded[int](2, 16)
	const total = 5000
	within(t, 20*time.Second, func() {
		go func() {
			for i := range total {
				for !s.TryPush(i) {
					runtime.Gosched()
				}
				if i%64 == 0 {
					time.Sleep(50 * time.Microsecond)
				}
			}
		}()
		tick := time.NewTicker(100 * time.Microsecond)
		defer tick.Stop()
		dst := make([]int, 32)
		for got := 0; got < total; {
			if n := s.PopBatch(dst); n > 0 {
				got += n
				continue
			}
			if s.Arm() {
				select {
				case <-s.C():
				case <-tick.C:
				}
				s.Disarm()
			}
		}
	})
}
