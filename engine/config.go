package engine

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vestalabs/vesta/engine/paxos"
	"github.com/vestalabs/vesta/engine/storage"
	"github.com/vestalabs/vesta/engine/transport"
	"github.com/vestalabs/vesta/engine/wire"
)

// StateMachine is the application's replicated state. The runtime applies
// one batch at a time, in slot order, never concurrently, from its applier
// goroutine (each call happens after the previous one returned); every
// replica applies the same batches in the same order.
//
// What a slow Apply costs: the commands behind it wait (their callers, and
// on the leader new commands once MaxApplyBacklog chosen slots wait to be
// applied, which then queue up to MaxQueued and get ErrBusy beyond), and the
// chosen values waiting are held in memory. It does not cost leadership or
// votes: the core loop, which ticks, sends heartbeats and votes, never calls
// Apply. An Apply that takes longer than a heartbeat interval is counted
// (vesta_slow_applies_total) and logged at a rate limit.
type StateMachine interface {
	// Apply executes cmds, which were chosen in this order, and sets
	// results[i] to the result of cmds[i] (len(results) == len(cmds)). The
	// bytes of cmds are valid only during the call: copy what is kept. The
	// results belong to the runtime afterwards and reach the proposers.
	Apply(cmds [][]byte, results [][]byte)
}

// TransportFactory builds the replica's transport, which must deliver
// inbound messages to h.
type TransportFactory func(h transport.Handler) (transport.Transport, error)

// Config configures a Replica. Zero numbers take the defaults in their comments.
type Config struct {
	// ClusterID names the cluster (0: unnamed). A log that records another
	// cluster's identity is refused at Start, and the metrics carry it as
	// their cluster label, so replicas of several clusters share a
	// registry.
	ClusterID uint64
	// ID is this replica, one of Members.
	ID wire.ReplicaID
	// Members lists every replica of the cluster.
	Members []wire.ReplicaID
	// Log is the acceptor's durable memory. Required; the replica owns it
	// from Start on and closes it on Stop.
	Log storage.Log
	// Transport builds the transport to the other replicas. Required.
	Transport TransportFactory
	// TickInterval is the protocol's unit of time (10ms).
	TickInterval time.Duration
	// ElectionTicks (20), HeartbeatTicks (3), Window (256) and MaxPending
	// (4096) are passed to the protocol core; see paxos.Config.
	ElectionTicks  int
	HeartbeatTicks int
	Window         int
	MaxPending     int
	// MaxBatchCommands (1024) and MaxBatchBytes (1 MiB, at most
	// MaxCommandBytes) bound one proposed batch; a batch always takes its
	// first command, whatever its size.
	MaxBatchCommands int
	MaxBatchBytes    int
	// MaxQueued (1<<20) bounds the commands waiting to be batched; beyond it
	// Propose fails with ErrBusy.
	MaxQueued int
	// MaxApplyBacklog (4096) bounds the chosen slots waiting for the state
	// machine: while that many wait, the leader takes no new commands
	// (they stay queued), so a state machine slower than the log does not
	// make the replica hold chosen values without bound.
	MaxApplyBacklog int
	// Logger receives the replica's structured logs (slog.Default()).
	Logger *slog.Logger
	// Registerer, if set, receives the replica's Prometheus metrics.
	Registerer prometheus.Registerer
}

// MaxCommandBytes is the largest command Propose accepts, and the largest
// MaxBatchBytes. Every protocol message must fit in one frame of the
// transport (the wire codec's default limit is 16 MiB), and the largest ones
// carry one batch on top of up to 4 MiB of other values: a promise after a
// leader fails (paxos.DefaultMaxInflightBytes of values accepted and not
// chosen) and a catch-up reply (paxos.DefaultMaxCatchUpBytes). A batch past
// the frame limit could never be sent, and the cluster would stall on its
// slot.
const MaxCommandBytes = 4 << 20

func (c *Config) setDefaults() {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	p := paxos.DefaultConfig()
	def(&c.ElectionTicks, p.ElectionTicks)
	def(&c.HeartbeatTicks, p.HeartbeatTicks)
	def(&c.Window, p.Window)
	def(&c.MaxPending, p.MaxPending)
	def(&c.MaxBatchCommands, 1024)
	def(&c.MaxBatchBytes, 1<<20)
	def(&c.MaxQueued, 1<<20)
	def(&c.MaxApplyBacklog, 4096)
	if c.TickInterval == 0 {
		c.TickInterval = 10 * time.Millisecond
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

func (c *Config) validate() error {
	if c.Log == nil {
		return &ConfigError{"Log", "required (storage.OpenWAL, pmem.Open or storage.NewMemLog)"}
	}
	if c.Transport == nil {
		return &ConfigError{"Transport", "required"}
	}
	if c.TickInterval < 0 {
		return &ConfigError{"TickInterval", fmt.Sprintf("%v is negative", c.TickInterval)}
	}
	for _, f := range []struct {
		name string
		v    int
	}{{"MaxBatchCommands", c.MaxBatchCommands}, {"MaxBatchBytes", c.MaxBatchBytes}, {"MaxQueued", c.MaxQueued}, {"MaxApplyBacklog", c.MaxApplyBacklog}} {
		if f.v < 1 {
			return &ConfigError{f.name, fmt.Sprintf("%d, need at least 1", f.v)}
		}
	}
	if c.MaxBatchBytes > MaxCommandBytes {
		return &ConfigError{"MaxBatchBytes", fmt.Sprintf("%d, at most MaxCommandBytes (%d): every protocol message must fit in one 16 MiB frame", c.MaxBatchBytes, MaxCommandBytes)}
	}
	pc := c.paxosConfig(0)
	if err := pc.Validate(); err != nil {
		var ce *paxos.ConfigError
		if errors.As(err, &ce) {
			return &ConfigError{ce.Field, ce.Reason}
		}
		return err
	}
	return nil
}

func (c *Config) paxosConfig(seed uint64) paxos.Config {
	return paxos.Config{
		ID: c.ID, Members: c.Members, ElectionTicks: c.ElectionTicks, HeartbeatTicks: c.HeartbeatTicks,
		Window: c.Window, MaxPending: c.MaxPending, MaxCatchUpEntries: 256, PreVote: true, Seed: seed,
	}
}
