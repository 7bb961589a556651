package checkpoint

import (
	"errors"
	"fmt"
)

// CorruptionError says that a checkpoint file is damaged: a bad header, a
// block whose checksum does not match, a file shorter or longer than its
// header says. File is the file's path and Offset the byte offset of the
// damaged structure (0 for the header as a whole, a field's offset for a
// field with an impossible value, a block's first byte for a bad block, the
// file's size for a file cut short).
type CorruptionError struct {
	File   string
	Offset int64
	Reason string
}

func (e *CorruptionError) Error() string {
	return fmt.Sprintf("checkpoint corrupt: %s at offset %d: %s", e.File, e.Offset, e.Reason)
}

// MismatchError says that a received checkpoint is intact but not the one
// expected: another cluster's, another slot's, or another size than the
// sender announced. The Receiver refuses it.
type MismatchError struct {
	File  string
	Field string // "cluster", "slot" or "size"
	Want  uint64
	Found uint64
}

func (e *MismatchError) Error() string {
	return fmt.Sprintf("checkpoint: received %s refused: its %s is %d, expected %d", e.File, e.Field, e.Found, e.Want)
}

// ErrNoCheckpoint is returned (possibly wrapped, test with errors.Is) by
// OpenNewestValid when a directory holds no checkpoint that verifies.
var ErrNoCheckpoint = errors.New("checkpoint: no valid checkpoint")

// ErrReceiverDone is returned by a Receiver's methods after Finish or Abort.
var ErrReceiverDone = errors.New("checkpoint: receiver already finished or aborted")

func corrupt(file string, off int64, format string, args ...any) *CorruptionError {
	return &CorruptionError{File: file, Offset: off, Reason: fmt.Sprintf(format, args...)}
}
