package paxos

import (
	"testing"

	"github.com/vestalabs/vesta/engine/wire"
)

// BenchmarkInProcessCluster measures the protocol core alone: committed
// commands per second of a 3-replica cluster stepped in one goroutine, with
// messages handed over directly and persistence treated as instant. It bounds
// what the runtime can reach; it is not an end-to-end figure (no network, no
// disk, no client). Each proposal is one batch of 64 commands of 64 bytes.
func BenchmarkInProcessCluster(b *testing.B) {
	const cmdsPerBatch, cmdSize = 64, 64
	payload := make([]byte, cmdsPerBatch*cmdSize)
	c := newTestCluster(b, 3)
	for _, n := range c.nodes {
		n.cfg.Window, n.cfg.MaxPending = 256, 1024
	}
	c.elect(1)
	leader := c.nodes[1]
	value := wire.Value{Kind: wire.ValueBatch, Data: payload}
	b.SetBytes(int64(len(payload)))
	b.ResetTimer()
	committed := 0 // batches the leader applied
	for committed < b.N {
		for leader.Propose(value) == nil {
		}
		c.settle()
		committed = len(c.applied[1])
	}
	b.StopTimer()
	b.ReportMetric(float64(committed*cmdsPerBatch)/b.Elapsed().Seconds(), "cmds/s")
	b.ReportMetric(0, "ns/op")
}
