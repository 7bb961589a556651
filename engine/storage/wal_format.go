package storage

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"strconv"
	"strings"

	"github.com/vestalabs/vesta/engine/paxos"
	"github.com/vestalabs/vesta/engine/wire"
	"github.com/vestalabs/vesta/internal/contract"
)

// The WAL's on-disk format, version 2. All integers are little-endian.
//
// A WAL is a directory of segment files named %016x.wal after their sequence
// number, which counts up from 1 without gaps, and a LOCK file. A segment is
// created as %016x.wal.tmp with its header written, preallocated and synced,
// then renamed and the directory synced: a segment name therefore never
// refers to a file without a valid header.
//
// Segment header (32 bytes):
//
//	[0:8]   magic "VESTAWAL"
//	[8:12]  format version (2; version 1 had no synced marks and is refused)
//	[12:16] flags (0)
//	[16:24] sequence number (matches the file name)
//	[24:28] reserved (0)
//	[28:32] CRC32C of [0:28]
//
// Records follow from offset 32, each starting at a multiple of 8:
//
//	[0:4]   hcrc: CRC32C of [4:24], seeded with the segment's salt
//	[4:8]   body length n, 1 <= n <= maxBody
//	[8:12]  dcrc: CRC32C of the body, seeded with the segment's salt
//	[12]    kind: 1 entry, 2 hard state, 3 seal, 4 synced mark
//	[13:16] reserved (0)
//	[16:24] synced mark: the offset up to which the segment was durable
//	        (fdatasync returned) when the record was encoded; a multiple of
//	        8, at least 32 and at most the record's own offset
//	[24:24+n] body, then zero padding to a multiple of 8
//
// The salt is the CRC32C of the segment's sequence number, so a record copied
// from another segment never checks. The header checksum lets recovery test
// any offset for a record cheaply when it looks for valid records after a bad
// one. A zero-filled (preallocated, never written) area is never a valid
// record: its length is 0.
//
// Bodies:
//
//	entry:       slot u64, ballot round u64, ballot replica u32, value kind u8, value data
//	hard state:  promised round u64, promised replica u32, commit u64
//	seal:        number of records before it in the segment, u64
//	synced mark: number of records before it in the segment, u64 (the
//	             record exists for its header's synced mark only)
//
// A seal is the last record of every segment but the newest: it is written
// and synced before the next segment is created, so a full segment that lost
// its last records can be told from one that ended there.
//
// Synced marks tell damage in the unsynced tail from damage to synced data.
// After a power failure the kernel may have written the unsynced pages out of
// order, so the newest segment's unsynced tail may read as a bad record
// followed by valid ones. Recovery looks at every valid record after the
// first bad one, at offset X:
//
//   - A later valid record whose synced mark is above X was encoded when X
//     was already durable (marks are record boundaries, so the whole record
//     at X was): X is synced data gone bad, and OpenWAL refuses the log,
//     naming the file and X.
//   - Otherwise nothing proves X was ever synced: it lies in the unsynced
//     tail, and recovery truncates at X, dropping the later records too
//     (they may depend on X, and none of them was acknowledged, since a
//     Sync that returned nil would have made X durable first).
//
// Proof needs a record written after the Sync that made X durable, so the
// last synced batch of a segment is unproven until the next write. Close
// therefore writes a synced-mark record (without syncing it) when records
// are synced that no record's mark covers yet: damage at rest after a clean
// shutdown is refused. What stays undecidable from the bytes is damage to the
// last synced batch of a process that crashed before writing again; it is
// treated as a torn tail, as a bad last record always was. Segments other
// than the newest were synced whole before their successor was created: any
// damage in them is refused, marks or not.
const (
	walMagic      = "VESTAWAL"
	walVersion    = 2
	segHeaderSize = 32
	recHeaderSize = 24
	recAlign      = 8

	kindEntry     byte = 1
	kindHardState byte = 2
	kindSeal      byte = 3
	kindMark      byte = 4

	entryFixedSize = 8 + 8 + 4 + 1
	hardStateSize  = 8 + 4 + 8
	sealBodySize   = 8
	markBodySize   = 8

	// MaxValueSize is the largest value data an entry may carry.
	MaxValueSize = 1 << 30
	maxBody      = entryFixedSize + MaxValueSize

	// sealRecordSize is the room a segment keeps for its seal.
	sealRecordSize = recHeaderSize + sealBodySize
	// markRecordSize is the size of a synced-mark record.
	markRecordSize = recHeaderSize + markBodySize
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func segmentName(seq uint64) string { return fmt.Sprintf("%016x.wal", seq) }

// parseSegmentName returns the sequence number of a segment file name.
func parseSegmentName(name string) (uint64, bool) {
	hex, ok := strings.CutSuffix(name, ".wal")
	if !ok || len(hex) != 16 {
		return 0, false
	}
	seq, err := strconv.ParseUint(hex, 16, 64)
	return seq, err == nil && seq > 0
}

func segmentSalt(seq uint64) uint32 {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], seq)
	return crc32.Checksum(b[:], castagnoli)
}

// recordSize is the bytes a record with an n-byte body takes, padding included.
func recordSize(n int) int { return (recHeaderSize + n + recAlign - 1) &^ (recAlign - 1) }

func encodeSegmentHeader(seq uint64) []byte {
	h := make([]byte, segHeaderSize)
	copy(h, walMagic)
	binary.LittleEndian.PutUint32(h[8:], walVersion)
	binary.LittleEndian.PutUint64(h[16:], seq)
	binary.LittleEndian.PutUint32(h[28:], crc32.Checksum(h[:28], castagnoli))
	return h
}

// checkSegmentHeader returns why data does not start with the header of
// segment seq, or "".
func checkSegmentHeader(data []byte, seq uint64) string {
	switch {
	case len(data) < segHeaderSize:
		return fmt.Sprintf("segment header truncated (%d bytes)", len(data))
	case string(data[:8]) != walMagic:
		return "bad magic"
	case binary.LittleEndian.Uint32(data[28:]) != crc32.Checksum(data[:28], castagnoli):
		return "segment header checksum mismatch"
	case binary.LittleEndian.Uint32(data[8:]) != walVersion:
		return fmt.Sprintf("unknown format version %d (this build reads version %d only)",
			binary.LittleEndian.Uint32(data[8:]), walVersion)
	case binary.LittleEndian.Uint64(data[16:]) != seq:
		return fmt.Sprintf("header names segment %d", binary.LittleEndian.Uint64(data[16:]))
	}
	return ""
}

// sealRecord fills in the header of the record rec (header, body and
// padding), whose body is already in place. mark is the offset up to which
// the segment is durable now.
func sealRecord(rec []byte, kind byte, n int, mark int64, salt uint32) {
	contract.Require(len(rec) == recordSize(n), "record buffer does not fit the body")
	contract.Require(n >= 1 && n <= maxBody, "body length out of range")
	contract.Require(mark >= segHeaderSize && mark%recAlign == 0, "synced mark out of range")
	binary.LittleEndian.PutUint32(rec[4:], uint32(n))
	binary.LittleEndian.PutUint32(rec[8:], crc32.Update(salt, castagnoli, rec[recHeaderSize:recHeaderSize+n]))
	rec[12], rec[13], rec[14], rec[15] = kind, 0, 0, 0
	binary.LittleEndian.PutUint64(rec[16:], uint64(mark))
	clear(rec[recHeaderSize+n:])
	binary.LittleEndian.PutUint32(rec[0:], crc32.Update(salt, castagnoli, rec[4:recHeaderSize]))
}

// appendEntryRecord appends the record of e to buf.
func appendEntryRecord(buf []byte, e *wire.Entry, mark int64, salt uint32) []byte {
	n := entryFixedSize + len(e.Value.Data)
	start := len(buf)
	buf = grow(buf, recordSize(n))
	rec := buf[start:]
	b := rec[recHeaderSize:]
	binary.LittleEndian.PutUint64(b[0:], uint64(e.Slot))
	binary.LittleEndian.PutUint64(b[8:], e.Ballot.Round)
	binary.LittleEndian.PutUint32(b[16:], uint32(e.Ballot.Replica))
	b[20] = byte(e.Value.Kind)
	copy(b[entryFixedSize:], e.Value.Data)
	sealRecord(rec, kindEntry, n, mark, salt)
	return buf
}

func appendHardStateRecord(buf []byte, hs paxos.HardState, mark int64, salt uint32) []byte {
	start := len(buf)
	buf = grow(buf, recordSize(hardStateSize))
	rec := buf[start:]
	b := rec[recHeaderSize:]
	binary.LittleEndian.PutUint64(b[0:], hs.Promised.Round)
	binary.LittleEndian.PutUint32(b[8:], uint32(hs.Promised.Replica))
	binary.LittleEndian.PutUint64(b[12:], uint64(hs.Commit))
	sealRecord(rec, kindHardState, hardStateSize, mark, salt)
	return buf
}

// appendCountRecord appends a seal or synced-mark record, whose body is the
// number of records before it in the segment.
func appendCountRecord(buf []byte, kind byte, records uint64, mark int64, salt uint32) []byte {
	contract.Require(kind == kindSeal || kind == kindMark, "not a counting record kind")
	start := len(buf)
	buf = grow(buf, recordSize(sealBodySize))
	rec := buf[start:]
	binary.LittleEndian.PutUint64(rec[recHeaderSize:], records)
	sealRecord(rec, kind, sealBodySize, mark, salt)
	return buf
}

// grow extends buf by n bytes, reallocating only when its capacity is short.
func grow(buf []byte, n int) []byte {
	if cap(buf)-len(buf) < n {
		nb := make([]byte, len(buf), 2*cap(buf)+n)
		copy(nb, buf)
		buf = nb
	}
	return buf[:len(buf)+n]
}

// record is a record found valid at off; body aliases the segment's bytes.
// mark is its synced mark, unchecked against off (see markPlausible).
type record struct {
	off  int64
	mark int64
	kind byte
	body []byte
}

// markPlausible reports whether r's synced mark could have been written at
// r.off: a record boundary at or before the record itself.
func (r record) markPlausible() bool {
	return r.mark >= segHeaderSize && r.mark%recAlign == 0 && r.mark <= r.off
}

func (r record) size() int64 { return int64(recordSize(len(r.body))) }

// checkRecord returns the record at off in data, or why there is no valid
// record there.
func checkRecord(data []byte, off int64, salt uint32) (record, string) {
	contract.Require(off%recAlign == 0 && off >= 0, "record offset misaligned")
	if off+recHeaderSize > int64(len(data)) {
		return record{}, "record header cut short by the end of the file"
	}
	h := data[off : off+recHeaderSize]
	if binary.LittleEndian.Uint32(h[0:]) != crc32.Update(salt, castagnoli, h[4:]) {
		if bytes.Equal(h, zeroPage[:recHeaderSize]) {
			return record{}, "zero-filled"
		}
		return record{}, "header checksum mismatch"
	}
	n := int64(binary.LittleEndian.Uint32(h[4:]))
	kind := h[12]
	mark := binary.LittleEndian.Uint64(h[16:])
	switch {
	case n < 1 || n > maxBody:
		return record{}, fmt.Sprintf("body length %d out of range", n)
	case h[13] != 0 || h[14] != 0 || h[15] != 0:
		return record{}, "reserved header bytes set"
	case off+int64(recordSize(int(n))) > int64(len(data)):
		return record{}, "record cut short by the end of the file"
	}
	body := data[off+recHeaderSize : off+recHeaderSize+n]
	if binary.LittleEndian.Uint32(h[8:]) != crc32.Update(salt, castagnoli, body) {
		return record{}, "body checksum mismatch"
	}
	switch {
	case kind == kindEntry && n < entryFixedSize,
		kind == kindHardState && n != hardStateSize,
		kind == kindSeal && n != sealBodySize,
		kind == kindMark && n != markBodySize:
		return record{}, fmt.Sprintf("body length %d wrong for record kind %d", n, kind)
	case kind != kindEntry && kind != kindHardState && kind != kindSeal && kind != kindMark:
		return record{}, fmt.Sprintf("unknown record kind %d", kind)
	}
	if !allZero(data[off+recHeaderSize+n : off+int64(recordSize(int(n)))]) {
		return record{}, "padding not zero"
	}
	if mark > 1<<62 { // keeps the int64 conversion exact
		return record{}, fmt.Sprintf("synced mark %d out of range", mark)
	}
	return record{off: off, mark: int64(mark), kind: kind, body: body}, ""
}

var zeroPage [4096]byte

func allZero(b []byte) bool {
	for len(b) > 0 {
		k := min(len(b), len(zeroPage))
		if !bytes.Equal(b[:k], zeroPage[:k]) {
			return false
		}
		b = b[k:]
	}
	return true
}

// findRecord returns the offset of the first valid record at or after from,
// or -1. It is the corruption path's tool: it tries every aligned offset.
func findRecord(data []byte, from int64, salt uint32) int64 {
	from = (from + recAlign - 1) &^ (recAlign - 1)
	for off := from; off+recHeaderSize <= int64(len(data)); off += recAlign {
		if _, reason := checkRecord(data, off, salt); reason == "" {
			return off
		}
	}
	return -1
}

// findProof looks at the valid records at or after from for one whose
// synced mark proves the record at bad was durable (a plausible mark above
// bad). It returns that record, or ok false. After a valid record it goes on
// past its end, elsewhere at every aligned offset.
func findProof(data []byte, from, bad int64, salt uint32) (proof record, ok bool) {
	off := (from + recAlign - 1) &^ (recAlign - 1)
	for off+recHeaderSize <= int64(len(data)) {
		r, reason := checkRecord(data, off, salt)
		if reason != "" {
			off += recAlign
			continue
		}
		if r.markPlausible() && r.mark > bad {
			return r, true
		}
		off += r.size()
	}
	return record{}, false
}

func decodeEntry(body []byte) wire.Entry {
	contract.Require(len(body) >= entryFixedSize, "entry body too short")
	return wire.Entry{
		Slot:   wire.Slot(binary.LittleEndian.Uint64(body[0:])),
		Ballot: wire.Ballot{Round: binary.LittleEndian.Uint64(body[8:]), Replica: wire.ReplicaID(binary.LittleEndian.Uint32(body[16:]))},
		Value:  wire.Value{Kind: wire.ValueKind(body[20]), Data: body[entryFixedSize:]},
	}
}

func decodeHardState(body []byte) paxos.HardState {
	contract.Require(len(body) == hardStateSize, "hard state body has the wrong size")
	return paxos.HardState{
		Promised: wire.Ballot{Round: binary.LittleEndian.Uint64(body[0:]), Replica: wire.ReplicaID(binary.LittleEndian.Uint32(body[8:]))},
		Commit:   wire.Slot(binary.LittleEndian.Uint64(body[12:])),
	}
}

// decodeCount decodes the body of a seal or synced-mark record.
func decodeCount(body []byte) uint64 {
	contract.Require(len(body) == sealBodySize, "seal or mark body has the wrong size")
	return binary.LittleEndian.Uint64(body)
}

// segmentScan is what a segment's bytes say, before any decision is taken.
type segmentScan struct {
	header string   // why the segment header is bad, or ""
	recs   []record // valid records from the start, in order
	end    int64    // offset just past the last valid record (where the next goes)
	reason string   // why there is no valid record at end ("" when end == len)
	zero   bool     // every byte from end on is zero
	resync int64    // first valid record after end, or -1
	// proof is a valid record after end whose synced mark is above end: the
	// record at end was durable, so the damage is not an unsynced tail.
	proof    record
	hasProof bool
	sealed   bool // the last valid record is a seal
	// sealErr says why the seal is wrong: not last, or with a wrong count.
	sealErr string
}

// scanSegment reads records from the start of data until the first offset
// holding no valid record, then classifies the rest.
func scanSegment(data []byte, seq uint64) segmentScan {
	s := segmentScan{resync: -1}
	if s.header = checkSegmentHeader(data, seq); s.header != "" {
		return s
	}
	salt := segmentSalt(seq)
	off := int64(segHeaderSize)
	lastMark := int64(segHeaderSize)
	for off < int64(len(data)) {
		r, reason := checkRecord(data, off, salt)
		if reason == "" && (!r.markPlausible() || r.mark < lastMark) {
			// Checksums pass but no writer could have written this mark here.
			reason = fmt.Sprintf("synced mark %d impossible here (previous mark %d)", r.mark, lastMark)
		}
		if reason != "" {
			s.reason = reason
			break
		}
		contract.Invariantf(r.off == off && off%recAlign == 0, "record at %d scanned at %d", r.off, off)
		if s.sealed && s.sealErr == "" {
			s.sealErr = fmt.Sprintf("record at offset %d follows the segment's seal", off)
		}
		if r.kind == kindSeal {
			if count := decodeCount(r.body); count != uint64(len(s.recs)) && s.sealErr == "" {
				s.sealErr = fmt.Sprintf("seal counts %d records, segment has %d", count, len(s.recs))
			}
			s.sealed = true
		}
		s.recs = append(s.recs, r)
		lastMark = r.mark
		off += r.size()
	}
	s.end = off
	contract.Ensuref(s.end <= int64(len(data)) && s.end%recAlign == 0, "scan end %d (size %d)", s.end, len(data))
	s.zero = allZero(data[s.end:])
	if !s.zero {
		s.resync = findRecord(data, s.end+recAlign, salt)
		contract.Ensure(s.resync == -1 || s.resync > s.end, "resync before the end")
		if s.resync >= 0 {
			s.proof, s.hasProof = findProof(data, s.resync, s.end, salt)
			contract.Ensure(!s.hasProof || s.proof.off >= s.resync, "proof before the resync")
		}
	}
	return s
}

// verdict decides what a scanned segment means for recovery: nil when its
// records can be used (a torn or unsynced tail in the newest segment
// included), or why the log must not open. truncate reports a tail to cut
// off at s.end.
func (s *segmentScan) verdict(file string, newest bool) (truncate bool, err *CorruptionError) {
	switch {
	case s.header != "":
		return false, &CorruptionError{File: file, Offset: 0, Reason: s.header}
	case s.hasProof:
		return false, &CorruptionError{File: file, Offset: s.end, Reason: fmt.Sprintf(
			"%s, in synced data: the valid record at offset %d was written when the segment was durable up to offset %d",
			s.reason, s.proof.off, s.proof.mark)}
	case !newest && s.resync >= 0:
		return false, &CorruptionError{File: file, Offset: s.end, Reason: fmt.Sprintf(
			"%s, and a valid record follows at offset %d, in a segment that is not the newest", s.reason, s.resync)}
	case s.sealErr != "":
		return false, &CorruptionError{File: file, Offset: s.end, Reason: s.sealErr}
	case !newest && !s.zero:
		return false, &CorruptionError{File: file, Offset: s.end, Reason: s.reason + ", in a segment that is not the newest"}
	case !newest && !s.sealed:
		return false, &CorruptionError{File: file, Offset: s.end, Reason: "segment ends without a seal but a newer segment exists"}
	}
	// The newest segment's damage from s.end on is unproven to be synced:
	// an unsynced tail, torn or written back out of order.
	return !s.zero, nil
}
