package wire

// The binary codec.
//
// # Frame
//
// Every frame is a fixed 24-byte header followed by a payload. All integers are
// little-endian.
//
//	offset size field
//	0      4    magic "VSTA"
//	4      1    version (1)
//	5      1    frame type: a MsgType, or a transport control type (>= FrameControl)
//	6      2    reserved, zero
//	8      8    cluster ID
//	16     4    payload length
//	20     4    CRC32C (Castagnoli) of header bytes [0,20) followed by the payload
//
// The header carries the payload length, so a stream reader needs HeaderSize
// bytes to know the whole frame's size, and it can refuse a frame from another
// cluster, of another version or larger than its limit before reading the
// payload. The CRC covers the header fields too, so a flipped type or cluster
// byte is caught as well as a flipped payload byte.
//
// # Message payload
//
//	0  u32 From        4  u32 To
//	8  u64 Ballot.Round 16 u32 Ballot.Replica
//	20 u64 Slot        28 u64 Commit
//	36 u32 len(Entries) 40 u32 len(Ranges)
//	44 Entries, each:  u64 Slot, u64 Ballot.Round, u32 Ballot.Replica,
//	                   u8 Value.Kind, u32 len(Value.Data), Value.Data
//	   Ranges, each:   u64 Lo, u64 Hi
//
// Fields are fixed-width: encoding and decoding are straight-line and a decoded
// frame re-encodes to the same bytes. The codec checks structure only (lengths,
// counts, types, checksums); what a field's value means (a value kind, a range
// with Lo > Hi, an entry's ballot) is the protocol's to check (paxos validate).

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"
)

const (
	// Magic is the first four bytes of every frame: "VSTA".
	Magic uint32 = 'V' | 'S'<<8 | 'T'<<16 | 'A'<<24
	// Version is the frame format this codec writes and the only one it reads.
	Version uint8 = 1
	// HeaderSize is the size of the fixed frame header.
	HeaderSize = 24
	// FrameControl is the first frame type reserved for transports' own
	// control frames (handshakes and the like). Message frames use MsgType
	// values below it; Decode refuses control frames as unknown message types.
	FrameControl uint8 = 0x80
	// DefaultMaxFrameSize is the frame size limit (header included) of a Codec
	// whose MaxFrameSize is zero.
	DefaultMaxFrameSize = 16 << 20
	// MaxFrameSizeLimit is the largest MaxFrameSize a Codec accepts: the
	// payload length field is 32 bits.
	MaxFrameSizeLimit = HeaderSize + math.MaxUint32

	msgFixedSize = 44 // From..len(Ranges)
	entryFixed   = 25 // an entry without its data
	rangeSize    = 16
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Codec encodes and decodes frames of one cluster. Its zero value is usable
// (cluster 0, DefaultMaxFrameSize); it holds no state, so one Codec may be
// used by any number of goroutines.
type Codec struct {
	// ClusterID is written into every frame and required of every frame read.
	ClusterID uint64
	// MaxFrameSize bounds a frame's total size, header included, both ways.
	// Zero means DefaultMaxFrameSize; values above MaxFrameSizeLimit are
	// treated as MaxFrameSizeLimit.
	MaxFrameSize int
}

func (c Codec) maxFrame() int {
	switch {
	case c.MaxFrameSize <= 0:
		return DefaultMaxFrameSize
	case c.MaxFrameSize > MaxFrameSizeLimit:
		return MaxFrameSizeLimit
	}
	return c.MaxFrameSize
}

// FrameHeader is the decoded fixed header of a frame.
type FrameHeader struct {
	Version    uint8
	Type       uint8 // a MsgType, or a control type >= FrameControl
	ClusterID  uint64
	PayloadLen uint32
	CRC        uint32
}

// FrameSize is the size of the whole frame the header announces.
func (h FrameHeader) FrameSize() int { return HeaderSize + int(h.PayloadLen) }

// PayloadSize returns the size of m's encoded payload.
func PayloadSize(m *Message) int {
	n := msgFixedSize + rangeSize*len(m.Ranges) + entryFixed*len(m.Entries)
	for i := range m.Entries {
		n += len(m.Entries[i].Value.Data)
	}
	return n
}

// FrameSize returns the size of the frame Append writes for m.
func FrameSize(m *Message) int { return HeaderSize + PayloadSize(m) }

// Append appends one frame holding m to dst and returns the extended slice. It
// allocates only when dst lacks room (size the buffer with FrameSize to avoid
// that). On error dst is returned unchanged: m has an unknown type, or its
// frame would exceed the codec's MaxFrameSize. m is only read.
func (c Codec) Append(dst []byte, m *Message) ([]byte, error) {
	if !m.Type.Valid() {
		return dst, &TypeError{Type: uint8(m.Type)}
	}
	if len(m.Entries) > math.MaxUint32 || len(m.Ranges) > math.MaxUint32 {
		return dst, &FrameSizeError{Size: uint64(len(m.Entries)) + uint64(len(m.Ranges)), Limit: uint64(c.maxFrame())}
	}
	size := FrameSize(m)
	if size > c.maxFrame() {
		return dst, &FrameSizeError{Size: uint64(size), Limit: uint64(c.maxFrame())}
	}
	start := len(dst)
	dst = grow(dst, size)
	f := dst[start : start+size]
	putHeader(f, uint8(m.Type), c.ClusterID, uint32(size-HeaderSize))

	p := f[HeaderSize:]
	le := binary.LittleEndian
	le.PutUint32(p[0:], uint32(m.From))
	le.PutUint32(p[4:], uint32(m.To))
	le.PutUint64(p[8:], m.Ballot.Round)
	le.PutUint32(p[16:], uint32(m.Ballot.Replica))
	le.PutUint64(p[20:], uint64(m.Slot))
	le.PutUint64(p[28:], uint64(m.Commit))
	le.PutUint32(p[36:], uint32(len(m.Entries)))
	le.PutUint32(p[40:], uint32(len(m.Ranges)))
	off := msgFixedSize
	for i := range m.Entries {
		e := &m.Entries[i]
		q := p[off : off+entryFixed]
		le.PutUint64(q[0:], uint64(e.Slot))
		le.PutUint64(q[8:], e.Ballot.Round)
		le.PutUint32(q[16:], uint32(e.Ballot.Replica))
		q[20] = byte(e.Value.Kind)
		le.PutUint32(q[21:], uint32(len(e.Value.Data)))
		off += entryFixed
		off += copy(p[off:], e.Value.Data)
	}
	for _, r := range m.Ranges {
		le.PutUint64(p[off:], uint64(r.Lo))
		le.PutUint64(p[off+8:], uint64(r.Hi))
		off += rangeSize
	}
	if off != len(p) {
		panic(fmt.Sprintf("wire: encoded %d payload bytes, sized %d", off, len(p)))
	}
	le.PutUint32(f[20:], frameCRC(f[:20], p))
	return dst, nil
}

// AppendFrame appends a frame of type typ around payload: the transports' way
// to write control frames (typ >= FrameControl). It fails only when the frame
// would exceed MaxFrameSize.
func (c Codec) AppendFrame(dst []byte, typ uint8, payload []byte) ([]byte, error) {
	size := HeaderSize + len(payload)
	if size > c.maxFrame() {
		return dst, &FrameSizeError{Size: uint64(size), Limit: uint64(c.maxFrame())}
	}
	start := len(dst)
	dst = grow(dst, size)
	f := dst[start : start+size]
	putHeader(f, typ, c.ClusterID, uint32(len(payload)))
	copy(f[HeaderSize:], payload)
	binary.LittleEndian.PutUint32(f[20:], frameCRC(f[:20], f[HeaderSize:]))
	return dst, nil
}

func grow(b []byte, n int) []byte {
	if cap(b)-len(b) < n {
		nb := make([]byte, len(b), len(b)+n+len(b)/4)
		copy(nb, b)
		b = nb
	}
	return b[:len(b)+n]
}

func putHeader(f []byte, typ uint8, cluster uint64, payloadLen uint32) {
	le := binary.LittleEndian
	le.PutUint32(f[0:], Magic)
	f[4] = Version
	f[5] = typ
	f[6], f[7] = 0, 0
	le.PutUint64(f[8:], cluster)
	le.PutUint32(f[16:], payloadLen)
}

func frameCRC(head, payload []byte) uint32 {
	return crc32.Update(crc32.Update(0, castagnoli, head), castagnoli, payload)
}

// ReadHeader parses and checks the fixed header at the start of b: magic,
// version, reserved bytes, cluster ID and frame size against MaxFrameSize. It
// needs only HeaderSize bytes (a *TruncatedError says so when b is shorter),
// so a stream reader can refuse a frame before reading its payload. It does
// not check the CRC, which covers the payload.
func (c Codec) ReadHeader(b []byte) (FrameHeader, error) {
	if len(b) < HeaderSize {
		return FrameHeader{}, &TruncatedError{What: "frame header", Need: HeaderSize, Have: len(b)}
	}
	le := binary.LittleEndian
	if m := le.Uint32(b); m != Magic {
		return FrameHeader{}, &MagicError{Got: m}
	}
	h := FrameHeader{
		Version:    b[4],
		Type:       b[5],
		ClusterID:  le.Uint64(b[8:]),
		PayloadLen: le.Uint32(b[16:]),
		CRC:        le.Uint32(b[20:]),
	}
	if h.Version != Version {
		return h, &VersionError{Got: h.Version}
	}
	if b[6] != 0 || b[7] != 0 {
		return h, &FormatError{Offset: 6, Msg: fmt.Sprintf("reserved header bytes are %#02x %#02x, want zero", b[6], b[7])}
	}
	if h.ClusterID != c.ClusterID {
		return h, &ClusterError{Got: h.ClusterID, Want: c.ClusterID}
	}
	if size := uint64(HeaderSize) + uint64(h.PayloadLen); size > uint64(c.maxFrame()) {
		return h, &FrameSizeError{Size: size, Limit: uint64(c.maxFrame())}
	}
	return h, nil
}

// OpenFrame checks the frame at the start of b (header and CRC) and returns
// its header and payload. The payload aliases b. Bytes of b past the frame are
// ignored; a b shorter than the frame yields a *TruncatedError.
func (c Codec) OpenFrame(b []byte) (FrameHeader, []byte, error) {
	h, err := c.ReadHeader(b)
	if err != nil {
		return h, nil, err
	}
	size := h.FrameSize()
	if len(b) < size {
		return h, nil, &TruncatedError{What: "frame payload", Need: size, Have: len(b)}
	}
	payload := b[HeaderSize:size:size]
	if got := frameCRC(b[:20], payload); got != h.CRC {
		return h, nil, &ChecksumError{Got: got, Want: h.CRC}
	}
	return h, payload, nil
}

// Decode decodes the message frame at the start of b and returns it with the
// number of bytes it occupied. Bytes of b past the frame are ignored.
//
// Decode does not copy: every Entry's Value.Data is a sub-slice of b (its
// capacity clipped to its length). The message therefore borrows b: the
// caller must not modify or reuse b while the message, or any Value taken
// from it, is in use — or must copy what it keeps (bytes.Clone). The Entries
// and Ranges slices are freshly allocated and belong to the caller; they are
// nil when empty, as is Data of an empty value.
//
// Decode never panics on any input; every failure is one of the typed errors
// in this package (see Reason).
func (c Codec) Decode(b []byte) (Message, int, error) { return c.decode(b, nil) }

// Decoder is a Codec that carves decoded Entries and Ranges out of slabs it
// allocates a few hundred at a time, so decoding a stream costs an allocation
// every few messages instead of up to two per message. It never hands out the
// same memory twice: each message's slices (capacity clipped) belong to the
// caller, as with Codec.Decode, and Value.Data still aliases the input. A
// retained message keeps its slab alive. A Decoder is not safe for concurrent
// use.
type Decoder struct {
	Codec
	entries []Entry
	ranges  []SlotRange
}

// slabEntries is how many entries (56 B each) a Decoder allocates at once.
const slabEntries = 256

// Decode is Codec.Decode with slab allocation; the ownership rules are the
// same.
func (d *Decoder) Decode(b []byte) (Message, int, error) { return d.Codec.decode(b, d) }

// allocEntries returns n zeroed entries. A message of a slab's size or more
// gets its own slice and leaves the slab as it is: giving up the slab's rest
// for it would waste memory and buy nothing. So a slab is given up only for a
// message larger than its rest, and the entries allocated over a stream are
// at most twice the entries decoded plus one slab (each slab is paid for by
// the entries in it plus those of the message that did not fit).
func (d *Decoder) allocEntries(n int) []Entry {
	if n >= slabEntries {
		return make([]Entry, n)
	}
	if cap(d.entries)-len(d.entries) < n {
		d.entries = make([]Entry, 0, slabEntries)
	}
	l := len(d.entries)
	d.entries = d.entries[:l+n]
	return d.entries[l : l+n : l+n]
}

// allocRanges is allocEntries for ranges.
func (d *Decoder) allocRanges(n int) []SlotRange {
	if n >= slabEntries {
		return make([]SlotRange, n)
	}
	if cap(d.ranges)-len(d.ranges) < n {
		d.ranges = make([]SlotRange, 0, slabEntries)
	}
	l := len(d.ranges)
	d.ranges = d.ranges[:l+n]
	return d.ranges[l : l+n : l+n]
}

func (c Codec) decode(b []byte, d *Decoder) (Message, int, error) {
	h, p, err := c.OpenFrame(b)
	if err != nil {
		return Message{}, 0, err
	}
	if t := MsgType(h.Type); !t.Valid() {
		return Message{}, 0, &TypeError{Type: h.Type}
	}
	if len(p) < msgFixedSize {
		return Message{}, 0, &TruncatedError{What: "message fields", Need: msgFixedSize, Have: len(p)}
	}
	le := binary.LittleEndian
	m := Message{
		Type:   MsgType(h.Type),
		From:   ReplicaID(le.Uint32(p[0:])),
		To:     ReplicaID(le.Uint32(p[4:])),
		Ballot: Ballot{Round: le.Uint64(p[8:]), Replica: ReplicaID(le.Uint32(p[16:]))},
		Slot:   Slot(le.Uint64(p[20:])),
		Commit: Slot(le.Uint64(p[28:])),
	}
	nEntries := uint64(le.Uint32(p[36:]))
	nRanges := uint64(le.Uint32(p[40:]))
	rest := uint64(len(p) - msgFixedSize)
	// Refuse counts the payload cannot hold before allocating for them.
	if need := nEntries*entryFixed + nRanges*rangeSize; need > rest {
		return Message{}, 0, &CountError{Entries: nEntries, Ranges: nRanges, Need: need, Room: rest}
	}
	off := msgFixedSize
	if nEntries > 0 {
		if d != nil {
			m.Entries = d.allocEntries(int(nEntries))
		} else {
			m.Entries = make([]Entry, nEntries)
		}
		// Each entry's fixed part and data must leave room for the fixed
		// parts of the entries and ranges still to come.
		tail := int(nEntries-1)*entryFixed + int(nRanges)*rangeSize
		for i := range m.Entries {
			q := p[off : off+entryFixed]
			n := uint64(le.Uint32(q[21:]))
			off += entryFixed
			if room := uint64(len(p) - off - tail); n > room {
				return Message{}, 0, &TruncatedError{
					What: fmt.Sprintf("data of entry %d", i),
					Need: HeaderSize + off + int(n) + tail, Have: HeaderSize + len(p),
				}
			}
			e := &m.Entries[i]
			e.Slot = Slot(le.Uint64(q[0:]))
			e.Ballot = Ballot{Round: le.Uint64(q[8:]), Replica: ReplicaID(le.Uint32(q[16:]))}
			e.Value.Kind = ValueKind(q[20])
			if n > 0 {
				e.Value.Data = p[off : off+int(n) : off+int(n)]
				off += int(n)
			}
			tail -= entryFixed
		}
	}
	if nRanges > 0 {
		if d != nil {
			m.Ranges = d.allocRanges(int(nRanges))
		} else {
			m.Ranges = make([]SlotRange, nRanges)
		}
		for i := range m.Ranges {
			m.Ranges[i] = SlotRange{Lo: Slot(le.Uint64(p[off:])), Hi: Slot(le.Uint64(p[off+8:]))}
			off += rangeSize
		}
	}
	if off != len(p) {
		return Message{}, 0, &FormatError{
			Offset: HeaderSize + off,
			Msg:    fmt.Sprintf("%d bytes left over after the last field of a %v", len(p)-off, m.Type),
		}
	}
	return m, h.FrameSize(), nil
}
