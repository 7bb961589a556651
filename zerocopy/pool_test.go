package zerocopy

import (
	"errors"
	"sync"
	"testing"

	"github.com/vestalabs/vesta/internal/contract"
)

// violates runs fn and fails t unless it panics with a contract violation.
// Without the contracts tag the checks do not exist, so it skips.
func violates(t *testing.T, what string, fn func()) {
	t.Helper()
	if !contract.Enabled {
		t.Skip("ownership checks exist only with -tags contracts")
	}
	defer func() {
		t.Helper()
		r := recover()
		var v *contract.Violation
		if err, ok := r.(error); !ok || !errors.As(err, &v) {
			t.Fatalf("%s: recovered %v, want a *contract.Violation", what, r)
		}
	}()
	fn()
}

// noLeaks fails t if p has buffers outstanding (contracts builds only).
func noLeaks(t *testing.T, p *Pool) {
	t.Helper()
	if n, counted := p.Outstanding(); counted && n != 0 {
		t.Fatalf("%d buffers not returned to the pool", n)
	}
}

func TestSizeClasses(t *testing.T) {
	var p Pool
	for _, tc := range []struct{ n, cap int }{
		{0, 64}, {1, 64}, {64, 64}, {65, 128}, {4096, 4096}, {4097, 8192},
		{MaxPooled, MaxPooled}, {MaxPooled + 1, MaxPooled + 1},
	} {
		b := p.Get(tc.n)
		if b.Len() != tc.n || b.Cap() != tc.cap || len(b.Bytes()) != tc.n || cap(b.Bytes()) != tc.cap {
			t.Errorf("Get(%d): Len %d Cap %d, want %d and %d", tc.n, b.Len(), b.Cap(), tc.n, tc.cap)
		}
		b.SetLen(tc.cap)
		if len(b.Bytes()) != tc.cap {
			t.Errorf("SetLen(%d): Bytes has length %d", tc.cap, len(b.Bytes()))
		}
		b.Release()
	}
	noLeaks(t, &p)
	for _, bad := range []int{-1} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Get(%d) did not panic", bad)
				}
			}()
			p.Get(bad)
		}()
	}
	b := p.Get(10)
	func() {
		defer func() {
			if recover() == nil {
				t.Error("SetLen beyond Cap did not panic")
			}
		}()
		b.SetLen(b.Cap() + 1)
	}()
	b.Release()
}

func TestBufDoubleReleaseIsCaught(t *testing.T) {
	var p Pool
	b := p.Get(100)
	b.Release()
	violates(t, "second Release", b.Release)
}

func TestBufUseAfterReleaseIsCaught(t *testing.T) {
	var p Pool
	b := p.Get(100)
	b.Release()
	violates(t, "Bytes after Release", func() { b.Bytes() })
	violates(t, "SetLen after Release", func() { b.SetLen(1) })
	violates(t, "Share after Release", func() { b.Share() })
}

// TestStaleBufIsCaughtAfterReuse: the buffer went back to the pool and out
// to a new owner; the old handle must still fail, the new one work.
func TestStaleBufIsCaughtAfterReuse(t *testing.T) {
	if !contract.Enabled {
		t.Skip("ownership checks exist only with -tags contracts")
	}
	var p Pool
	old := p.Get(100)
	old.Release()
	var fresh Buf
	for range 100 { // sync.Pool may hand out another chunk; look for the same one
		fresh = p.Get(100)
		if fresh.c == old.c {
			break
		}
		defer fresh.Release()
	}
	if fresh.c != old.c {
		t.Skip("the pool never handed the same buffer out again")
	}
	violates(t, "stale Release", old.Release)
	violates(t, "stale Bytes", func() { old.Bytes() })
	fresh.Bytes()[0] = 1 // the new owner is unaffected
	fresh.Release()
}

func TestReleasedBytesArePoisoned(t *testing.T) {
	if !contract.Enabled {
		t.Skip("poisoning exists only with -tags contracts")
	}
	var p Pool
	b := p.Get(64)
	kept := b.Bytes()
	for i := range kept {
		kept[i] = 7
	}
	b.Release()
	for i, c := range kept {
		if c != poisonByte {
			t.Fatalf("byte %d of a released buffer is %d, want poison %#x", i, c, poisonByte)
		}
	}
}

func TestBufAfterShareIsDead(t *testing.T) {
	var p Pool
	b := p.Get(10)
	f := b.Share()
	violates(t, "Bytes after Share", func() { b.Bytes() })
	violates(t, "Release after Share", b.Release)
	f.Release()
	noLeaks(t, &p)
}

// TestPoolSteadyStateAllocatesNothing: once warm, Get and Release of pooled
// sizes, Share/Ref/Release, allocate nothing. (Under the race detector
// sync.Pool drops items on purpose, so it is skipped there.)
func TestPoolSteadyStateAllocatesNothing(t *testing.T) {
	if race {
		t.Skip("sync.Pool drops a share of Puts under the race detector")
	}
	var p Pool
	for _, n := range []int{10, 1000, 64 << 10} {
		p.Get(n).Release()
		if a := testing.AllocsPerRun(1000, func() { p.Get(n).Release() }); a != 0 {
			t.Errorf("Get(%d)+Release: %v allocs, want 0", n, a)
		}
		if a := testing.AllocsPerRun(1000, func() {
			f := p.Get(n).Share()
			g := f.Ref()
			f.Release()
			g.Release()
		}); a != 0 {
			t.Errorf("Get(%d)+Share+Ref+2×Release: %v allocs, want 0", n, a)
		}
	}
}

// TestPoolConcurrent: goroutines get, fill, check and release buffers of
// one pool at once; under -race this checks that recycling through the
// per-P caches publishes buffers safely.
func TestPoolConcurrent(t *testing.T) {
	var p Pool
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 2000 {
				b := p.Get(64 + (i*37+g)%5000)
				bs := b.Bytes()
				for j := range bs {
					bs[j] = byte(g)
				}
				for j := range bs {
					if bs[j] != byte(g) {
						t.Errorf("buffer shared between owners")
						return
					}
				}
				b.Release()
			}
		}()
	}
	wg.Wait()
	noLeaks(t, &p)
}
