package pmem

import (
	"errors"
	"fmt"
)

var (
	// ErrFull is returned (wrapped, with sizes) by Append when the record
	// does not fit in the free space. The log never overwrites live records
	// and never waits: the caller frees space with Compact after a snapshot,
	// then retries. Nothing of the failed Append was applied.
	ErrFull = errors.New("pmem: log full")
	// ErrTooLarge is returned (wrapped) by Append for a record larger than
	// half the data area; such a record could never be placed safely.
	ErrTooLarge = errors.New("pmem: record too large for this log")
	// ErrClosed is returned by every method after Close.
	ErrClosed = errors.New("pmem: log closed")
	// ErrNotDAX is returned (wrapped, with the reason) by Open when
	// Options.RequireDAX is set and MAP_SYNC is not in force.
	ErrNotDAX = errors.New("pmem: not a DAX mapping (MAP_SYNC not in force)")
	// ErrLocked is returned by Open when another Log holds the file.
	ErrLocked = errors.New("pmem: log file is locked by another opener")
	// ErrSeqExhausted is returned when 2^48 commits have been made.
	ErrSeqExhausted = errors.New("pmem: metadata sequence numbers exhausted")
)

// CorruptError reports damage found by recovery: a checksum mismatch or an
// inconsistency inside the committed part of the log. Offset is the byte
// offset in the file.
type CorruptError struct {
	Path   string
	Offset int64
	Reason string
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("pmem: %s: corrupt at offset %d: %s", e.Path, e.Offset, e.Reason)
}

// SyncError reports a failed fence (an msync error). The log refuses all
// further writes: what reached the media is unknown, so nothing more may be
// acknowledged. Reopen to recover.
type SyncError struct {
	Path string
	Err  error
}

func (e *SyncError) Error() string { return fmt.Sprintf("pmem: %s: sync failed: %v", e.Path, e.Err) }
func (e *SyncError) Unwrap() error { return e.Err }

// VersionError refuses a log file written in a layout version this build
// does not read (layout.go says what changed between versions).
type VersionError struct {
	Path    string
	Version uint32 // the file's
}

func (e *VersionError) Error() string {
	if e.Version == 1 {
		return fmt.Sprintf("pmem: %s: log format version 1, which records no identity (cluster, replica, members); "+
			"this build reads version %d only and will not guess whose promises and votes the file holds. "+
			"Move the file away and bootstrap the replica afresh (a replica that lost its log joins as a new member)",
			e.Path, formatVersion)
	}
	return fmt.Sprintf("pmem: %s: log format version %d; this build reads version %d only", e.Path, e.Version, formatVersion)
}

// SpaceError refuses a log file whose blocks the file system cannot provide.
// A mapped file with unallocated blocks works until a store reaches a page
// the file system cannot back, and then the process dies of SIGBUS (a store
// has no error to return); so Open allocates every block of the file first
// and refuses here, at start, instead.
type SpaceError struct {
	Path      string
	Size      int64 // the log file's size
	Allocated int64 // bytes of it already allocated (0 for a new file)
	Free      int64 // bytes free in the file system then (statfs f_bavail); -1 if unknown
	Err       error // what the allocation returned: ENOSPC, EDQUOT or ENOMEM
}

func (e *SpaceError) Error() string {
	what := "cannot reserve " + sizeString(e.Size) + " for a new log file"
	if e.Allocated > 0 {
		what = "log file of " + sizeString(e.Size) + " has only " + sizeString(e.Allocated) +
			" allocated, and the other " + sizeString(e.Size-e.Allocated) + " cannot be allocated"
	}
	free := "an unknown amount"
	if e.Free >= 0 {
		free = sizeString(e.Free)
	}
	return fmt.Sprintf("pmem: %s: %s: the file system has %s free (%v); "+
		"free space there or ask for a smaller log (Options.Size; vestad -pmem-size)", e.Path, what, free, e.Err)
}

func (e *SpaceError) Unwrap() error { return e.Err }

// sizeString writes a byte count exactly and, from 1 KiB, in binary units.
func sizeString(n int64) string {
	s := fmt.Sprintf("%d bytes", n)
	switch {
	case n >= 1<<30:
		s += fmt.Sprintf(" (%.1f GiB)", float64(n)/(1<<30))
	case n >= 1<<20:
		s += fmt.Sprintf(" (%.1f MiB)", float64(n)/(1<<20))
	case n >= 1<<10:
		s += fmt.Sprintf(" (%.1f KiB)", float64(n)/(1<<10))
	}
	return s
}

func errFull(need, free, capacity uint64) error {
	return fmt.Errorf("%w: need %d bytes, %d of %d free; checkpoints free space (vestad -checkpoint-bytes, a larger -pmem-size)", ErrFull, need, free, capacity)
}

func errTooLarge(n, max int) error {
	return fmt.Errorf("%w: payload of %d bytes, at most %d", ErrTooLarge, n, max)
}
