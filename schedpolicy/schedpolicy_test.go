//go:build linux

package schedpolicy

import (
	"runtime"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// policies returns the policy of every thread of the process.
func policies(t *testing.T) map[int]uint32 {
	t.Helper()
	tids, err := threads()
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]uint32{}
	for _, tid := range tids {
		attr, err := unix.SchedGetAttr(tid, 0)
		if err != nil {
			continue // exited meanwhile
		}
		out[tid] = attr.Policy
	}
	return out
}

// lockThreads parks n goroutines, each on a thread of its own, until
// release is closed: the runtime needs new threads for everything else.
func lockThreads(n int, release chan struct{}) *sync.WaitGroup {
	var started, done sync.WaitGroup
	started.Add(n)
	done.Add(n)
	for range n {
		go func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			defer done.Done()
			started.Done()
			<-release
		}()
	}
	started.Wait()
	return &done
}

func TestSetReachesEveryThreadAndNewOnes(t *testing.T) {
	release := make(chan struct{})
	before := lockThreads(4, release)
	if err := Set(Batch); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := Set(Normal); err != nil {
			t.Error(err)
		}
	})
	// Threads created after Set inherit from a changed thread.
	after := lockThreads(4, release)
	got := policies(t)
	if len(got) < 9 {
		t.Fatalf("only %d threads seen; the locked goroutines should hold 8", len(got))
	}
	for tid, p := range got {
		if p != unix.SCHED_BATCH {
			t.Errorf("thread %d has policy %d after Set(Batch), want SCHED_BATCH (%d)", tid, p, unix.SCHED_BATCH)
		}
	}
	if cur, err := Current(); err != nil || cur != string(Batch) {
		t.Errorf("Current() = %q, %v; want %q", cur, err, Batch)
	}
	close(release)
	before.Wait()
	after.Wait()

	if err := Set(Normal); err != nil {
		t.Fatal(err)
	}
	for tid, p := range policies(t) {
		if p != unix.SCHED_NORMAL {
			t.Errorf("thread %d has policy %d after Set(Normal)", tid, p)
		}
	}
}

func TestSetKeepsNice(t *testing.T) {
	t.Cleanup(func() {
		if err := Set(Normal); err != nil {
			t.Error(err)
		}
	})
	// On a thread of its own, which ends with the goroutine (it exits
	// locked), so the raised nice value goes with it.
	type result struct {
		nice int32
		err  error
	}
	done := make(chan result)
	go func() {
		runtime.LockOSThread()
		// Raising one's own nice value needs no privilege.
		if err := unix.Setpriority(unix.PRIO_PROCESS, 0, 5); err != nil {
			done <- result{err: err}
			return
		}
		if err := Set(Batch); err != nil {
			done <- result{err: err}
			return
		}
		attr, err := unix.SchedGetAttr(0, 0)
		if err != nil {
			done <- result{err: err}
			return
		}
		done <- result{nice: attr.Nice}
	}()
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.nice != 5 {
		t.Errorf("nice %d after Set(Batch), want the 5 it had", r.nice)
	}
}

func TestParse(t *testing.T) {
	for _, s := range []string{"normal", "batch"} {
		if p, err := Parse(s); err != nil || string(p) != s {
			t.Errorf("Parse(%q) = %q, %v", s, p, err)
		}
	}
	if _, err := Parse("fifo"); err == nil {
		t.Error(`Parse("fifo") succeeded; only normal and batch are offered`)
	}
}
