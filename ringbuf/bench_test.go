package ringbuf

import (
	"fmt"
	"runtime"
	"sync"
	"testing"
)

// The hand-off benchmarks move b.N items from P producer goroutines to one
// consumer, so ns/op is nanoseconds per item. "item" pushes and pops one at
// a time; "batch64" pushes and pops slices of 64. Items are pointers, as in
// the engine (*call). A producer that finds the ring full yields
// (runtime.Gosched); a consumer that finds it empty yields up to spinLimit
// times, then sleeps in Wait (the channel baseline blocks in the runtime).

type benchItem struct{ _ [64]byte }

const (
	benchCap  = 1024
	spinLimit = 50
)

type handoff struct {
	pushOne   func(*benchItem) bool
	pushBatch func([]*benchItem) int
	popBatch  func([]*benchItem) int
	wait      func()
}

func runHandoff(b *testing.B, producers, batch int, h handoff) {
	b.ReportAllocs()
	it := &benchItem{}
	var wg sync.WaitGroup
	b.ResetTimer()
	for p := range producers {
		n := b.N / producers
		if p == 0 {
			n += b.N % producers
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if batch == 1 {
				for range n {
					for !h.pushOne(it) {
						runtime.Gosched()
					}
				}
				return
			}
			vs := make([]*benchItem, batch)
			for i := range vs {
				vs[i] = it
			}
			for n > 0 {
				k := h.pushBatch(vs[:min(batch, n)])
				if k == 0 {
					runtime.Gosched()
				}
				n -= k
			}
		}()
	}
	dst := make([]*benchItem, batch)
	spins := 0
	for got := 0; got < b.N; {
		k := h.popBatch(dst)
		if k > 0 {
			got += k
			spins = 0
			continue
		}
		if spins++; spins < spinLimit {
			runtime.Gosched()
		} else {
			h.wait()
			spins = 0
		}
	}
	b.StopTimer()
	wg.Wait()
}

func BenchmarkHandoff(b *testing.B) {
	for _, batch := range []int{1, 64} {
		mode := "item"
		if batch > 1 {
			mode = fmt.Sprintf("batch%d", batch)
		}
		b.Run("chan/"+mode+"/p1", func(b *testing.B) { benchChan(b, 1, batch) })
		b.Run("spsc/"+mode+"/p1", func(b *testing.B) {
			q := NewSPSC[*benchItem](benchCap)
			runHandoff(b, 1, batch, handoff{q.TryPush, q.PushBatch, q.PopBatch, func() { q.Wait(nil) }})
		})
		for _, p := range []int{1, 2, 4} {
			b.Run(fmt.Sprintf("chan/%s/p%d", mode, p), func(b *testing.B) {
				if p == 1 {
					b.Skip("same as above")
				}
				benchChan(b, p, batch)
			})
			b.Run(fmt.Sprintf("mpsc/%s/p%d", mode, p), func(b *testing.B) {
				q := NewMPSC[*benchItem](benchCap)
				runHandoff(b, p, batch, handoff{q.TryPush, q.PushBatch, q.PopBatch, func() { q.Wait(nil) }})
			})
			b.Run(fmt.Sprintf("sharded/%s/p%d", mode, p), func(b *testing.B) {
				s := NewSharded[*benchItem](0, benchCap)
				runHandoff(b, p, batch, handoff{s.TryPush, s.PushBatch, s.PopBatch, func() { s.Wait(nil) }})
			})
		}
	}
}

// benchChan is the baseline: a buffered channel of items, or for batches a
// channel of 64-item slices that the consumer hands back on a second
// channel (so that neither side allocates).
func benchChan(b *testing.B, producers, batch int) {
	if batch == 1 {
		ch := make(chan *benchItem, benchCap)
		runHandoffChan(b, producers, func(it *benchItem) { ch <- it }, func() { <-ch })
		return
	}
	b.ReportAllocs()
	full := make(chan []*benchItem, benchCap/batch)
	free := make(chan []*benchItem, benchCap/batch+producers)
	for range cap(free) {
		free <- make([]*benchItem, batch)
	}
	it := &benchItem{}
	var wg sync.WaitGroup
	b.ResetTimer()
	for p := range producers {
		n := b.N / producers
		if p == 0 {
			n += b.N % producers
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n > 0 {
				vs := <-free
				k := min(batch, n)
				vs = vs[:k]
				for i := range vs {
					vs[i] = it
				}
				full <- vs
				n -= k
			}
		}()
	}
	for got := 0; got < b.N; {
		vs := <-full
		got += len(vs)
		free <- vs[:cap(vs)]
	}
	b.StopTimer()
	wg.Wait()
}

func runHandoffChan(b *testing.B, producers int, send func(*benchItem), recv func()) {
	b.ReportAllocs()
	it := &benchItem{}
	var wg sync.WaitGroup
	b.ResetTimer()
	for p := range producers {
		n := b.N / producers
		if p == 0 {
			n += b.N % producers
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range n {
				send(it)
			}
		}()
	}
	for range b.N {
		recv()
	}
	b.StopTimer()
	wg.Wait()
}
