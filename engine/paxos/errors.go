package paxos

import (
	"errors"
	"fmt"
)

// ErrNotLeader is returned by Propose on a replica that is not the leader.
// Status().Leader hints at the replica believed to lead (0 if unknown).
var ErrNotLeader = errors.New("paxos: not the leader")

// ErrQueueFull is returned by Propose when the window is full and
// Config.MaxPending proposals already wait for room. Retry after the next
// Advance.
var ErrQueueFull = errors.New("paxos: proposal queue full")

// MessageError says why Step refused a message; a refused message changes
// nothing. Messages come from outside the replica, so a malformed one is an
// error, never a panic.
type MessageError struct {
	Kind   Refusal
	Reason string
}

func (e *MessageError) Error() string {
	if e.Kind == RefusedSlotTooFar {
		return "paxos: message refused: " + e.Reason
	}
	return "paxos: invalid message: " + e.Reason
}

// Refusal is the kind of a MessageError, for counting.
type Refusal uint8

const (
	// RefusedMalformed: the message is wrong whatever the replica's state
	// (type, addressee, sender, ballot, entry kinds, ranges).
	RefusedMalformed Refusal = iota
	// RefusedSlotTooFar: the message carries a slot more than
	// Config.MaxSlotsAhead beyond this replica's commit index.
	RefusedSlotTooFar
)

func (r Refusal) String() string {
	switch r {
	case RefusedMalformed:
		return "malformed"
	case RefusedSlotTooFar:
		return "slot_too_far"
	}
	return fmt.Sprintf("refusal(%d)", uint8(r))
}

func badMessage(format string, args ...any) error {
	return &MessageError{Kind: RefusedMalformed, Reason: fmt.Sprintf(format, args...)}
}

// ConfigError names the Config field that is wrong and why.
type ConfigError struct {
	Field  string
	Reason string
}

func (e *ConfigError) Error() string { return "paxos: config field " + e.Field + ": " + e.Reason }

// RestoreError says why the persisted state handed to New cannot be used.
type RestoreError struct {
	Reason string
}

func (e *RestoreError) Error() string { return "paxos: cannot restore persisted state: " + e.Reason }
