package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vestalabs/vesta/bench"
	"github.com/vestalabs/vesta/engine"
	"github.com/vestalabs/vesta/engine/storage"
	"github.com/vestalabs/vesta/engine/transport"
	"github.com/vestalabs/vesta/engine/wire"
	"github.com/vestalabs/vesta/pmem"
	"github.com/vestalabs/vesta/tools/vestad/kv"
)

// inprocCluster runs every replica in this process over the in-memory
// transport, each with vestad's key-value state machine, and submits
// commands straight to the leader with ProposeAsync.
type inprocCluster struct {
	replicas []*engine.Replica
	leader   atomic.Pointer[engine.Replica]
	ops      sync.Pool // *inprocOp
}

// inprocOp is one operation in flight: its encoded command and the
// harness's callback. Pooled, and an engine.Completion itself, so an
// operation allocates nothing.
type inprocOp struct {
	c    *inprocCluster
	cmd  []byte
	done func(error)
}

// Complete implements engine.Completion.
func (op *inprocOp) Complete(_ []byte, err error) {
	c, done := op.c, op.done
	op.done = nil
	c.ops.Put(op)
	if errors.Is(err, engine.ErrNotLeader) || errors.Is(err, engine.ErrOutcomeUnknown) {
		c.findLeader()
	}
	done(err)
}

func startInproc(o *options) (*inprocCluster, error) {
	net := transport.NewNetwork()
	var members []wire.ReplicaID
	for i := 1; i <= o.replicas; i++ {
		members = append(members, wire.ReplicaID(i))
	}
	c := &inprocCluster{}
	c.ops.New = func() any { return &inprocOp{c: c, cmd: make([]byte, 0, 64+o.size)} }
	for _, id := range members {
		log, err := openLog(o, id, members)
		if err != nil {
			c.stop()
			return nil, err
		}
		r, err := engine.Start(engine.Config{
			ID: id, Members: members, Log: log,
			Transport: func(h transport.Handler) (transport.Transport, error) {
				return net.Join(id, h, transport.MemConfig{QueueLen: 1 << 16})
			},
			Window: o.window, MaxBatchCommands: o.maxBatch, MaxBatchBytes: o.maxBatchBytes,
			TickInterval: 5 * time.Millisecond, ElectionTicks: 20, HeartbeatTicks: 3,
			Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		}, newStateMachine(o.sm))
		if err != nil {
			c.stop()
			return nil, err
		}
		c.replicas = append(c.replicas, r)
		go func() {
			<-r.Done()
			if err := r.Err(); err != nil { // failed, not stopped by us
				o.onReplicaExit(fmt.Errorf("replica %d failed during the run: %w", id, err))
			}
		}()
	}
	deadline := time.Now().Add(10 * time.Second)
	for c.findLeader() == nil {
		if time.Now().After(deadline) {
			c.stop()
			return nil, errors.New("no leader elected within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return c, nil
}

// openLog opens replica id's log as -log asks.
func openLog(o *options, id wire.ReplicaID, members []wire.ReplicaID) (storage.Log, error) {
	switch o.log {
	case "mem":
		return storage.NewMemLog(), nil
	case "wal":
		// A new cluster every run (ID 1: the in-process cluster is alone).
		dir, err := freshWALDir(o, int(id))
		if err != nil {
			return nil, err
		}
		return storage.OpenWAL(dir, storage.WALOptions{Create: storage.MustCreate,
			Identity: storage.Identity{ClusterID: 1, ReplicaID: id, Members: members}})
	case "pmem":
		path := filepath.Join(o.pmemDir, fmt.Sprintf("vesta-bench-r%d-%d.pmem", id, os.Getpid()))
		o.cleanup = append(o.cleanup, path)
		l, err := pmem.Open(path, pmem.Options{Identity: storage.Identity{ClusterID: 1, ReplicaID: id, Members: members},
			Create: storage.MustCreate, Size: o.pmemSize, Prefault: true})
		if err == nil {
			o.durability = fmt.Sprintf("pmem %s (%s)", path, l.Status().Durability)
		}
		return l, err
	}
	return nil, fmt.Errorf("-log %q: want mem, wal or pmem", o.log)
}

// nullSM applies nothing: with it a run measures the engine alone.
type nullSM struct{}

func (nullSM) Apply(wire.Slot, [][]byte, [][]byte) {}
func (nullSM) Snapshot(io.Writer) error            { return nil }
func (nullSM) Restore(io.Reader) error             { return nil }

func newStateMachine(kind string) engine.StateMachine {
	if kind == "null" {
		return nullSM{}
	}
	return kv.Machine{Store: kv.New(kv.Options{})}
}

func (c *inprocCluster) findLeader() *engine.Replica {
	for _, r := range c.replicas {
		if r.Status().Role == "leader" {
			c.leader.Store(r)
			return r
		}
	}
	return nil
}

// Submit implements bench.Target.
func (c *inprocCluster) Submit(op bench.Op, done func(error)) {
	io := c.ops.Get().(*inprocOp)
	kop := kv.Op{Kind: kv.Get, Key: op.Key}
	if op.Write {
		kop = kv.Op{Kind: kv.Put, Key: op.Key, Value: op.Value}
	}
	io.cmd = kv.AppendCommand(io.cmd[:0], []kv.Op{kop})
	io.done = done
	c.leader.Load().ProposeWith(io.cmd, io)
}

func (c *inprocCluster) stop() {
	for _, r := range c.replicas {
		r.Stop()
	}
}
