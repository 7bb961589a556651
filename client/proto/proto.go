// Package proto is the client protocol of vestad: binary, length-prefixed
// frames on a TCP connection, pipelined.
//
// # Connection
//
// A client opens a TCP connection and sends the 8-byte Preamble, then
// request frames; the server answers each request with one response frame
// carrying the request's ID. Many requests may be in flight on one
// connection, and responses may come back in any order: the ID matches them.
//
// # Frames
//
// Every frame is a 4-byte little-endian length n (of what follows, at most
// the reader's maximum frame size) and n bytes of body. The body starts with
// a kind byte (KindRequest or KindResponse); all integers are little-endian;
// byte strings are a uvarint length and the bytes.
//
//	request:  kind=1 | id u64 | client u64 | seq u64 | low u64 | op u8 | flags u8 |
//	          key str | value str | expect str | [minSlot u64]
//	response: kind=2 | id u64 | status u8 | flags u8 | leader u32 |
//	          value str | leaderAddr str | [applied u64]
//
// A request's flags: bits 0-1 the get's read mode (ReadMode), bit 2
// allow-stale (ReadBounded only); minSlot is there exactly when the read
// mode is ReadBounded. A response's flags: bit 0 found, bit 1 swapped, bit 2
// applied is there, bit 3 stale (ReadBounded only). Other bits are refused.
//
// # Versions
//
// The preamble's last two bytes are the protocol's version, major and
// minor. Version 0.2 (Version2) added the optional fields above: the
// applied slot on responses and bounded-staleness reads. A server speaks
// every version from Version1 to CurrentVersion and answers each connection
// in the version its preamble named (a 0.1 client gets no applied slot and
// cannot ask for ReadBounded); a client speaks CurrentVersion. A vestad that
// predates 0.2 closes a 0.2 client's connection unanswered: upgrade the
// servers before the clients.
//
// # Sessions
//
// Writes carry a session: the client's ID, the write's sequence number
// (1, 2, ... per client, never reused), and the lowest sequence number the
// client has not yet seen acknowledged. The server keeps each write's result
// while its sequence number is at or above that mark, so a retried write
// (same client and sequence number) applies exactly once, even when a
// pipelining client's later writes applied first. Reads need no session
// (client 0, seq 0): executing one twice changes nothing.
//
// # Reads
//
// A get's flags choose how it is kept consistent (ReadMode): through the
// log like a write (ReadThroughLog, flags 0: what every server does), or by
// the leader's read index (ReadIndex: one heartbeat round to a quorum,
// shared by every read waiting, and no log append), or under the leader's
// lease (ReadLease: no round while the lease holds; safe within the
// servers' clock-drift bound), or at any replica once it has applied a
// slot the client names (ReadBounded, below). A server that does not
// know a mode refuses the frame (flags), so a client never gets a weaker
// read than it asked for.
//
// # Slots and bounded-staleness reads
//
// From version 0.2 on, a successful response carries Applied: a slot of
// the replicated log such that the answer reflects every command chosen in
// a slot below it (for a write, at least its own slot plus one; for a read,
// the state it read). A client keeps the highest Applied it has seen and
// sends it as a ReadBounded get's MinSlot: any replica, leader or not,
// answers it once it has applied every slot below MinSlot, so the client
// never reads older state than it has seen (its own writes included), at
// whichever replica it asks. With AllowStale the replica answers at once,
// from whatever it has applied, and sets Stale in the response when that is
// below MinSlot. A replica that has not caught up within its wait bound
// answers StatusUnavailable, naming how far it has applied: ask another
// replica, or later.
//
// # Buffers
//
// Encoding appends to a caller's buffer (AppendRequest, AppendResponse);
// Writer gathers frames from many goroutines and writes all that queued up
// with one system call. Decoding is in place: a decoded message's byte slices
// alias the frame it came from. Nothing in this package panics on bad input:
// malformed bytes give a *DecodeError that names the field.
package proto

import (
	"encoding/binary"
	"fmt"
)

// Preamble is the first 8 bytes a client sends on a new connection: the
// protocol's magic and version. A server closes connections that start with
// anything else (an HTTP request sent to the wrong port, say).
var Preamble = PreambleOf(CurrentVersion)

// Version is a client protocol version: the preamble's last two bytes, major
// then minor, as one number (major<<8 | minor).
type Version uint16

// The versions.
const (
	// Version1 (0.1): the first; responses carry no slot.
	Version1 Version = 0x0001
	// Version2 (0.2): responses carry the applied slot (Response.Applied,
	// Stale), and gets may be ReadBounded (Request.MinSlot, AllowStale).
	Version2 Version = 0x0002
	// CurrentVersion is what clients of this package send.
	CurrentVersion = Version2
	// OldestVersion is the oldest version a server of this package speaks.
	OldestVersion = Version1
)

func (v Version) String() string { return fmt.Sprintf("%d.%d", v>>8, v&0xff) }

// HasSlots reports whether v carries slots (Response.Applied, ReadBounded).
func (v Version) HasSlots() bool { return v >= Version2 }

// PreambleOf returns the preamble of version v.
func PreambleOf(v Version) [8]byte {
	return [8]byte{'V', 'E', 'S', 'T', 'A', 'C', byte(v >> 8), byte(v)}
}

// Limits on a frame's parts. A decoder refuses anything larger.
const (
	// MaxKeySize bounds a key.
	MaxKeySize = 64 << 10
	// MaxValueSize bounds a value, an expected value, and a response's value.
	MaxValueSize = 1 << 20
	// MaxAddrSize bounds a response's leader address.
	MaxAddrSize = 1 << 10
	// DefaultMaxFrameSize bounds a frame's body; any well-formed request or
	// response within the limits above fits.
	DefaultMaxFrameSize = 4 << 20
)

// Frame kinds: the first byte of a frame's body.
const (
	KindRequest  byte = 1
	KindResponse byte = 2
)

// lenSize is the size of a frame's length prefix.
const lenSize = 4

// Op is what a request asks for.
type Op uint8

// The operations.
const (
	// OpGet reads Key. Response: Found, and Value when found.
	OpGet Op = 1
	// OpPut sets Key to Value.
	OpPut Op = 2
	// OpDelete removes Key. Response: Found (whether it existed).
	OpDelete Op = 3
	// OpCAS sets Key to Value if its current value equals Expect (a missing
	// key's value is empty). Response: Swapped.
	OpCAS Op = 4
	// OpOpenSession opens a session. With Client 0 the server's store
	// issues a new session ID, in log order, never the same twice; the
	// response's Value is the ID (8 bytes, little-endian). Each one applied
	// opens another session, so a retried request may leave one its client
	// never uses. With a nonzero Client it opens the session of that ID, the
	// client's choice (opening an open session changes nothing); an issued
	// ID the store no longer holds is refused with StatusSessionExpired
	// rather than reopened empty. Writes of a session the server does not
	// know are refused with StatusSessionExpired. A server from before
	// issued IDs refuses Client 0 (StatusError, "... client ID 0").
	OpOpenSession Op = 5
	// OpStatus asks the server it reaches for its replica's status, as JSON
	// in Value. It is answered locally, not through the log.
	OpStatus Op = 6
)

func (o Op) String() string {
	switch o {
	case OpGet:
		return "get"
	case OpPut:
		return "put"
	case OpDelete:
		return "delete"
	case OpCAS:
		return "cas"
	case OpOpenSession:
		return "open-session"
	case OpStatus:
		return "status"
	}
	return fmt.Sprintf("op(%d)", uint8(o))
}

// Valid reports whether o is one of the operations.
func (o Op) Valid() bool { return o >= OpGet && o <= OpStatus }

// IsWrite reports whether o changes state and so runs in a session.
func (o Op) IsWrite() bool { return o == OpPut || o == OpDelete || o == OpCAS }

// Status is a response's outcome.
type Status uint8

// The statuses.
const (
	// StatusOK: the operation was applied; the response's fields hold its result.
	StatusOK Status = 0
	// StatusNotLeader: the server does not lead and did not propose the
	// request; Leader and LeaderAddr hint who does (0 and "" when unknown).
	// Sending the request elsewhere is safe.
	StatusNotLeader Status = 1
	// StatusUnavailable: a transient failure (leadership lost after the
	// request was proposed, too many waiting requests, a server timeout or
	// shutdown); the write may or may not have applied. Value holds a message.
	// Retrying with the same session and sequence number is safe.
	StatusUnavailable Status = 2
	// StatusError: the request is wrong and retrying will not help. Value
	// holds a message.
	StatusError Status = 3
	// StatusSessionExpired: the server knows no session of this client (it
	// was never opened, or was evicted); the write was not applied now. Value
	// holds a message.
	StatusSessionExpired Status = 4
)

func (s Status) String() string {
	switch s {
	case StatusOK:
		return "ok"
	case StatusNotLeader:
		return "not-leader"
	case StatusUnavailable:
		return "unavailable"
	case StatusError:
		return "error"
	case StatusSessionExpired:
		return "session-expired"
	}
	return fmt.Sprintf("status(%d)", uint8(s))
}

// Response flag bits.
const (
	flagFound   = 1 << 0
	flagSwapped = 1 << 1
	flagApplied = 1 << 2 // an applied u64 ends the frame
	flagStale   = 1 << 3
	respFlags   = flagFound | flagSwapped | flagApplied | flagStale
)

// Request flag bits beyond the read mode's.
const (
	flagAllowStale = 1 << 2
	reqFlags       = readModeMask | flagAllowStale
)

// SlotSize is the size of a frame's optional slot field (a request's
// minSlot, a response's applied).
const SlotSize = 8

// ReadMode is how a get is kept linearizable; a request's flags carry it.
type ReadMode uint8

// The read modes.
const (
	// ReadThroughLog proposes the get through the log like a write.
	ReadThroughLog ReadMode = 0
	// ReadIndex has the leader confirm with one round to a quorum that it
	// still leads, then read its state once it has applied its commit
	// index: linearizable, no log append, no clock assumption.
	ReadIndex ReadMode = 1
	// ReadLease has a leader that holds its lease read at once, with no
	// round; one that holds none falls back to ReadIndex. Linearizable while
	// the replicas' clocks drift within the servers' bound.
	ReadLease ReadMode = 2
	// ReadBounded is a bounded-staleness read at any replica (version 0.2):
	// the replica answers once it has applied every slot below the
	// request's MinSlot (at once, flagged Stale if it has not, with
	// AllowStale). Not linearizable: it reads state at least as new as the
	// MinSlot the client passes, which is what makes a client's reads
	// monotonic and see its own writes.
	ReadBounded ReadMode = 3
)

// readModeMask is the request flag bits that carry the read mode.
const readModeMask = 0x03

func (m ReadMode) String() string {
	switch m {
	case ReadThroughLog:
		return "log"
	case ReadIndex:
		return "index"
	case ReadLease:
		return "lease"
	case ReadBounded:
		return "bounded"
	}
	return fmt.Sprintf("read-mode(%d)", uint8(m))
}

// ParseReadMode parses a ReadMode's String ("log", "index", "lease",
// "bounded").
func ParseReadMode(s string) (ReadMode, error) {
	switch s {
	case "log":
		return ReadThroughLog, nil
	case "index":
		return ReadIndex, nil
	case "lease":
		return ReadLease, nil
	case "bounded":
		return ReadBounded, nil
	}
	return 0, fmt.Errorf("read mode %q: want log (through the log), index (the leader's read index), lease (the leader's lease) or bounded (any replica, at least as new as a slot)", s)
}

// Request is one client request. Its byte slices alias the frame it was
// decoded from.
type Request struct {
	ID     uint64 // chosen by the client, echoed by the response; unique among its in-flight requests
	Client uint64 // session: the client's ID (0: none)
	Seq    uint64 // session: this write's sequence number (0: none)
	Low    uint64 // session: the lowest sequence number not yet acknowledged to the client
	Op     Op
	Key    []byte
	Value  []byte // put, cas: the new value
	Expect []byte // cas: the expected current value
	// Read is a get's read mode (flags bits 0-1); zero for every other op.
	Read ReadMode
	// MinSlot (ReadBounded only) is the slot below which the replica must
	// have applied every slot before it answers: the highest
	// Response.Applied the client has seen.
	MinSlot uint64
	// AllowStale (ReadBounded only, flags bit 2) has the replica answer at
	// once even if it has not applied that far (Response.Stale says so).
	AllowStale bool
}

// Response answers the request with the same ID. Its byte slices alias the
// frame it was decoded from.
type Response struct {
	ID         uint64
	Status     Status
	Found      bool   // get: the key exists; delete: it existed
	Swapped    bool   // cas: the value was replaced
	Leader     uint32 // not-leader: the replica believed to lead (0: unknown)
	Value      []byte // get: the value; status: JSON; errors: the message
	LeaderAddr string // not-leader: the leader's client address ("": unknown)
	// Applied (version 0.2, successful gets and writes; 0: not sent) is a
	// slot such that the answer reflects every command chosen below it:
	// for a write its slot plus one at least, for a read the state read.
	// It is sent (flags bit 2) when nonzero.
	Applied uint64
	// Stale (a ReadBounded get with AllowStale, flags bit 3): the replica
	// had applied less than the request's MinSlot; the value is older than
	// state the client has seen.
	Stale bool
}

const (
	requestFixed  = 1 + 8*4 + 1 + 1
	responseFixed = 1 + 8 + 1 + 1 + 4
)

// DecodeError says what is wrong with a frame.
type DecodeError struct {
	Field  string // the part of the frame that is wrong
	Reason string
}

func (e *DecodeError) Error() string { return "vesta proto: " + e.Field + ": " + e.Reason }

// AppendRequest appends r's frame (length prefix included) to dst.
func AppendRequest(dst []byte, r *Request) []byte {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0, KindRequest)
	dst = binary.LittleEndian.AppendUint64(dst, r.ID)
	dst = binary.LittleEndian.AppendUint64(dst, r.Client)
	dst = binary.LittleEndian.AppendUint64(dst, r.Seq)
	dst = binary.LittleEndian.AppendUint64(dst, r.Low)
	flags := byte(r.Read) & readModeMask
	if r.AllowStale {
		flags |= flagAllowStale
	}
	dst = append(dst, byte(r.Op), flags)
	dst = appendBytes(dst, r.Key)
	dst = appendBytes(dst, r.Value)
	dst = appendBytes(dst, r.Expect)
	if r.Read == ReadBounded {
		dst = binary.LittleEndian.AppendUint64(dst, r.MinSlot)
	}
	binary.LittleEndian.PutUint32(dst[start:], uint32(len(dst)-start-lenSize))
	return dst
}

// AppendResponse appends r's frame (length prefix included) to dst.
func AppendResponse(dst []byte, r *Response) []byte {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0, KindResponse)
	dst = binary.LittleEndian.AppendUint64(dst, r.ID)
	var flags byte
	if r.Found {
		flags |= flagFound
	}
	if r.Swapped {
		flags |= flagSwapped
	}
	if r.Applied != 0 {
		flags |= flagApplied
	}
	if r.Stale {
		flags |= flagStale
	}
	dst = append(dst, byte(r.Status), flags)
	dst = binary.LittleEndian.AppendUint32(dst, r.Leader)
	dst = appendBytes(dst, r.Value)
	dst = binary.AppendUvarint(dst, uint64(len(r.LeaderAddr)))
	dst = append(dst, r.LeaderAddr...)
	if r.Applied != 0 {
		dst = binary.LittleEndian.AppendUint64(dst, r.Applied)
	}
	binary.LittleEndian.PutUint32(dst[start:], uint32(len(dst)-start-lenSize))
	return dst
}

func appendBytes(dst, b []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(b)))
	return append(dst, b...)
}

// DecodeRequest decodes a request frame's body (without its length prefix).
// The request's slices alias body.
func DecodeRequest(body []byte) (Request, error) {
	var r Request
	if len(body) < requestFixed {
		return r, &DecodeError{"request", fmt.Sprintf("%d bytes, shorter than the fixed part (%d)", len(body), requestFixed)}
	}
	if body[0] != KindRequest {
		return r, &DecodeError{"kind", fmt.Sprintf("%d, want %d (request)", body[0], KindRequest)}
	}
	r.ID = binary.LittleEndian.Uint64(body[1:])
	r.Client = binary.LittleEndian.Uint64(body[9:])
	r.Seq = binary.LittleEndian.Uint64(body[17:])
	r.Low = binary.LittleEndian.Uint64(body[25:])
	r.Op = Op(body[33])
	if !r.Op.Valid() {
		return r, &DecodeError{"op", fmt.Sprintf("unknown operation %d", body[33])}
	}
	r.Read = ReadMode(body[34] & readModeMask)
	r.AllowStale = body[34]&flagAllowStale != 0
	switch {
	case body[34]&^reqFlags != 0:
		return r, &DecodeError{"flags", fmt.Sprintf("unknown flags %#x", body[34])}
	case r.Read != ReadThroughLog && r.Op != OpGet:
		return r, &DecodeError{"flags", fmt.Sprintf("read mode %v on a %v: only gets have one", r.Read, r.Op)}
	case r.AllowStale && r.Read != ReadBounded:
		return r, &DecodeError{"flags", fmt.Sprintf("allow-stale with read mode %v: only bounded reads may be stale", r.Read)}
	}
	rest := body[requestFixed:]
	var err error
	if r.Key, rest, err = takeBytes(rest, "key", MaxKeySize); err != nil {
		return r, err
	}
	if r.Value, rest, err = takeBytes(rest, "value", MaxValueSize); err != nil {
		return r, err
	}
	if r.Expect, rest, err = takeBytes(rest, "expect", MaxValueSize); err != nil {
		return r, err
	}
	if r.Read == ReadBounded {
		if len(rest) < SlotSize {
			return r, &DecodeError{"min slot", fmt.Sprintf("%d bytes left in the frame, want %d", len(rest), SlotSize)}
		}
		r.MinSlot = binary.LittleEndian.Uint64(rest)
		rest = rest[SlotSize:]
	}
	if len(rest) != 0 {
		return r, &DecodeError{"request", fmt.Sprintf("%d bytes after the last field", len(rest))}
	}
	if r.Seq != 0 && r.Client == 0 {
		return r, &DecodeError{"seq", "a sequence number without a client ID"}
	}
	if r.Seq != 0 && r.Low > r.Seq {
		return r, &DecodeError{"low", fmt.Sprintf("lowest unacknowledged %d above the request's own sequence number %d", r.Low, r.Seq)}
	}
	return r, nil
}

// DecodeResponse decodes a response frame's body (without its length
// prefix). The response's Value aliases body.
func DecodeResponse(body []byte) (Response, error) {
	var r Response
	if len(body) < responseFixed {
		return r, &DecodeError{"response", fmt.Sprintf("%d bytes, shorter than the fixed part (%d)", len(body), responseFixed)}
	}
	if body[0] != KindResponse {
		return r, &DecodeError{"kind", fmt.Sprintf("%d, want %d (response)", body[0], KindResponse)}
	}
	r.ID = binary.LittleEndian.Uint64(body[1:])
	r.Status = Status(body[9])
	if r.Status > StatusSessionExpired {
		return r, &DecodeError{"status", fmt.Sprintf("unknown status %d", body[9])}
	}
	flags := body[10]
	if flags&^respFlags != 0 {
		return r, &DecodeError{"flags", fmt.Sprintf("unknown flags %#x", flags)}
	}
	r.Found, r.Swapped, r.Stale = flags&flagFound != 0, flags&flagSwapped != 0, flags&flagStale != 0
	r.Leader = binary.LittleEndian.Uint32(body[11:])
	rest := body[responseFixed:]
	var err error
	if r.Value, rest, err = takeBytes(rest, "value", MaxValueSize); err != nil {
		return r, err
	}
	var addr []byte
	if addr, rest, err = takeBytes(rest, "leader address", MaxAddrSize); err != nil {
		return r, err
	}
	r.LeaderAddr = string(addr)
	if flags&flagApplied != 0 {
		if len(rest) < SlotSize {
			return r, &DecodeError{"applied", fmt.Sprintf("%d bytes left in the frame, want %d", len(rest), SlotSize)}
		}
		r.Applied = binary.LittleEndian.Uint64(rest)
		if r.Applied == 0 {
			return r, &DecodeError{"applied", "zero (sent only when nonzero)"}
		}
		rest = rest[SlotSize:]
	}
	if len(rest) != 0 {
		return r, &DecodeError{"response", fmt.Sprintf("%d bytes after the last field", len(rest))}
	}
	return r, nil
}

// takeBytes splits a uvarint-prefixed byte string off b.
func takeBytes(b []byte, field string, limit int) (val, rest []byte, err error) {
	n, k := binary.Uvarint(b)
	if k == 0 {
		return nil, nil, &DecodeError{field, "length missing (frame ends)"}
	}
	if k < 0 {
		return nil, nil, &DecodeError{field, "length is not a valid uvarint"}
	}
	if n > uint64(limit) {
		return nil, nil, &DecodeError{field, fmt.Sprintf("length %d above the limit %d", n, limit)}
	}
	if n > uint64(len(b)-k) {
		return nil, nil, &DecodeError{field, fmt.Sprintf("length %d but only %d bytes left in the frame", n, len(b)-k)}
	}
	end := k + int(n)
	return b[k:end:end], b[end:], nil
}
