package wire

import (
	"errors"
	"fmt"
)

// The codec's errors. Each names one problem and carries what is needed to
// diagnose it; each has a Reason, a short stable label for counters and logs.

// MagicError: the frame does not start with Magic (not a Vesta frame, or the
// stream lost its framing).
type MagicError struct{ Got uint32 }

func (e *MagicError) Error() string {
	return fmt.Sprintf("wire: bad magic %#08x, want %#08x", e.Got, Magic)
}

// Reason implements Reasoner.
func (e *MagicError) Reason() string { return "bad_magic" }

// VersionError: the frame is of a format version this codec does not read.
type VersionError struct{ Got uint8 }

func (e *VersionError) Error() string {
	return fmt.Sprintf("wire: unknown frame version %d, this codec reads %d", e.Got, Version)
}

// Reason implements Reasoner.
func (e *VersionError) Reason() string { return "unknown_version" }

// ClusterError: the frame comes from another cluster.
type ClusterError struct {
	Got  uint64 // the frame's cluster ID
	Want uint64 // this codec's cluster ID
}

func (e *ClusterError) Error() string {
	return fmt.Sprintf("wire: frame from foreign cluster %#x, this is cluster %#x", e.Got, e.Want)
}

// Reason implements Reasoner.
func (e *ClusterError) Reason() string { return "foreign_cluster" }

// FrameSizeError: the frame (header included) is larger than the limit.
type FrameSizeError struct {
	Size  uint64
	Limit uint64
}

func (e *FrameSizeError) Error() string {
	return fmt.Sprintf("wire: frame of %d bytes exceeds the limit of %d", e.Size, e.Limit)
}

// Reason implements Reasoner.
func (e *FrameSizeError) Reason() string { return "oversized" }

// ChecksumError: the CRC32C computed over the frame differs from its header's.
type ChecksumError struct {
	Got  uint32 // computed
	Want uint32 // carried in the header
}

func (e *ChecksumError) Error() string {
	return fmt.Sprintf("wire: bad CRC32C %#08x, header says %#08x", e.Got, e.Want)
}

// Reason implements Reasoner.
func (e *ChecksumError) Reason() string { return "bad_crc" }

// TruncatedError: the input ends before the part named by What does. Sizes
// count from the start of the frame.
type TruncatedError struct {
	What string
	Need int
	Have int
}

func (e *TruncatedError) Error() string {
	return fmt.Sprintf("wire: truncated %s: need %d bytes, have %d", e.What, e.Need, e.Have)
}

// Reason implements Reasoner.
func (e *TruncatedError) Reason() string { return "truncated" }

// TypeError: the frame's type is not a known MsgType.
type TypeError struct{ Type uint8 }

func (e *TypeError) Error() string {
	if e.Type >= FrameControl {
		return fmt.Sprintf("wire: frame type %#02x is a transport control frame, not a message", e.Type)
	}
	return fmt.Sprintf("wire: unknown message type %d", e.Type)
}

// Reason implements Reasoner.
func (e *TypeError) Reason() string { return "unknown_type" }

// CountError: the payload announces more entries and ranges than it can hold.
type CountError struct {
	Entries, Ranges uint64 // the counts announced
	Need            uint64 // payload bytes their fixed parts alone need
	Room            uint64 // payload bytes left after the message fields
}

func (e *CountError) Error() string {
	return fmt.Sprintf("wire: %d entries and %d ranges need at least %d payload bytes, %d remain",
		e.Entries, e.Ranges, e.Need, e.Room)
}

// Reason implements Reasoner.
func (e *CountError) Reason() string { return "bad_count" }

// FormatError: any other malformation (reserved bytes set, bytes left over).
type FormatError struct {
	Offset int // from the start of the frame
	Msg    string
}

func (e *FormatError) Error() string {
	return fmt.Sprintf("wire: malformed frame at byte %d: %s", e.Offset, e.Msg)
}

// Reason implements Reasoner.
func (e *FormatError) Reason() string { return "malformed" }

// Reasoner is implemented by every codec error.
type Reasoner interface {
	error
	Reason() string
}

// Reason returns the stable label of a codec error anywhere in err's chain
// ("bad_magic", "unknown_version", "foreign_cluster", "oversized", "bad_crc",
// "truncated", "unknown_type", "bad_count", "malformed"), or "" if err is not
// one.
func Reason(err error) string {
	var r Reasoner
	if errors.As(err, &r) {
		return r.Reason()
	}
	return ""
}
