package engine

import (
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vestalabs/vesta/engine/storage"
	"github.com/vestalabs/vesta/engine/transport"
	"github.com/vestalabs/vesta/engine/wire"
)

type nopSM struct{}

func (nopSM) Apply(wire.Slot, [][]byte, [][]byte) {}
func (nopSM) Snapshot(io.Writer) error            { return nil }
func (nopSM) Restore(io.Reader) error             { return nil }

// BenchmarkInProcessPropose drives a 3-replica in-process cluster (Mem
// transport, MemLog) with ProposeAsync, keeping `inflight` 64-byte commands
// outstanding; it reports committed commands per second.
func BenchmarkInProcessPropose(b *testing.B) {
	net := transport.NewNetwork()
	members := []wire.ReplicaID{1, 2, 3}
	var reps []*Replica
	for _, id := range members {
		r, err := Start(Config{
			ID: id, Members: members, Log: storage.NewMemLog(),
			Transport: func(h transport.Handler) (transport.Transport, error) {
				return net.Join(id, h, transport.MemConfig{QueueLen: 1 << 16})
			},
			TickInterval: time.Millisecond, ElectionTicks: 10, HeartbeatTicks: 2,
			Logger: slog.New(slog.DiscardHandler),
		}, nopSM{})
		if err != nil {
			b.Fatal(err)
		}
		reps = append(reps, r)
	}
	defer func() {
		for _, r := range reps {
			r.Stop()
		}
	}()
	var leader *Replica
	for leader == nil {
		for _, r := range reps {
			if r.Status().Role == "leader" {
				leader = r
			}
		}
		time.Sleep(time.Millisecond)
	}
	cmd := make([]byte, 64)
	const inflight = 8192
	sem := make(chan struct{}, inflight)
	var wg sync.WaitGroup
	var failed atomic.Int64
	// One callback for every command: no closure allocated per command, so
	// allocs/op counts the engine's own allocations (per batch, amortized).
	done := CompletionFunc(func(_ []byte, err error) {
		if err != nil {
			failed.Add(1)
		}
		<-sem
		wg.Done()
	})
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		sem <- struct{}{}
		wg.Add(1)
		leader.ProposeWith(cmd, done)
	}
	wg.Wait()
	if f := failed.Load(); f > 0 {
		b.Fatalf("%d of %d proposals failed", f, b.N)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "ops/s")
}
