package checkpoint

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"slices"
	"strconv"
	"strings"

	"github.com/vestalabs/vesta/engine/wire"
	"github.com/vestalabs/vesta/internal/contract"
)

// Format limits and defaults (see the package documentation for the layout).
const (
	// Version is the file format version this package writes; it reads it
	// and version 1 (without the membership section).
	Version = 2
	// MaxMembershipBytes bounds the membership section of a header.
	MaxMembershipBytes = 16 << 10
	// MaxMembers bounds the member list a header may carry.
	MaxMembers = 64
	// DefaultBlockSize is the block size Write uses when Meta.BlockSize is 0.
	DefaultBlockSize = 64 << 10
	// MaxBlockSize bounds a block, and so the buffer a reader allocates.
	MaxBlockSize = 4 << 20
	// MaxImageSize bounds an image (1 PiB), which keeps every size and
	// offset computation far from overflow.
	MaxImageSize = 1 << 50
)

const (
	magic          = "VCKP"
	fixedHeaderLen = 64 // up to the member list
	maxHeaderLen   = fixedHeaderLen + 4*MaxMembers + 4 + MaxMembershipBytes + crcLen
	minFileSize    = fixedHeaderLen + 4 + crcLen // one member, empty image (version 1)
	crcLen         = 4
	fileSuffix     = ".vcp"
	filePrefix     = "checkpoint-"
	tempSuffix     = ".tmp"
	slotDigits     = 20 // enough for every uint64
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// header is a decoded file header: the Meta and what only the format needs.
type header struct {
	meta   Meta
	fileID uint64
}

// headerLen is the length of a version 2 header with members IDs and a
// membership section of mb bytes.
func headerLen(members, mb int) int { return fixedHeaderLen + 4*members + 4 + mb + crcLen }

// fileSizeFor is the size of a file whose header is hlen bytes and whose
// image of size bytes is cut into blocks of bs. The caller has bounded
// size by MaxImageSize and bs by [1, MaxBlockSize].
func fileSizeFor(hlen int, size int64, bs uint32) int64 {
	contract.Require(size >= 0 && size <= MaxImageSize && bs >= 1, "fileSizeFor: size or block size out of range")
	blocks := (size + int64(bs) - 1) / int64(bs)
	return int64(hlen) + size + crcLen*blocks
}

// blockSeed is the checksum state every block's checksum starts from.
func blockSeed(fileID uint64) uint32 {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], fileID)
	return crc32.Update(0, castagnoli, b[:])
}

// blockCRC is block idx's checksum: CRC32C of fileID ‖ idx ‖ data.
func blockCRC(seed uint32, idx uint64, data []byte) uint32 {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], idx)
	return crc32.Update(crc32.Update(seed, castagnoli, b[:]), castagnoli, data)
}

// encodeHeader writes h into b, which holds at least headerLen(members)
// bytes, and returns the header's length. h has passed Meta.validate.
func encodeHeader(b []byte, h *header) int {
	m := &h.meta
	hlen := headerLen(len(m.Members), len(m.Memberships))
	contract.Require(len(b) >= hlen, "encodeHeader: buffer too short")
	le := binary.LittleEndian
	copy(b[0:4], magic)
	le.PutUint16(b[4:6], Version)
	le.PutUint16(b[6:8], 0)
	le.PutUint64(b[8:16], m.ClusterID)
	le.PutUint64(b[16:24], uint64(m.Slot))
	le.PutUint64(b[24:32], m.Ballot.Round)
	le.PutUint64(b[32:40], uint64(m.Size))
	le.PutUint64(b[40:48], h.fileID)
	le.PutUint32(b[48:52], uint32(m.Replica))
	le.PutUint32(b[52:56], uint32(m.Ballot.Replica))
	le.PutUint32(b[56:60], m.BlockSize)
	le.PutUint32(b[60:64], uint32(len(m.Members)))
	for i, id := range m.Members {
		le.PutUint32(b[fixedHeaderLen+4*i:], uint32(id))
	}
	at := fixedHeaderLen + 4*len(m.Members)
	le.PutUint32(b[at:], uint32(len(m.Memberships)))
	copy(b[at+4:], m.Memberships)
	le.PutUint32(b[hlen-crcLen:hlen], crc32.Checksum(b[:hlen-crcLen], castagnoli))
	return hlen
}

// headerNeed is how many bytes the header that b (at least fixedHeaderLen
// bytes) begins needs in all; fixedHeaderLen when its member count is out
// of range, so that decodeHeader reports that.
func headerNeed(b []byte, have int) int {
	le := binary.LittleEndian
	m := le.Uint32(b[60:64])
	if m < 1 || m > MaxMembers {
		return fixedHeaderLen
	}
	if le.Uint16(b[4:6]) == 1 {
		return fixedHeaderLen + 4*int(m) + crcLen
	}
	at := fixedHeaderLen + 4*int(m)
	if have < at+4 {
		return at + 4 // the membership section's length first
	}
	mb := le.Uint32(b[at:])
	if mb > MaxMembershipBytes {
		return at + 4 // decodeHeader reports it
	}
	return headerLen(int(m), int(mb))
}

// decodeHeader decodes the header at the start of b, which holds the
// file's first min(size, maxHeaderLen) bytes, and returns it with its
// length. It checks the header alone, not the file's size (checkSize).
// Only the member list is allocated.
func decodeHeader(b []byte, path string) (header, int, error) {
	le := binary.LittleEndian
	if len(b) < fixedHeaderLen {
		return header{}, 0, corrupt(path, int64(len(b)), "file is %d bytes, shorter than the %d-byte fixed header", len(b), fixedHeaderLen)
	}
	if string(b[0:4]) != magic {
		return header{}, 0, corrupt(path, 0, "bad magic %q (not a checkpoint file)", b[0:4])
	}
	v := le.Uint16(b[4:6])
	if v != Version && v != 1 {
		return header{}, 0, corrupt(path, 4, "format version %d, this build reads versions 1 and %d", v, Version)
	}
	if r := le.Uint16(b[6:8]); r != 0 {
		return header{}, 0, corrupt(path, 6, "reserved header field is %#04x, not zero", r)
	}
	m := le.Uint32(b[60:64])
	if m < 1 || m > MaxMembers {
		return header{}, 0, corrupt(path, 60, "member count %d outside [1, %d]", m, MaxMembers)
	}
	at := fixedHeaderLen + 4*int(m)
	hlen, mb := at+crcLen, 0
	if v > 1 {
		if len(b) < at+4 {
			return header{}, 0, corrupt(path, int64(len(b)), "file is %d bytes, shorter than its header", len(b))
		}
		mb = int(le.Uint32(b[at:]))
		if mb > MaxMembershipBytes {
			return header{}, 0, corrupt(path, int64(at), "membership section of %d bytes exceeds the maximum %d", mb, MaxMembershipBytes)
		}
		hlen = headerLen(int(m), mb)
		if len(b) < hlen {
			return header{}, 0, corrupt(path, int64(at), "membership section of %d bytes runs past the end of the file (%d bytes)", mb, len(b))
		}
	}
	if len(b) < hlen {
		return header{}, 0, corrupt(path, int64(len(b)), "file is %d bytes, shorter than its %d-byte header", len(b), hlen)
	}
	if stored, computed := le.Uint32(b[hlen-crcLen:hlen]), crc32.Checksum(b[:hlen-crcLen], castagnoli); stored != computed {
		return header{}, 0, corrupt(path, 0, "header checksum mismatch: stored %08x, computed %08x", stored, computed)
	}
	// The checksum matched: what follows refuses a file written wrong on
	// purpose or by a buggy writer, naming the field.
	var h header
	h.meta.ClusterID = le.Uint64(b[8:16])
	h.meta.Slot = wire.Slot(le.Uint64(b[16:24]))
	h.meta.Ballot.Round = le.Uint64(b[24:32])
	size := le.Uint64(b[32:40])
	h.fileID = le.Uint64(b[40:48])
	h.meta.Replica = wire.ReplicaID(le.Uint32(b[48:52]))
	h.meta.Ballot.Replica = wire.ReplicaID(le.Uint32(b[52:56]))
	h.meta.BlockSize = le.Uint32(b[56:60])
	switch {
	case h.meta.ClusterID == 0:
		return header{}, 0, corrupt(path, 8, "cluster ID 0")
	case size > MaxImageSize:
		return header{}, 0, corrupt(path, 32, "image size %d exceeds the maximum %d", size, int64(MaxImageSize))
	case h.fileID == 0:
		return header{}, 0, corrupt(path, 40, "file ID 0")
	case h.meta.Replica == 0:
		return header{}, 0, corrupt(path, 48, "writer replica ID 0")
	case h.meta.BlockSize < 1 || h.meta.BlockSize > MaxBlockSize:
		return header{}, 0, corrupt(path, 56, "block size %d outside [1, %d]", h.meta.BlockSize, MaxBlockSize)
	}
	h.meta.Size = int64(size)
	h.meta.Members = make([]wire.ReplicaID, m)
	for i := range h.meta.Members {
		id := wire.ReplicaID(le.Uint32(b[fixedHeaderLen+4*i:]))
		if id == 0 || (i > 0 && id <= h.meta.Members[i-1]) {
			return header{}, 0, corrupt(path, int64(fixedHeaderLen+4*i),
				"member %d is %d: members must be non-zero, ascending, without repeats", i, id)
		}
		h.meta.Members[i] = id
	}
	if mb > 0 {
		h.meta.Memberships = slices.Clone(b[at+4 : at+4+mb])
	}
	return h, hlen, nil
}

// checkSize refuses a file whose size is not the one its header implies.
func checkSize(path string, h *header, hlen int, size int64) error {
	want := fileSizeFor(hlen, h.meta.Size, h.meta.BlockSize)
	if size != want {
		return corrupt(path, min(size, want), "file is %d bytes, its header implies %d (a %d-byte image in blocks of %d)",
			size, want, h.meta.Size, h.meta.BlockSize)
	}
	return nil
}

// FileName is the name of the checkpoint file of slot s.
func FileName(s wire.Slot) string {
	return fmt.Sprintf("%s%0*d%s", filePrefix, slotDigits, uint64(s), fileSuffix)
}

// ParseFileName returns the slot a checkpoint file name (as FileName makes
// it, no directory) names, and false for any other name, temporary files
// included.
func ParseFileName(name string) (wire.Slot, bool) {
	digits, ok := strings.CutPrefix(name, filePrefix)
	if !ok {
		return 0, false
	}
	if digits, ok = strings.CutSuffix(digits, fileSuffix); !ok || len(digits) != slotDigits {
		return 0, false
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	s, err := strconv.ParseUint(digits, 10, 64)
	if err != nil { // 20 digits above MaxUint64
		return 0, false
	}
	return wire.Slot(s), true
}

// isTempName reports whether name is a temporary file of this package.
func isTempName(name string) bool {
	return strings.HasPrefix(name, filePrefix) && strings.HasSuffix(name, tempSuffix)
}
