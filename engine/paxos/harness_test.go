package paxos

import (
	"testing"

	"github.com/vestalabs/vesta/engine/wire"
)

// testConfig returns a small, fast configuration for replica id of n.
func testConfig(id, n int) Config {
	cfg := DefaultConfig()
	cfg.ID = wire.ReplicaID(id)
	for i := 1; i <= n; i++ {
		cfg.Members = append(cfg.Members, wire.ReplicaID(i))
	}
	cfg.ElectionTicks, cfg.HeartbeatTicks, cfg.Window, cfg.MaxPending = 10, 2, 4, 2
	cfg.Seed = uint64(id)
	// Most tests drive a lone node into an election by ticking it; the
	// pre-vote tests (prevote_test.go) turn it back on.
	cfg.PreVote = false
	return cfg
}

func newTestNode(t testing.TB, id, n int) *Node {
	t.Helper()
	nd, err := New(testConfig(id, n), Persisted{})
	if err != nil {
		t.Fatal(err)
	}
	return nd
}

// drain takes every Ready, treats it as durable at once, and returns all
// messages it would send (Send and SendAfterPersist) and everything applied.
func drain(n *Node) (msgs []wire.Message, applied []wire.Entry) {
	for n.HasReady() {
		rd := n.Ready()
		msgs = append(msgs, rd.Send...)
		msgs = append(msgs, rd.SendAfterPersist...)
		applied = append(applied, rd.Apply...)
		n.Advance()
	}
	return msgs, applied
}

// testCluster delivers messages instantly and in order; persistence is
// immediate. It is the simplest world, for targeted tests.
type testCluster struct {
	t       testing.TB
	nodes   map[wire.ReplicaID]*Node
	queue   []wire.Message
	applied map[wire.ReplicaID][]wire.Entry
	drop    func(wire.Message) bool
	// transfers counts checkpoints installed (Ready.SendSnapshot).
	transfers int
	// reads and readsFailed collect Ready.Reads and Ready.ReadsFailed.
	reads       map[wire.ReplicaID][]ReadState
	readsFailed map[wire.ReplicaID][]uint64
}

func newTestCluster(t testing.TB, n int) *testCluster {
	c := &testCluster{t: t, nodes: map[wire.ReplicaID]*Node{}, applied: map[wire.ReplicaID][]wire.Entry{},
		reads: map[wire.ReplicaID][]ReadState{}, readsFailed: map[wire.ReplicaID][]uint64{}}
	for i := 1; i <= n; i++ {
		c.nodes[wire.ReplicaID(i)] = newTestNode(t, i, n)
	}
	return c
}

// settle drains every node and delivers messages until quiet.
func (c *testCluster) settle() {
	if c.reads == nil {
		c.reads, c.readsFailed = map[wire.ReplicaID][]ReadState{}, map[wire.ReplicaID][]uint64{}
	}
	for range 10000 {
		for id := wire.ReplicaID(1); int(id) <= len(c.nodes); id++ {
			n := c.nodes[id]
			for n.HasReady() {
				rd := n.Ready()
				c.queue = append(c.queue, rd.Send...)
				c.queue = append(c.queue, rd.SendAfterPersist...)
				c.applied[id] = append(c.applied[id], rd.Apply...)
				c.reads[id] = append(c.reads[id], rd.Reads...)
				c.readsFailed[id] = append(c.readsFailed[id], rd.ReadsFailed...)
				n.Advance()
				// State transfer, as the runtime does it: the receiver
				// installs the sender's newest checkpoint if it needs it.
				for _, to := range rd.SendSnapshot {
					if c.nodes[to].InstallSnapshot(n.Status().Snapshot, n.MembershipsAt(n.Status().Snapshot)) {
						c.transfers++
					}
				}
			}
		}
		if len(c.queue) == 0 {
			return
		}
		m := c.queue[0]
		c.queue = c.queue[1:]
		if c.drop != nil && c.drop(m) {
			continue
		}
		if err := c.nodes[m.To].Step(m); err != nil {
			c.t.Fatalf("step %v: %v", m, err)
		}
	}
	c.t.Fatal("cluster did not settle")
}

// elect makes replica id the leader by ticking it past its election timeout.
func (c *testCluster) elect(id wire.ReplicaID) {
	c.t.Helper()
	n := c.nodes[id]
	for range 100 {
		if n.Status().Role == Leader {
			c.settle()
			return
		}
		n.Tick()
		c.settle()
	}
	c.t.Fatalf("replica %d did not become leader: %+v", id, n.Status())
}

func batch(s string) wire.Value { return wire.Value{Kind: wire.ValueBatch, Data: []byte(s)} }
