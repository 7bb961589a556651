// Package sim runs whole Vesta clusters in one goroutine from a seed: a
// simulated network that loses, duplicates, delays and reorders messages and
// partitions replicas (symmetrically or not); crashes that keep only what was
// persisted (the last write possibly torn); replicas whose clocks tick at
// different rates; and clients that drive a key-value state machine. Every
// run is checked for safety (no slot ever has two chosen values; every
// replica's applied sequence is a prefix of the longest; the client history is
// linearizable) and for recovery (after faults heal, replicas converge and
// commands complete within a stated bound). The same Options always produce
// the same run, so a failing seed replays exactly.
package sim

import (
	"io"

	"github.com/vestalabs/vesta/engine/paxos"
)

// Options configure one simulated run. The zero value of a field means its
// default (see Defaults); Seed alone decides everything random.
type Options struct {
	Seed     uint64
	Replicas int // 3 or 5
	Clients  int
	Keys     int
	// FaultTicks is how long faults are injected, in nominal ticks; then they
	// heal. HealTicks is how long the run goes on after healing.
	FaultTicks int
	HealTicks  int
	// NoFaults runs the whole seed on a healthy network with no crashes.
	NoFaults bool
	// Window is the leader's pipeline window W.
	Window int
	// PmemLog keeps each replica's log on a simulated persistent-memory
	// device (pmem.SimDevice) instead of the simulator's disk model: a crash
	// keeps a random subset of the 8-byte words stored since the last fence,
	// and the replica restarts from what the pmem log recovers.
	PmemLog bool
	// CheckpointEvery is how many applied slots a replica lets pass between
	// checkpoints of its state machine (each written durably after a delay
	// and lost if it crashes first); after each the replica compacts its log
	// and a peer asking for slots below it gets the checkpoint (state
	// transfer). Small by default, so that transfers happen in most seeds.
	// NoCheckpoints turns checkpoints off.
	CheckpointEvery int
	NoCheckpoints   bool
	// NoReadIndex sends every get through the log. By default a third of
	// them are served by the leader's read index instead (paxos read.go),
	// and a third under its lease (paxos lease.go); the linearizability
	// checker covers them like any operation.
	NoReadIndex bool
	// NoLeaseReads serves no get under a lease (those gets use the read
	// index instead).
	NoLeaseReads bool
	// DriftBeyondBound makes a leader's clock run sixteen times slower than
	// its followers', far beyond the 50% their leases assume: lease reads
	// may then return stale values (and only they: read-index reads assume
	// nothing of clocks).
	DriftBeyondBound bool
	// NoHandovers: leaders never hand leadership over. By default a leader
	// starts a handover with chance 1/200 a tick, to a random peer or the
	// most caught-up one.
	NoHandovers bool
	// Spares are replicas beyond the first Replicas that start outside the
	// cluster: leaders add them (as learners, then voters, or in place of a
	// voter), promote, remove and replace members at random while faults
	// run (paxos membership.go). Removed replicas stop for good.
	// NoMembership keeps the member set fixed (and Spares at 0).
	Spares       int
	NoMembership bool
	// NodeHook, if set, is called with every paxos.Node the simulator creates
	// (at start and on each restart). Test code uses it to plant bugs.
	NodeHook func(*paxos.Node)
	// Trace, if set, receives a readable line for every event.
	Trace io.Writer
}

// Bounds the liveness checker states: once faults heal, the cluster has
// RecoveryTicks to elect a leader and catch up; every command a client issues
// after that must complete, and every replica must hold the same commit index
// by the end of the run.
const RecoveryTicks = 80

// Defaults fills in every zero field.
func (o Options) withDefaults() Options {
	if o.Replicas == 0 {
		o.Replicas = 3
	}
	if o.Clients == 0 {
		o.Clients = 6
	}
	if o.Keys == 0 {
		o.Keys = 4
	}
	if o.FaultTicks == 0 {
		o.FaultTicks = 300
	}
	if o.HealTicks == 0 {
		o.HealTicks = 250
	}
	if o.Window == 0 {
		o.Window = 8
	}
	if o.NoMembership {
		o.Spares = 0
	} else if o.Spares == 0 {
		o.Spares = 2
	}
	if o.CheckpointEvery == 0 {
		o.CheckpointEvery = 16
	}
	return o
}

// Violation is one failed check of one run.
type Violation struct {
	Check  string // which checker: "chosen", "ballot", "applied", "digest", "linearizability", "liveness", "log", "panic"
	Detail string
}

// Result is the outcome of one run.
type Result struct {
	Seed       uint64
	Profile    string // the faults this seed drew
	Commands   int    // commands committed (applied by the most advanced replica)
	Slots      int    // slots chosen
	OpsOK      int    // client operations that completed
	OpsUnknown int    // client operations whose outcome the client never learned
	Elections  int    // leaders elected
	// ReadIndexReads counts gets served by a read index, without the log.
	ReadIndexReads int
	// LeaseReads counts gets asked as lease reads and served (under the
	// lease, or by a read index when the leader held none).
	LeaseReads int
	// Handovers counts the handovers leaders started.
	Handovers int
	// MembershipChanges counts changes proposed by leaders;
	// MembershipsChosen those chosen (as the checker learned them);
	// Removed the replicas that learned they were removed and stopped.
	MembershipChanges int
	MembershipsChosen int
	Removed           int

	Crashes int
	// Checkpoints counts checkpoints written (durably, not lost to a
	// crash); Transfers counts checkpoints installed by a replica that was
	// behind its peers' logs (state transfer).
	Checkpoints int
	Transfers   int
	Violations  []Violation
}
