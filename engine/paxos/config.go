package paxos

import (
	"fmt"
	"slices"

	"github.com/vestalabs/vesta/engine/wire"
)

// Config fixes a replica's identity, its cluster and its timing. All durations
// are in ticks; the caller decides how long a tick is.
type Config struct {
	// ID is this replica; it must be one of Members, unless the replica
	// restarts from a checkpoint that records its configurations.
	ID wire.ReplicaID
	// Members lists the replicas a cluster is created with, at most 64, no
	// duplicates, no 0; all of them vote. It is used only when the
	// persisted state records no configuration (Persisted.Memberships):
	// after that the member set comes from the log (membership.go).
	Members []wire.ReplicaID
	// Alpha is α for a new cluster: a membership change chosen in slot s
	// governs from slot s+α on, and a leader keeps at most α slots beyond
	// its commit index in flight, whatever its Window. Like Members, it is
	// used only when the persisted state records no configuration, and
	// every first member must be given the same. 0: DefaultAlpha.
	Alpha int
	// ElectionTicks is the base election timeout: a follower that hears no
	// leader for a random number of ticks in [ElectionTicks, 2*ElectionTicks)
	// starts an election. A leader that hears from no quorum for as long steps down.
	ElectionTicks int
	// HeartbeatTicks is how often a leader sends heartbeats and retransmits
	// unacknowledged accepts. It must be below ElectionTicks.
	HeartbeatTicks int
	// Window is W: the most slots a leader keeps in flight beyond its commit index.
	Window int
	// MaxPending is how many proposals may wait for room in the window.
	MaxPending int
	// MaxInflightBytes bounds the value bytes a leader keeps proposed and
	// not yet chosen, besides Window's bound in slots; the window always
	// admits one slot (0: DefaultMaxInflightBytes). It bounds what a
	// promise carries after the leader fails, which must fit in one frame
	// of the transport: Window times the largest batch may not.
	MaxInflightBytes int
	// MaxCatchUpEntries bounds the chosen entries sent in one catch-up reply.
	MaxCatchUpEntries int
	// MaxSlotsAhead bounds how far beyond its own commit index a replica
	// takes slots from its peers (Accept, Promise and CatchUp entries):
	// each slot costs memory up to it, so a message beyond is refused
	// whole (a *MessageError of kind RefusedSlotTooFar). A correct leader
	// never sends a slot more than its window beyond its commit index; a
	// replica that lags by more than this catches up (from heartbeats'
	// commit index) before it votes again. 0: DefaultMaxSlotsAhead or
	// 4*Window, whichever is larger; otherwise at least 2*Window.
	MaxSlotsAhead int
	// MaxCatchUpBytes bounds the value bytes of one catch-up reply, which
	// always carries at least one entry (0: DefaultMaxCatchUpBytes). Keep it
	// well under the transport's frame limit: a reply too large to send
	// would leave the replica asking for it behind for good.
	MaxCatchUpBytes int
	// PreVote makes a replica whose election timer runs out ask first
	// whether a quorum would take part in its election, and campaign only
	// then (prevote.go): a replica that was cut off no longer unseats a live
	// leader when it is back. Replicas answer pre-votes either way.
	PreVote bool
	// LeaseTicks, if positive, turns leader leases on (lease.go): a leader
	// renews its lease with a probe round every HeartbeatTicks, and reads
	// with LeaseRead need no round while it holds. An acceptor then refuses
	// to promise another ballot for LeaseTicks after it granted a lease, and
	// for LeaseTicks after it starts. It must be below ElectionTicks, so
	// that leases delay no election a leader's silence starts.
	LeaseTicks int
	// MaxDriftPercent bounds how much faster, in percent, any replica's
	// clock may run than another's; leases are safe only within it.
	MaxDriftPercent int
	// Seed seeds the election-timeout randomization (deterministically).
	Seed uint64
}

// DefaultAlpha is Config.Alpha when zero: above the default Window, so
// that pipelining is not capped by it.
const DefaultAlpha = 1024

func (c *Config) alpha() int {
	if c.Alpha == 0 {
		return DefaultAlpha
	}
	return c.Alpha
}

// Bootstrap is the configuration a cluster is created with: Members, all
// voting, from slot 0, epoch 1, with Alpha. A replica whose persisted state
// records no configuration starts from it.
func (c *Config) Bootstrap() Membership {
	return Membership{Epoch: 1, Alpha: uint64(c.alpha()), Voters: slices.Clone(c.Members)}
}

// DefaultMaxCatchUpBytes is MaxCatchUpBytes when zero: a quarter of the
// wire codec's default frame limit.
const DefaultMaxCatchUpBytes = 4 << 20

// DefaultMaxSlotsAhead is MaxSlotsAhead when zero (unless 4*Window is
// larger): a slot's state is about 64 bytes, so a peer can make a replica
// hold at most a few MiB of slots it has not reached.
const DefaultMaxSlotsAhead = 1 << 16

// maxSlotsAhead is MaxSlotsAhead with its default applied.
func (c *Config) maxSlotsAhead() wire.Slot {
	if c.MaxSlotsAhead == 0 {
		return wire.Slot(max(DefaultMaxSlotsAhead, 4*c.Window))
	}
	return wire.Slot(c.MaxSlotsAhead)
}

// DefaultMaxInflightBytes is MaxInflightBytes when zero: with values of at
// most that much above a leader's commit index, a promise stays well under
// the wire codec's default frame limit of 16 MiB.
const DefaultMaxInflightBytes = 4 << 20

// DefaultConfig returns a Config with sensible timing for a tick of about
// 10 ms on a LAN; the caller sets ID and Members.
func DefaultConfig() Config {
	return Config{
		ElectionTicks:     20,
		HeartbeatTicks:    3,
		Window:            256,
		MaxPending:        4096,
		MaxCatchUpEntries: 256,
		PreVote:           true,
	}
}

// Validate reports the first field that is wrong, by name.
func (c *Config) Validate() error {
	if len(c.Members) == 0 {
		return &ConfigError{"Members", "empty"}
	}
	if len(c.Members) > 64 {
		return &ConfigError{"Members", fmt.Sprintf("%d members, at most 64", len(c.Members))}
	}
	for i, m := range c.Members {
		if m == 0 {
			return &ConfigError{"Members", "replica ID 0 is reserved"}
		}
		if slices.Index(c.Members[:i], m) >= 0 {
			return &ConfigError{"Members", fmt.Sprintf("replica %d listed twice", m)}
		}
	}
	if c.ID == 0 {
		return &ConfigError{"ID", "replica ID 0 is reserved"}
	}
	if c.Alpha < 0 {
		return &ConfigError{"Alpha", fmt.Sprintf("%d, need at least 1 (or 0 for the default)", c.Alpha)}
	}
	if c.ElectionTicks < 2 {
		return &ConfigError{"ElectionTicks", fmt.Sprintf("%d, need at least 2", c.ElectionTicks)}
	}
	if c.HeartbeatTicks < 1 || c.HeartbeatTicks >= c.ElectionTicks {
		return &ConfigError{"HeartbeatTicks", fmt.Sprintf("%d, need 1 <= HeartbeatTicks < ElectionTicks (%d)", c.HeartbeatTicks, c.ElectionTicks)}
	}
	if c.Window < 1 {
		return &ConfigError{"Window", fmt.Sprintf("%d, need at least 1", c.Window)}
	}
	if c.MaxPending < 0 {
		return &ConfigError{"MaxPending", fmt.Sprintf("%d, need at least 0", c.MaxPending)}
	}
	if c.MaxInflightBytes < 0 {
		return &ConfigError{"MaxInflightBytes", fmt.Sprintf("%d, need 0 (the default) or more", c.MaxInflightBytes)}
	}
	if c.MaxCatchUpBytes < 0 {
		return &ConfigError{"MaxCatchUpBytes", fmt.Sprintf("%d, need 0 (the default) or more", c.MaxCatchUpBytes)}
	}
	if c.MaxCatchUpEntries < 1 {
		return &ConfigError{"MaxCatchUpEntries", fmt.Sprintf("%d, need at least 1", c.MaxCatchUpEntries)}
	}
	if c.LeaseTicks < 0 || (c.LeaseTicks > 0 && c.LeaseTicks >= c.ElectionTicks) {
		return &ConfigError{"LeaseTicks", fmt.Sprintf("%d, need 0 (no leases) or 1 <= LeaseTicks < ElectionTicks (%d)", c.LeaseTicks, c.ElectionTicks)}
	}
	if c.MaxDriftPercent < 0 || c.MaxDriftPercent > 1000 {
		return &ConfigError{"MaxDriftPercent", fmt.Sprintf("%d, need 0 to 1000", c.MaxDriftPercent)}
	}
	if c.LeaseTicks > 0 && c.leaseSpan() == 0 {
		return &ConfigError{"LeaseTicks", fmt.Sprintf("%d is too short for MaxDriftPercent %d: a lease would last no tick (need LeaseTicks*100/(100+MaxDriftPercent) > 2)", c.LeaseTicks, c.MaxDriftPercent)}
	}
	if c.MaxSlotsAhead != 0 && (c.MaxSlotsAhead < 2*c.Window || c.MaxSlotsAhead < c.MaxCatchUpEntries) {
		return &ConfigError{"MaxSlotsAhead", fmt.Sprintf("%d, need 0 (the default) or at least 2*Window (%d) and MaxCatchUpEntries (%d)", c.MaxSlotsAhead, 2*c.Window, c.MaxCatchUpEntries)}
	}
	return nil
}
