package engine

import (
	"errors"
	"fmt"

	"github.com/vestalabs/vesta/engine/wire"
)

// ErrNotLeader means the command was not proposed because this replica does
// not lead. It is safe to submit the command to another replica. Use errors.As
// with *NotLeaderError for a hint of the leader.
var ErrNotLeader = errors.New("vesta: not the leader")

// NotLeaderError is the ErrNotLeader a replica returns, with the replica it
// believes leads (0 when it knows none).
type NotLeaderError struct {
	Leader wire.ReplicaID
}

func (e *NotLeaderError) Error() string {
	if e.Leader == 0 {
		return "vesta: not the leader (leader unknown)"
	}
	return fmt.Sprintf("vesta: not the leader (replica %d leads)", e.Leader)
}

// Unwrap makes errors.Is(err, ErrNotLeader) true.
func (e *NotLeaderError) Unwrap() error { return ErrNotLeader }

// ErrStopped means the replica was stopped (or failed) before the command's
// outcome was known. A replica that failed returns a *FailedError, which
// matches ErrStopped and names the cause.
var ErrStopped = errors.New("vesta: replica stopped")

// FailedError is what calls get from a replica that failed: its log could
// not persist (a full log, a failed sync), so it stopped at once rather
// than risk revealing votes that are not durable. Restart it once the
// cause is fixed. errors.Is(err, ErrStopped) holds, and errors.Is/As reach
// the cause.
type FailedError struct {
	Cause error
}

func (e *FailedError) Error() string { return "vesta: replica failed and stopped: " + e.Cause.Error() }

// Is makes errors.Is(err, ErrStopped) true.
func (e *FailedError) Is(target error) bool { return target == ErrStopped }

// Unwrap returns the cause.
func (e *FailedError) Unwrap() error { return e.Cause }

// ErrOutcomeUnknown means the command was proposed, then this replica lost
// its leadership before the command was applied: it may or may not be
// applied. Retry it with a mechanism that makes retries idempotent (a client
// session, as vestad's key-value store has).
var ErrOutcomeUnknown = errors.New("vesta: leadership lost; the command may or may not be applied")

// ErrBusy means too many commands wait to be proposed; retry later.
var ErrBusy = errors.New("vesta: too many commands waiting to be proposed")

// ErrTooLarge means the command is larger than MaxCommandBytes; nothing was
// proposed.
var ErrTooLarge = fmt.Errorf("vesta: command larger than MaxCommandBytes (%d bytes)", MaxCommandBytes)

// ConfigError names the Config field that is wrong and why.
type ConfigError struct {
	Field  string
	Reason string
}

func (e *ConfigError) Error() string { return "vesta: config field " + e.Field + ": " + e.Reason }
