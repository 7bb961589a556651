//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vestalabs/vesta/client"
)

// TestPausedLeaderFailover runs three vestad processes (as TestProcessFaults
// does), drives them with one Client at its default options (AttemptTimeout
// 2 s) from a few writers, SIGSTOPs the leader for 3 s and measures the
// longest time in which no write succeeded. The others elect a new leader in
// a few hundred milliseconds; the client must find it about as fast, not
// wait out the attempt timeout at the paused one.
//
// The bound is max(1.5 s, election + 1 s), the election measured by polling
// the two live replicas' status. It cannot flake on a slow machine the way a
// fixed bound would: a slow election widens it, and what remains is the
// client's share — its hedge delay (50 ms here, at most 500 ms by
// construction) plus a probe and a retry, each one round trip on loopback.
// A client that waits for its attempt timeout cannot pass: its writes at the
// paused leader are given up only 2 s after they were sent, so its gap is at
// least 2 s (2.5-3.0 s measured), while the pause lasts 3 s.
//
// Every writer is the only writer of its keys: a CAS-incremented counter
// must swap on every increment and end at their number, so no retried write
// applied twice or was lost, although writes sent to the paused leader were
// re-sent to the new one.
func TestPausedLeaderFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds vestad and runs a 3-process cluster for about 10 s; make test runs it")
	}
	dir := t.TempDir()
	vestad, _ := buildBinaries(t, dir)
	cl := newProcCluster(t, dir, vestad, 3)
	cl.startAll()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if cl.waitLeader(ctx, 20*time.Second) < 0 {
		cl.fail("no leader elected within 20 s of starting")
	}
	c, err := client.New(cl.clientAddrs, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	const writers = 4
	t0 := time.Now()
	var mu sync.Mutex
	var okAt []time.Duration // when each write succeeded, since t0
	stop := make(chan struct{})
	var wg sync.WaitGroup
	incs := make([]int, writers)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := []byte(fmt.Sprintf("failover/counter/%d", w))
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				// Long enough that no write ends with an unknown outcome:
				// the cluster is healthy but for the pause.
				octx, ocancel := context.WithTimeout(ctx, 20*time.Second)
				var err error
				if w%2 == 0 {
					var swapped bool
					expect := []byte(strconv.Itoa(incs[w]))
					if incs[w] == 0 {
						expect = nil
					}
					swapped, err = c.CAS(octx, key, expect, []byte(strconv.Itoa(incs[w]+1)))
					if err == nil && !swapped {
						err = errors.New("CAS by the key's only writer did not swap: a retried increment applied twice, or one was lost")
					}
					if err == nil {
						incs[w]++
					}
				} else {
					err = c.Put(octx, []byte(fmt.Sprintf("failover/once/%d/%d", w, n)), []byte("v"))
				}
				ocancel()
				if err != nil {
					t.Errorf("writer %d, write %d: %v", w, n, err)
					return
				}
				mu.Lock()
				okAt = append(okAt, time.Since(t0))
				mu.Unlock()
			}
		}()
	}
	time.Sleep(1500 * time.Millisecond)

	leader := cl.waitLeader(ctx, 10*time.Second)
	if leader < 0 {
		cl.fail("no leader under load")
	}
	paused := time.Since(t0)
	cl.procs[leader].signal(syscall.SIGSTOP)
	t.Logf("%.2fs SIGSTOP the leader, replica %d", paused.Seconds(), leader+1)
	// The election, as the live replicas report it.
	elected := time.Duration(-1)
	for time.Since(t0) < paused+3*time.Second && ctx.Err() == nil {
		if elected < 0 {
			for i, a := range cl.clientAddrs {
				if i == leader {
					continue
				}
				sctx, scancel := context.WithTimeout(ctx, 100*time.Millisecond)
				st, err := cl.status.Status(sctx, a)
				scancel()
				if err == nil && st.Role == "leader" {
					elected = time.Since(t0) - paused
					t.Logf("replica %d leads %v after the pause", i+1, elected.Round(time.Millisecond))
					break
				}
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	cl.procs[leader].signal(syscall.SIGCONT)
	t.Logf("%.2fs SIGCONT replica %d", time.Since(t0).Seconds(), leader+1)
	time.Sleep(time.Second)
	close(stop)
	wg.Wait()
	if t.Failed() {
		return
	}
	if elected < 0 {
		cl.fail("no other replica led within the 3 s pause")
	}

	mu.Lock()
	times := slices.Clone(okAt)
	mu.Unlock()
	slices.Sort(times)
	// The longest gap between successes from a second before the pause on,
	// and the gap that spans the pause.
	var gap, gapAt, span time.Duration
	prev := paused - time.Second
	for _, at := range times {
		if at < prev {
			continue
		}
		if at-prev > gap {
			gap, gapAt = at-prev, prev
		}
		if prev <= paused && at > paused {
			span = at - prev
		}
		prev = at
	}
	if end := time.Since(t0); end-prev > gap {
		gap, gapAt = end-prev, prev
	}
	t.Logf("%d writes; longest gap without a successful write %v (from %.2fs); the gap spanning the pause %v; election %v",
		len(times), gap.Round(time.Millisecond), gapAt.Seconds(), span.Round(time.Millisecond), elected.Round(time.Millisecond))
	bound := max(1500*time.Millisecond, elected+time.Second)
	if gap >= bound {
		t.Fatalf("no successful write for %v around the leader's pause (bound %v: the election took %v); the client waited for the paused leader instead of finding the new one",
			gap.Round(time.Millisecond), bound, elected.Round(time.Millisecond))
	}

	// Exactly once: each counter holds the number of its increments.
	for w := 0; w < writers; w += 2 {
		v, _, err := c.Get(ctx, []byte(fmt.Sprintf("failover/counter/%d", w)))
		if err != nil || string(v) != strconv.Itoa(incs[w]) {
			t.Errorf("counter %d = %q (%v), want %d", w, v, err, incs[w])
		}
	}
}
