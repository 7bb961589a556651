package engine

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vestalabs/vesta/engine/checkpoint"
	"github.com/vestalabs/vesta/engine/paxos"
	"github.com/vestalabs/vesta/engine/storage"
	"github.com/vestalabs/vesta/engine/storage/vfs"
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
//
// Checkpoints (Config.Checkpoints): Snapshot and Restore are called on the
// applier goroutine too, between applies, never concurrently with Apply or
// with each other. A state machine that can freeze a consistent view
// cheaply implements Freezer as well; the image is then written from
// another goroutine while applies go on. Without checkpoints configured,
// Snapshot and Restore are never called.
type StateMachine interface {
	// Apply executes cmds, the commands chosen in slot, in this order, and
	// sets results[i] to the result of cmds[i] (len(results) == len(cmds)).
	// Slots grow strictly from call to call (slots holding no commands are
	// skipped); a state machine that keeps its own durable state can skip
	// the slots it already holds. The bytes of cmds are valid only during
	// the call: copy what is kept. The results belong to the runtime
	// afterwards and reach the proposers.
	Apply(slot wire.Slot, cmds [][]byte, results [][]byte)
	// Snapshot writes an image of the whole state as of the last Apply to
	// w. Applies wait until it returns (unless the state machine is a
	// Freezer). The image must restore to a state that gives the same
	// results for the same commands: it includes anything that decides
	// future results (for a store with client sessions, the sessions).
	Snapshot(w io.Writer) error
	// Restore replaces the whole state with an image Snapshot wrote (here or
	// on another replica: a replica behind its peers' logs receives one). An
	// error fails the replica.
	Restore(r io.Reader) error
}

// Freezer is implemented by a state machine that can take a consistent
// view of itself cheaply (a frozen copy, or copy-on-write). Freeze is called
// on the applier goroutine between applies; the view's WriteTo then writes
// the same image Snapshot would have, from another goroutine, while applies
// continue.
type Freezer interface {
	Freeze() io.WriterTo
}

// CheckpointConfig configures checkpoints: images of the state machine,
// written to files, after which every log is compacted and a replica that
// is behind its peers' logs receives one (state transfer).
type CheckpointConfig struct {
	// Dir holds the checkpoint files. Empty: no checkpoints; the log then
	// keeps every record, and a replica that is behind it cannot be helped.
	Dir string
	// FS is the file system Dir is on; nil means vfs.Default.
	FS vfs.FS
	// Bytes is how many bytes of chosen values are applied between two
	// checkpoints (64 MiB). It bounds what the logs hold beyond a
	// checkpoint: the durable log is compacted below the oldest checkpoint
	// kept, so it holds about Keep times Bytes of values.
	Bytes int64
	// Interval, if positive, also takes a checkpoint once that long has
	// passed since the last one (or since start) and anything was applied
	// meanwhile, however little: it bounds how much a restart replays and
	// how old a lagging peer's transfer is on a quiet cluster. 0: by Bytes
	// only.
	Interval time.Duration
	// Keep is how many checkpoints to keep (2). Recovery falls back to an
	// older one if the newest is damaged, and the log reaches back to the
	// oldest kept one.
	Keep int
	// ChunkBytes is the size of one chunk of a checkpoint sent to a peer
	// (64 KiB). At most 8 chunks are unacknowledged, and the transport sends
	// them with a priority below the protocol's messages (TCP writes a chunk
	// only when no protocol frame waits), so a transfer delays an Accept by
	// at most one chunk's write.
	ChunkBytes int
	// FetchTimeout bounds how long Start waits for a peer's checkpoint when
	// this replica's log was compacted below every valid checkpoint it holds
	// (its checkpoint directory lost or damaged): Start then asks its peers
	// for one before anything else runs (2 min). Negative: never fetch;
	// Start fails instead, saying so.
	FetchTimeout time.Duration
}

// TransportFactory builds the replica's transport, which must deliver
// inbound messages to h. Start calls it once.
type TransportFactory func(h transport.Handler) (transport.Transport, error)

// Config configures a Replica. Zero numbers take the defaults in their comments.
type Config struct {
	// ClusterID names the cluster (0: unnamed). A log that records another
	// cluster's identity is refused at Start, and the metrics carry it as
	// their cluster label, so replicas of several clusters share a
	// registry.
	ClusterID uint64
	// ID is this replica, one of Members (unless its checkpoint records
	// the configurations it restarts with).
	ID wire.ReplicaID
	// Members lists the replicas the cluster was created with, all voters.
	// Once a checkpoint records configurations (ChangeMembership), the
	// member set comes from the checkpoint and the log, not from here.
	Members []wire.ReplicaID
	// Join starts a replica that joins a running cluster as a new member,
	// from an empty log: before anything else it fetches a checkpoint from
	// Members (here: the replicas to ask, not including itself), which
	// records the cluster's configurations, and starts from it. Add it with
	// ChangeMembership (as a learner, then a voter) before or after it
	// starts. Needs Checkpoints.Dir. On a log that holds anything, Join
	// changes nothing: the replica restarts from its own state.
	Join bool
	// Alpha is α: a membership change chosen in slot s governs from s+α
	// (paxos.Config.Alpha). Every first member must be given the same; 0:
	// paxos.DefaultAlpha.
	Alpha int
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
	// LeaseTicks turns leader leases on for ReadLease reads (paxos
	// lease.go): 0 means ElectionTicks*3/4; negative, no leases (ReadLease
	// then runs a read-index round). MaxClockDriftPercent (10) is how much
	// faster any replica's clock may run than another's: leases are safe
	// only within it. Ticks follow the monotonic clock, also across a pause
	// of the process (the core loop catches missed ticks up).
	LeaseTicks           int
	MaxClockDriftPercent int
	// OnLeaderChange, if set, is called each time the leader this replica
	// knows changes (to 0 when it knows none), in order, on a goroutine of
	// its own: a slow callback delays only later calls.
	OnLeaderChange func(LeaderChange)
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
	// Checkpoints configures checkpoints, log compaction and state
	// transfer; the zero value has none.
	Checkpoints CheckpointConfig
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
	def(&c.LeaseTicks, c.ElectionTicks*3/4)
	def(&c.MaxClockDriftPercent, 10)
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
	ck := &c.Checkpoints
	if ck.FS == nil {
		ck.FS = vfs.Default
	}
	if ck.Bytes == 0 {
		ck.Bytes = 64 << 20
	}
	def(&ck.Keep, checkpoint.DefaultKeep)
	def(&ck.ChunkBytes, 64<<10)
	if ck.FetchTimeout == 0 {
		ck.FetchTimeout = 2 * time.Minute
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
	if c.Join && c.Checkpoints.Dir == "" {
		return &ConfigError{"Join", "needs Checkpoints.Dir: a joining replica starts from a peer's checkpoint"}
	}
	if ck := c.Checkpoints; ck.Dir != "" {
		if c.ClusterID == 0 {
			return &ConfigError{"ClusterID", "0: a replica with checkpoints needs its cluster's ID, which every checkpoint records"}
		}
		if ck.Bytes < 1 {
			return &ConfigError{"Checkpoints.Bytes", fmt.Sprintf("%d, need at least 1", ck.Bytes)}
		}
		if ck.Keep < 1 {
			return &ConfigError{"Checkpoints.Keep", fmt.Sprintf("%d, need at least 1", ck.Keep)}
		}
		if ck.ChunkBytes < 1 || ck.ChunkBytes > MaxCommandBytes {
			return &ConfigError{"Checkpoints.ChunkBytes", fmt.Sprintf("%d, need 1 to MaxCommandBytes (%d)", ck.ChunkBytes, MaxCommandBytes)}
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
		ID: c.ID, Members: c.Members, Alpha: c.Alpha, ElectionTicks: c.ElectionTicks, HeartbeatTicks: c.HeartbeatTicks,
		Window: c.Window, MaxPending: c.MaxPending, MaxCatchUpEntries: 256, PreVote: true, Seed: seed,
		LeaseTicks: max(c.LeaseTicks, 0), MaxDriftPercent: c.MaxClockDriftPercent,
	}
}
