package pmem

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math/bits"
	"strconv"

	"github.com/vestalabs/vesta/engine/storage"
	"github.com/vestalabs/vesta/engine/wire"
	"github.com/vestalabs/vesta/internal/contract"
)

// On-media layout. Every multi-byte field is little-endian.
//
//	offset  size  what
//	0       64    superblock: magic, version, sizes, log ID, CRC32C (written once, at creation)
//	64      8     flip word: the sequence number of the current metadata slot, with check bits
//	128     64    metadata slot 0 (even sequence numbers)
//	192     64    metadata slot 1 (odd sequence numbers)
//	512     512   identity: cluster, replica, members, CRC32C (written once, at creation)
//	4096    ...   data area: a circular buffer of records, to the end of the file
//
// Each lives in its own cache line, so that flushing one never writes back another.
//
// # Versions
//
// Version 2 added the identity block (whose log this is: storage.Identity)
// and requires the superblock's unused bytes [48:60) to be zero. Version 1
// files (no identity) are refused with a *VersionError naming the version,
// never adopted: nothing in them says which cluster and replica their
// promises and votes belong to, and guessing is exactly the failure the
// identity exists to prevent. Such a file is moved away and its replica
// bootstrapped afresh (there were no production deployments of version 1).
//
// # Creation
//
// The superblock and the identity are written once, by creation, which
// formats a complete file under a temporary name, syncs it and only then
// links it at the log's path (open_linux.go). So a crash during creation
// leaves either no log at the path (and a stale temporary file, removed by
// the next creation) or a complete log with its identity: never a
// half-formatted file, which would otherwise be refused as corrupt, and never
// a log without its identity. Nothing writes the header page's identity or
// superblock after that; a log's identity cannot change.
const (
	lineSize   = 64   // x86 cache line; flushes work on whole lines
	headerSize = 4096 // the data area starts on a page boundary
	superOff   = 0
	flipOff    = 64
	slotOff0   = 128 // slot i lives at slotOff0 + i*lineSize
	metaSize   = 64
	identOff   = 512
	identSize  = 512

	// maxIdentMembers is the most members the identity block holds: more
	// than the protocol's limit of 64 (paxos.Config), so that limit, not
	// the layout, is what binds.
	maxIdentMembers = (identSize - identHdr - 4) / 4
	identHdr        = 16 // cluster u64, replica u32, member count u32

	// minDataSize is the smallest data area a log may have.
	minDataSize = 4096
	// MinSize is the smallest log file Open accepts.
	MinSize = headerSize + minDataSize

	formatVersion = 2
	// superMagic is "VESTAPM1" read as a little-endian word.
	superMagic = uint64('V') | uint64('E')<<8 | uint64('S')<<16 | uint64('T')<<24 |
		uint64('A')<<32 | uint64('P')<<40 | uint64('M')<<48 | uint64('1')<<56

	// seqBits bounds metadata sequence numbers: the flip word holds 48 bits of
	// sequence and 16 check bits. 2^48 commits is nine years at a million
	// commits a second; reaching it is ErrSeqExhausted, never a wrap.
	seqBits = 48
	maxSeq  = 1<<seqBits - 1

	// userSize is the part of a metadata slot the Log layer owns: the hard
	// state, committed atomically with the tail.
	userSize = 32
)

// Record layout (8-byte aligned, never straddling the end of the data area):
//
//	[0:4)   payload length n
//	[4:6)   kind: recData or recPad
//	[6:8)   zero
//	[8:12)  position stamp: uint32(logical position >> 3)
//	[12:16) CRC32C of bytes [0:12) followed by the payload and its zero padding
//	[16:16+n) payload, then zeros up to the next multiple of 8
//
// A pad record fills the rest of a lap when the next record does not fit
// before the end of the data area; its CRC covers only its header, and its
// body is never read. When fewer than recHdrSize bytes remain in a lap, no pad
// is written: both writer and reader skip to the next lap.
const (
	recHdrSize = 16
	recAlign   = 8
	recData    = 1
	recPad     = 2
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func crc32c(p []byte) uint32 { return crc32.Checksum(p, castagnoli) }

func align8(n uint64) uint64 { return (n + recAlign - 1) &^ (recAlign - 1) }

// recordSize is the bytes a record with an n-byte payload occupies.
func recordSize(n int) uint64 { return recHdrSize + align8(uint64(n)) }

// flipCheck is the CRC-16/CCITT (polynomial 0x1021, initial 0xFFFF) of the
// 48 sequence bits, little-endian. That code has Hamming distance 4 at this
// length: any one, two or three flipped bits in the flip word make it invalid,
// instead of naming the other (older, valid) slot and silently rolling the log
// back.
func flipCheck(seq uint64) uint64 {
	crc := uint16(0xFFFF)
	for i := range 6 {
		crc = crc<<8 ^ crc16Table[byte(crc>>8)^byte(seq>>(8*i))]
	}
	return uint64(crc)
}

var crc16Table = func() (t [256]uint16) {
	for i := range t {
		c := uint16(i) << 8
		for range 8 {
			if c&0x8000 != 0 {
				c = c<<1 ^ 0x1021
			} else {
				c <<= 1
			}
		}
		t[i] = c
	}
	return t
}()

func flipWord(seq uint64) uint64 { return seq | flipCheck(seq)<<seqBits }

// decodeFlip returns the sequence number a flip word names, or false when the
// word is not a valid flip word.
func decodeFlip(w uint64) (uint64, bool) {
	seq := w & maxSeq
	return seq, seq != 0 && w>>seqBits == flipCheck(seq)
}

func slotOff(seq uint64) int { return slotOff0 + int(seq&1)*lineSize }

// superblock is the immutable description of a log file.
type superblock struct {
	fileSize uint64
	dataOff  uint64
	dataSize uint64
	logID    uint64
}

func (s superblock) encode(b []byte) {
	_ = b[metaSize-1]
	clear(b[:metaSize])
	binary.LittleEndian.PutUint64(b[0:], superMagic)
	binary.LittleEndian.PutUint32(b[8:], formatVersion)
	binary.LittleEndian.PutUint32(b[12:], headerSize)
	binary.LittleEndian.PutUint64(b[16:], s.fileSize)
	binary.LittleEndian.PutUint64(b[24:], s.dataOff)
	binary.LittleEndian.PutUint64(b[32:], s.dataSize)
	binary.LittleEndian.PutUint64(b[40:], s.logID)
	binary.LittleEndian.PutUint32(b[60:], crc32c(b[:60]))
}

// decodeSuperblock parses and checks the superblock; the reason is empty when
// it is valid. A superblock that is intact but of another format version
// returns that version (and no reason): the caller refuses it as such.
func decodeSuperblock(b []byte) (superblock, uint32, string) {
	if binary.LittleEndian.Uint64(b[0:]) != superMagic {
		return superblock{}, 0, "bad magic: not a vesta pmem log"
	}
	if crc32c(b[:60]) != binary.LittleEndian.Uint32(b[60:]) {
		return superblock{}, 0, "superblock checksum mismatch"
	}
	if v := binary.LittleEndian.Uint32(b[8:]); v != formatVersion {
		return superblock{}, v, ""
	}
	if h := binary.LittleEndian.Uint32(b[12:]); h != headerSize {
		return superblock{}, 0, "unexpected header size " + utoa(uint64(h))
	}
	for _, c := range b[48:60] {
		if c != 0 {
			return superblock{}, 0, "reserved superblock bytes are not zero"
		}
	}
	s := superblock{
		fileSize: binary.LittleEndian.Uint64(b[16:]),
		dataOff:  binary.LittleEndian.Uint64(b[24:]),
		dataSize: binary.LittleEndian.Uint64(b[32:]),
		logID:    binary.LittleEndian.Uint64(b[40:]),
	}
	if s.dataOff != headerSize || s.dataSize < minDataSize || s.dataSize%recAlign != 0 ||
		s.fileSize != s.dataOff+s.dataSize {
		return superblock{}, 0, "inconsistent sizes in superblock"
	}
	return s, formatVersion, ""
}

// Identity block layout (identSize bytes at identOff):
//
//	[0:8)    cluster ID
//	[8:12)   replica ID
//	[12:16)  member count n, 1..maxIdentMembers
//	[16:16+4n) member IDs, ascending
//	then zeros up to [identSize-4:identSize): CRC32C of everything before it
//
// The identity it holds must pass storage.Identity.Validate.

// encodeIdentity writes id into b; id must be valid and fit.
func encodeIdentity(b []byte, id storage.Identity) {
	_ = b[identSize-1]
	contract.Requiref(id.Validate() == nil && len(id.Members) <= maxIdentMembers, "pmem: encoding identity %v", id)
	clear(b[:identSize])
	binary.LittleEndian.PutUint64(b[0:], id.ClusterID)
	binary.LittleEndian.PutUint32(b[8:], uint32(id.ReplicaID))
	binary.LittleEndian.PutUint32(b[12:], uint32(len(id.Members)))
	for i, m := range id.Members {
		binary.LittleEndian.PutUint32(b[identHdr+4*i:], uint32(m))
	}
	binary.LittleEndian.PutUint32(b[identSize-4:], crc32c(b[:identSize-4]))
}

// decodeIdentity parses and checks an identity block; the reason is empty
// when it is valid.
func decodeIdentity(b []byte) (storage.Identity, string) {
	_ = b[identSize-1]
	if crc32c(b[:identSize-4]) != binary.LittleEndian.Uint32(b[identSize-4:]) {
		return storage.Identity{}, "identity block checksum mismatch"
	}
	n := binary.LittleEndian.Uint32(b[12:])
	if n == 0 || n > maxIdentMembers {
		return storage.Identity{}, "identity block has " + utoa(uint64(n)) + " members"
	}
	end := identHdr + 4*int(n)
	for _, c := range b[end : identSize-4] {
		if c != 0 {
			return storage.Identity{}, "identity block padding is not zero"
		}
	}
	id := storage.Identity{
		ClusterID: binary.LittleEndian.Uint64(b[0:]),
		ReplicaID: wire.ReplicaID(binary.LittleEndian.Uint32(b[8:])),
		Members:   make([]wire.ReplicaID, n),
	}
	for i := range id.Members {
		id.Members[i] = wire.ReplicaID(binary.LittleEndian.Uint32(b[identHdr+4*i:]))
	}
	if err := id.Validate(); err != nil {
		return storage.Identity{}, "identity block holds an invalid identity: " + err.Error()
	}
	return id, ""
}

// checkIdentity reports why id cannot be written into a log, or nil.
func checkIdentity(id storage.Identity) error {
	if err := id.Validate(); err != nil {
		return err
	}
	if len(id.Members) > maxIdentMembers {
		return errors.New("pmem: identity has " + utoa(uint64(len(id.Members))) + " members, a log records at most " + utoa(maxIdentMembers))
	}
	return nil
}

// meta is one metadata slot: which records are live, and the Log layer's
// state committed with them. head and tail are logical byte positions in the
// data area (they only grow; the physical offset is position mod dataSize).
type meta struct {
	seq  uint64
	head uint64
	tail uint64
	user [userSize]byte
}

func (m *meta) encode(b []byte) {
	_ = b[metaSize-1]
	binary.LittleEndian.PutUint64(b[0:], m.seq)
	binary.LittleEndian.PutUint64(b[8:], m.head)
	binary.LittleEndian.PutUint64(b[16:], m.tail)
	copy(b[24:24+userSize], m.user[:])
	binary.LittleEndian.PutUint32(b[56:], 0)
	binary.LittleEndian.PutUint32(b[60:], crc32c(b[:60]))
}

func decodeMeta(b []byte) (meta, bool) {
	_ = b[metaSize-1]
	if crc32c(b[:60]) != binary.LittleEndian.Uint32(b[60:]) || binary.LittleEndian.Uint32(b[56:]) != 0 {
		return meta{}, false
	}
	m := meta{
		seq:  binary.LittleEndian.Uint64(b[0:]),
		head: binary.LittleEndian.Uint64(b[8:]),
		tail: binary.LittleEndian.Uint64(b[16:]),
	}
	copy(m.user[:], b[24:24+userSize])
	return m, true
}

// initialHeader returns the first headerSize bytes of a freshly formatted
// log: superblock, an empty committed metadata slot (sequence 1), the flip
// word naming it, and the identity.
func initialHeader(sb superblock, id storage.Identity) []byte {
	h := make([]byte, headerSize)
	sb.encode(h[superOff:])
	m := meta{seq: 1}
	m.encode(h[slotOff(1):])
	binary.LittleEndian.PutUint64(h[flipOff:], flipWord(1))
	encodeIdentity(h[identOff:], id)
	return h
}

// nativeBig reports whether this machine stores words big-endian; the flip
// word is stored with one atomic native store, so it is byte-swapped there.
var nativeBig = binary.NativeEndian.Uint16([]byte{0, 1}) == 1

func toLE64(v uint64) uint64 {
	if nativeBig {
		return bits.ReverseBytes64(v)
	}
	return v
}

func utoa(v uint64) string { return strconv.FormatUint(v, 10) }
