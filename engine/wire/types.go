// Package wire defines the messages replicas exchange and the values they agree
// on. It is the leaf of the engine: the protocol core, the logs and the
// transports all speak these types. The binary codec lives beside them.
package wire

import (
	"bytes"
	"fmt"
	"math"
)

// ReplicaID names a replica within one cluster. Zero is never a valid ID.
type ReplicaID uint32

// Slot is a position in the replicated log, counted from 0.
type Slot uint64

// Ballot orders leadership attempts: (Round, Replica), compared
// lexicographically. The zero Ballot is below every ballot a replica uses.
type Ballot struct {
	Round   uint64
	Replica ReplicaID
}

// BallotChosen marks an entry whose value is known to be chosen. It compares
// above every real ballot, so a phase-1 merge that meets it always keeps it.
var BallotChosen = Ballot{Round: math.MaxUint64, Replica: math.MaxUint32}

// Less reports whether b orders strictly before o.
func (b Ballot) Less(o Ballot) bool {
	if b.Round != o.Round {
		return b.Round < o.Round
	}
	return b.Replica < o.Replica
}

// IsZero reports whether b is the zero ballot.
func (b Ballot) IsZero() bool { return b == Ballot{} }

func (b Ballot) String() string {
	if b == BallotChosen {
		return "chosen"
	}
	return fmt.Sprintf("%d.%d", b.Round, b.Replica)
}

// ValueKind says what a slot's value is.
type ValueKind uint8

const (
	// ValueBatch is a batch of client commands, opaque to the protocol.
	ValueBatch ValueKind = 1
	// ValueNoop fills a hole a new leader found; it applies as nothing.
	ValueNoop ValueKind = 2
	// ValueConfig changes the membership: chosen in slot s, it governs
	// the slots from s+α on (engine/paxos, membership.go). Its Data is the
	// new member set in paxos's encoding.
	ValueConfig ValueKind = 3
)

// Value is what a slot holds once chosen. Data is owned by whoever holds the
// Value; the protocol never modifies it, so a Value may be shared read-only.
type Value struct {
	Kind ValueKind
	Data []byte
}

// Valid reports whether k is a kind the protocol knows.
func (k ValueKind) Valid() bool { return k >= ValueBatch && k <= ValueConfig }

// Noop is the value a new leader proposes for a slot nobody reported.
var Noop = Value{Kind: ValueNoop}

// Equal reports whether two values are identical.
func (v Value) Equal(o Value) bool { return v.Kind == o.Kind && bytes.Equal(v.Data, o.Data) }

func (v Value) String() string {
	switch v.Kind {
	case ValueNoop:
		return "noop"
	case ValueConfig:
		return fmt.Sprintf("config(%dB)", len(v.Data))
	case ValueBatch:
		if len(v.Data) <= 16 {
			return fmt.Sprintf("batch(%q)", v.Data)
		}
		return fmt.Sprintf("batch(%dB)", len(v.Data))
	default:
		return fmt.Sprintf("value(kind=%d,%dB)", v.Kind, len(v.Data))
	}
}

// Entry is a value in a slot, with the ballot in which it was accepted
// (BallotChosen when it is known to be chosen).
type Entry struct {
	Slot   Slot
	Ballot Ballot
	Value  Value
}

// SlotRange is the half-open range of slots [Lo, Hi).
type SlotRange struct {
	Lo, Hi Slot
}

// MsgType says what a message is.
type MsgType uint8

const (
	// MsgPrepare is phase 1a: "promise me Ballot for every slot from Slot on".
	MsgPrepare MsgType = 1
	// MsgPromise is phase 1b: the promise, with every accepted entry at or
	// above the prepare's Slot, and the acceptor's commit index.
	MsgPromise MsgType = 2
	// MsgNack refuses a prepare or accept; Ballot is the higher promise held.
	MsgNack MsgType = 3
	// MsgAccept is phase 2a: accept Entries in Ballot. Commit rides along.
	MsgAccept MsgType = 4
	// MsgAccepted is phase 2b: the acceptor accepted Ranges in Ballot. An
	// empty Ranges answers a heartbeat. Commit is the acceptor's commit index.
	MsgAccepted MsgType = 5
	// MsgHeartbeat carries the leader's Ballot and Commit when it has nothing
	// to propose.
	MsgHeartbeat MsgType = 6
	// MsgCatchUpRequest asks for the chosen values of slots [Slot, Commit).
	MsgCatchUpRequest MsgType = 7
	// MsgCatchUp answers with chosen Entries (their Ballot is BallotChosen).
	MsgCatchUp MsgType = 8
	// MsgPreVote asks, before an election, whether the receiver would take
	// part: "I would campaign with Ballot; my commit index is Slot". It
	// changes nothing at either end (Raft's pre-vote).
	MsgPreVote MsgType = 9
	// MsgPreVoteGrant says yes to the MsgPreVote for Ballot.
	MsgPreVoteGrant MsgType = 10
	// MsgSnapshotChunk carries part of a checkpoint file to a replica that
	// is behind its peers' logs (state transfer; the replica runtime, not
	// the protocol core, handles it): Slot is the checkpoint's slot, Commit
	// the chunk's byte offset in the file, Ballot.Round the file's size, and
	// the one entry's Value.Data the bytes. The file's own per-block
	// checksums protect it end to end.
	MsgSnapshotChunk MsgType = 11
	// MsgSnapshotAck answers chunks of the checkpoint of Slot: Commit is the
	// byte offset the receiver wants next (the whole size once it holds the
	// file, or when it does not need it). A sender goes back to it when it
	// is below what was sent: that is how a transfer resumes after a lost
	// chunk or a dropped connection.
	MsgSnapshotAck MsgType = 12
	// MsgSnapshotRequest asks for a checkpoint: "send me your newest
	// checkpoint if its slot is at least Slot". A replica sends it at start
	// when it holds no valid checkpoint and its log does not reach back to
	// where its commit index needs it (see engine's Checkpoints.FetchTimeout);
	// a peer holding such a checkpoint answers with MsgSnapshotChunks.
	MsgSnapshotRequest MsgType = 13
	// MsgReadProbe asks whether the receiver still takes the leader's
	// Ballot: a read-index round (paxos read.go). Slot is the round's number.
	// It changes nothing at the receiver.
	MsgReadProbe MsgType = 14
	// MsgReadProbeAck answers the MsgReadProbe of round Slot: when the
	// receiver processed it, it had promised no ballot above Ballot.
	MsgReadProbeAck MsgType = 15
	// MsgTimeoutNow hands leadership over (paxos handover.go): the leader
	// of Ballot tells the receiver, which holds everything chosen up to
	// Commit, to run for election at once.
	MsgTimeoutNow MsgType = 16
)

// Transfer reports whether t is a state-transfer message, which the replica
// runtime handles and the protocol core never sees.
func (t MsgType) Transfer() bool {
	return t == MsgSnapshotChunk || t == MsgSnapshotAck || t == MsgSnapshotRequest
}

// Bulk reports whether messages of type t are bulk data that a transport
// sends with a priority below the protocol's messages (see
// transport.Transport): today only MsgSnapshotChunk, the chunks of a state
// transfer, which are large and which nothing waits for at a fine grain.
func (t MsgType) Bulk() bool { return t == MsgSnapshotChunk }

var msgTypeNames = [...]string{
	MsgPrepare: "Prepare", MsgPromise: "Promise", MsgNack: "Nack", MsgAccept: "Accept",
	MsgAccepted: "Accepted", MsgHeartbeat: "Heartbeat", MsgCatchUpRequest: "CatchUpRequest",
	MsgCatchUp: "CatchUp", MsgPreVote: "PreVote", MsgPreVoteGrant: "PreVoteGrant",
	MsgSnapshotChunk: "SnapshotChunk", MsgSnapshotAck: "SnapshotAck", MsgSnapshotRequest: "SnapshotRequest",
	MsgReadProbe: "ReadProbe", MsgReadProbeAck: "ReadProbeAck", MsgTimeoutNow: "TimeoutNow",
}

func (t MsgType) String() string {
	if int(t) < len(msgTypeNames) && msgTypeNames[t] != "" {
		return msgTypeNames[t]
	}
	return fmt.Sprintf("MsgType(%d)", uint8(t))
}

// Valid reports whether t is a known message type.
func (t MsgType) Valid() bool { return int(t) < len(msgTypeNames) && msgTypeNames[t] != "" }

// Message is one protocol message. One flat struct serves every type; the
// comment on each MsgType says which fields it uses.
type Message struct {
	Type   MsgType
	From   ReplicaID
	To     ReplicaID
	Ballot Ballot
	// Slot: Prepare's first slot; CatchUpRequest's first wanted slot;
	// Accept's and Heartbeat's release point (every member holds every
	// chosen value below it durably, so receivers may drop those values).
	Slot Slot
	// Commit: the sender's commit index (every slot below it is chosen);
	// CatchUpRequest's end of the wanted range.
	Commit  Slot
	Entries []Entry
	Ranges  []SlotRange
}

func (m Message) String() string {
	s := fmt.Sprintf("%v %d->%d b=%v", m.Type, m.From, m.To, m.Ballot)
	switch m.Type {
	case MsgPrepare:
		s += fmt.Sprintf(" from=%d", m.Slot)
	case MsgCatchUpRequest:
		s += fmt.Sprintf(" want=[%d,%d)", m.Slot, m.Commit)
		return s
	case MsgSnapshotChunk:
		n := 0
		if len(m.Entries) > 0 {
			n = len(m.Entries[0].Value.Data)
		}
		return s + fmt.Sprintf(" checkpoint=%d offset=%d size=%d bytes=%d", m.Slot, m.Commit, m.Ballot.Round, n)
	case MsgSnapshotAck:
		return s + fmt.Sprintf(" checkpoint=%d next=%d", m.Slot, m.Commit)
	case MsgSnapshotRequest:
		return s + fmt.Sprintf(" at-least=%d", m.Slot)
	case MsgReadProbe, MsgReadProbeAck:
		return s + fmt.Sprintf(" round=%d", m.Slot)
	case MsgAccept, MsgHeartbeat:
		if m.Slot > 0 {
			s += fmt.Sprintf(" release=%d", m.Slot)
		}
	}
	s += fmt.Sprintf(" commit=%d", m.Commit)
	if len(m.Entries) > 0 {
		s += fmt.Sprintf(" entries=%d[%d..%d]", len(m.Entries), m.Entries[0].Slot, m.Entries[len(m.Entries)-1].Slot)
	}
	if len(m.Ranges) > 0 {
		s += fmt.Sprintf(" ranges=%v", m.Ranges)
	}
	return s
}
