package storage

import (
	"errors"
	"fmt"
)

// CorruptionError says why a WAL cannot be opened: damage that is not a torn
// tail, so the records it hides may have been durable. File is the path of
// the segment and Offset the byte offset in it of the first bad record (0 for
// a bad or missing segment header or a segment of another log; the file's
// size for a segment shorter than it was preallocated to).
type CorruptionError struct {
	File   string
	Offset int64
	Reason string
}

func (e *CorruptionError) Error() string {
	return fmt.Sprintf("storage: wal corrupt: %s at offset %d: %s", e.File, e.Offset, e.Reason)
}

// ErrWALClosed is returned by a WAL's methods after Close.
var ErrWALClosed = errors.New("storage: wal is closed")

// ErrValueTooLarge is returned by Append for an entry whose value data is
// longer than MaxValueSize; nothing of that Append is recorded.
var ErrValueTooLarge = errors.New("storage: wal: value larger than MaxValueSize")

// FailedError is returned by every WAL method after a write, sync or
// segment operation failed. A failed fdatasync leaves the file's durable
// contents unknown (the kernel may have dropped the dirty pages and will not
// report it again), so the WAL refuses all further use: the caller must close
// it and open the directory again, which recovers what is actually there.
type FailedError struct {
	Op   string // what failed: "write", "sync", "rollover", ...
	File string
	Err  error
}

func (e *FailedError) Error() string {
	return fmt.Sprintf("storage: wal unusable after %s of %s failed: %v", e.Op, e.File, e.Err)
}

func (e *FailedError) Unwrap() error { return e.Err }
