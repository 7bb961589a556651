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

// The WAL's on-disk format, version 4. All integers are little-endian.
//
// A WAL is a directory of segment files named %016x.wal after their sequence
// number, which counts up from 1 without gaps, and a LOCK file; compaction
// removes a prefix of them (see "The log start" below). A segment is
// created as %016x.wal.tmp with its header written, preallocated and synced,
// then renamed and the directory synced: a segment name therefore never
// refers to a file without a valid header, and never to a file shorter than
// the size it was preallocated to.
//
// Segment header (h bytes, h a multiple of 8):
//
//	[0:8]     magic "VESTAWAL"
//	[8:12]    format version (4; 3 is read too, see below)
//	[12:16]   header length h = 56 + 4m + 12 rounded up to a multiple of 8
//	          (version 3: 56 + 4m + 4 rounded up)
//	[16:24]   sequence number (matches the file name)
//	[24:32]   preallocated size P: the file's size when it was created
//	[32:40]   log ID: chosen at random when the log is created, the same in
//	          every segment of the log
//	[40:48]   cluster ID      \
//	[48:52]   replica ID       } the log's Identity, the same in every
//	[52:56]   member count m   } segment, m between 1 and maxMembers
//	[56:56+4m] members        /  (ascending)
//	...       zero padding
//	[h-12:h-4] log start L (version 4 only): the sequence number of the
//	          log's oldest segment when this one was created, 1 <= L <= the
//	          segment's own sequence number
//	[h-4:h]   CRC32C of [0:h-4]
//
// Every segment carries the whole identity and the log ID, so a segment
// copied in from another replica's or another cluster's directory (or from
// an older incarnation of this replica) is refused by name, like a whole
// directory of someone else's log.
//
// Then the close slot, [h, h+32): all zero until the WAL is closed cleanly
// while this segment is the one written, then a close record (below).
//
// Records follow from offset first = h+32, each starting at a multiple of 8:
//
//	[0:4]   hcrc: CRC32C of [4:24], seeded with the segment's salt
//	[4:8]   body length n, 1 <= n <= maxBody
//	[8:12]  dcrc: CRC32C of the body, seeded with the segment's salt
//	[12]    kind: 1 entry, 2 hard state, 3 seal, 5 close (4 was version 2's
//	        synced-mark record, which version 3 does not have)
//	[13:16] reserved (0)
//	[16:24] synced mark: the offset up to which the segment was durable
//	        (fdatasync returned) when the record was encoded; a multiple of
//	        8, at least first and at most the record's own offset
//	[24:24+n] body, then zero padding to a multiple of 8
//
// The salt is the CRC32C of the segment's sequence number and the log ID, so
// a record copied from another segment or another log never checks. The
// header checksum lets recovery test any offset for a record cheaply when it
// looks for valid records after a bad one. A zero-filled (preallocated, never
// written) area is never a valid record: its length is 0.
//
// Bodies:
//
//	entry:       slot u64, ballot round u64, ballot replica u32, value kind u8, value data
//	hard state:  promised round u64, promised replica u32, commit u64
//	seal:        number of records before it in the segment, u64
//	close:       number of records in the segment, u64; its synced mark is
//	             the offset E where they end, all of them durable
//
// A seal is the last record of every segment but the newest: it is written
// and synced before the next segment is created, so a full segment that lost
// its last records can be told from one that ended there.
//
// # The log start (version 4)
//
// WAL.Compact(below) releases the oldest segments whose entries all lie
// below below, and must not make recovery mistake that for lost segments.
// The rule: the log starts at L, the largest log start recorded in any
// segment header (1 where none records one: a version 3 log, or one never
// compacted). Segments numbered below L are released: recovery removes them
// unread, whatever their number, order or gaps. From L on, segment L must
// exist and the sequence must be contiguous up to the newest: a segment
// missing there is refused as damage, the first one included (version 3
// recovery did not notice a missing segment 1; a log never compacted must
// now hold it).
//
// Compact, with segments [L, N) to release (N at most the segment being
// written, which is never released):
//
//  1. appends the latest hard state to the segment being written (the
//     record holding it may be in a segment about to go), then rolls over:
//     the hard state, every record appended and the seal are synced before
//     the next segment exists;
//  2. creates the next segment (temporary name, synced, renamed, directory
//     synced) with log start N in its header;
//  3. removes segments L .. N-1, oldest first, and syncs the directory.
//
// A crash before step 2's directory sync leaves log start L and every
// segment: nothing is lost, and at worst the new segment's temporary file
// is left (recovery removes it) or the new segment exists, empty. A crash
// after it leaves log start N durable in a header, so whatever subset of
// L .. N-1 a crash kept (file systems need not order removals within a
// directory) is released by recovery; every entry at or above below and
// the latest hard state live in segments N and later, durable since step 1.
// The header, not a record, carries the start because recovery reads every
// header before it judges any record: the start decides which segments
// must be intact before any is read.
//
// Version 3 logs (same records, header without a log start) are read as
// starting at 1, and a version 3 segment may be followed by version 4 ones:
// this build writes version 4 for every new segment. A build that reads
// version 3 only refuses a log with a version 4 segment, naming the
// version, rather than open it with its start unknown.
//
// Version 2 logs (and version 1) are refused with an error that names the
// version: they record no identity and no preallocated size, and stamping an
// identity on them from the command line would be the very adoption of an
// unknown log that identities exist to prevent. There is no in-place
// upgrade; a replica with such a log is replaced by a new member (or run
// with the build that wrote it).
//
// # What recovery refuses, and why
//
// After a crash a segment holds everything synced, then any subset of the
// sectors written since the last fdatasync returned: the kernel writes dirty
// pages back in any order, and a crash during fdatasync keeps any part of
// what it was writing, a sector possibly torn. Recovery reads records from
// first until the first offset X without a valid record, and:
//
//   - A segment shorter than its preallocated size P is refused, naming its
//     size: P was durable before any record was written and records are
//     written inside it, so no crash shortens a segment; it was truncated,
//     and records past the cut are gone. (A segment whose single record did
//     not fit grows past P when that record is written; it is never shorter
//     than P either.)
//   - A close record in the slot says the records up to E were all durable
//     when the WAL was closed cleanly. If X < E the segment lost records
//     after a clean shutdown: refused, naming X. The close record lives in a
//     fixed slot after the header, not after the records, because a marker
//     at the end of the records is lost with them: a tail zeroed, overwritten
//     or cut short would take the evidence with it. Close writes it only
//     after an fdatasync that made every record durable, and syncs it, so a
//     crash during Close leaves either the previous slot (a smaller E, still
//     true), the new one, or a torn slot, which recovery ignores with a
//     warning (no record depends on it). A reopened WAL appends after E and
//     rewrites the slot at its next Close: the close record vouches for a
//     prefix of the segment, never for its end.
//   - A later valid record whose synced mark is above X was encoded when X
//     was already durable (marks are record boundaries, so the whole record
//     at X was): X is synced data gone bad, and OpenWAL refuses the log,
//     naming the file and X.
//   - Otherwise nothing proves X was ever synced: it lies in the unsynced
//     tail, and recovery drops everything from X on, logging the file, X and
//     the bytes dropped. Later valid records go too (they may depend on X,
//     and none of them was acknowledged, since a Sync that returned nil
//     would have made X durable first).
//
// Segments other than the newest were synced whole before their successor
// was created: any damage in them is refused, marks or not.
//
// # The blind spot, and why it stays
//
// One case remains undecidable: the process crashed (no clean Close), and
// the damage lies in the last synced batch B = [S, E) of the newest segment,
// with no durable record after it. Such damage reads as a torn tail and
// drops B, acknowledged votes included. No format can tell it apart without
// a second durable write per Sync. Damage that zeroes some of B's sectors is
// exactly what a crash during B's fdatasync leaves (the sectors not yet
// written back keep their preallocated zeros), and a torn sector may hold
// anything. Anything the WAL adds to B itself, a trailer or a checksum over
// the batch, is written with B and shares its fate: write-back in any order
// can make the trailer durable before the sectors ahead of it. A witness
// must become durable after B's fdatasync returned, and nothing written
// after it is durable before the next fdatasync (or the kernel's own
// write-back, whose timing the WAL does not control). So the choice is a
// second fdatasync per Sync, which would double the latency of every
// durable write, and the WAL does not pay it. What covers B instead, at no
// extra fdatasync:
//
//   - The next batch: each of its records carries E as its synced mark, and
//     any of them found valid, even in a torn next batch, proves B.
//   - A clean Close: the synced close record covers every record.
//   - A rollover: the seal is synced before the next segment exists.
//
// A pwrite of a mark after each fdatasync (version 2's Close mark, made
// per Sync) would narrow the window only to the kernel's write-back delay
// (dirty_expire_centisecs, 30 s by default, and only on a replica that went
// idle), for a system call per Sync; it is not done. Version 2's unsynced
// Close mark is replaced by the synced close record.
const (
	walMagic   = "VESTAWAL"
	walVersion = 4
	// walVersion3 is the previous version, read but not written: no log
	// start in its header.
	walVersion3 = 3
	// segFixedHeader is the header's size before the member list.
	segFixedHeader = 56
	// startFieldSize is the log start's room before the header's checksum.
	startFieldSize = 8
	// maxMembers bounds the member list a header may carry (and so the
	// header's size, read before anything is checked).
	maxMembers    = 1024
	maxHeaderSize = segFixedHeader + 4*maxMembers + startFieldSize + 4 + recAlign
	recHeaderSize = 24
	recAlign      = 8

	kindEntry     byte = 1
	kindHardState byte = 2
	kindSeal      byte = 3
	kindClose     byte = 5

	entryFixedSize = 8 + 8 + 4 + 1
	hardStateSize  = 8 + 4 + 8
	countBodySize  = 8

	// MaxValueSize is the largest value data an entry may carry.
	MaxValueSize = 1 << 30
	maxBody      = entryFixedSize + MaxValueSize

	// sealRecordSize is the room a segment keeps for its seal.
	sealRecordSize = recHeaderSize + countBodySize
	// closeSlotSize is the size of the close slot after the header.
	closeSlotSize = recHeaderSize + countBodySize
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

func segmentSalt(seq, logID uint64) uint32 {
	var b [16]byte
	binary.LittleEndian.PutUint64(b[0:], seq)
	binary.LittleEndian.PutUint64(b[8:], logID)
	return crc32.Checksum(b[:], castagnoli)
}

// recordSize is the bytes a record with an n-byte body takes, padding included.
func recordSize(n int) int { return (recHeaderSize + n + recAlign - 1) &^ (recAlign - 1) }

// headerSize is the length of a version 4 segment header listing m members.
func headerSize(m int) int { return headerSizeV(walVersion, m) }

// headerSizeV is the length of a segment header of format version v
// (3 or 4) listing m members.
func headerSizeV(v uint32, m int) int {
	n := segFixedHeader + 4*m + 4
	if v >= walVersion {
		n += startFieldSize
	}
	return (n + recAlign - 1) &^ (recAlign - 1)
}

// segHeader is what a segment's header says.
type segHeader struct {
	version  uint32 // format version: walVersion, or walVersion3 for an older segment
	seq      uint64
	prealloc int64 // P: the file's size when it was created
	logID    uint64
	id       Identity
	start    uint64 // L: the log's oldest segment when this one was created (1 in version 3)
	size     int64  // h, the header's length; the close slot follows
	first    int64  // offset of the first record: h + closeSlotSize
	salt     uint32
}

// newSegHeader returns the header of a new (version 4) segment seq of a log
// that starts at segment start.
func newSegHeader(seq uint64, prealloc int64, logID uint64, id Identity, start uint64) segHeader {
	return newSegHeaderV(walVersion, seq, prealloc, logID, id, start)
}

func newSegHeaderV(v uint32, seq uint64, prealloc int64, logID uint64, id Identity, start uint64) segHeader {
	contract.Require(v == walVersion || v == walVersion3, "segment header of an unknown version")
	contract.Require(start >= 1 && start <= seq && (v == walVersion || start == 1), "log start out of range")
	h := int64(headerSizeV(v, len(id.Members)))
	return segHeader{version: v, seq: seq, prealloc: prealloc, logID: logID, id: id, start: start, size: h,
		first: h + closeSlotSize, salt: segmentSalt(seq, logID)}
}

func (h segHeader) encode() []byte {
	b := make([]byte, h.size)
	copy(b, walMagic)
	binary.LittleEndian.PutUint32(b[8:], h.version)
	if h.version >= walVersion {
		binary.LittleEndian.PutUint64(b[h.size-4-startFieldSize:], h.start)
	}
	binary.LittleEndian.PutUint32(b[12:], uint32(h.size))
	binary.LittleEndian.PutUint64(b[16:], h.seq)
	binary.LittleEndian.PutUint64(b[24:], uint64(h.prealloc))
	binary.LittleEndian.PutUint64(b[32:], h.logID)
	binary.LittleEndian.PutUint64(b[40:], h.id.ClusterID)
	binary.LittleEndian.PutUint32(b[48:], uint32(h.id.ReplicaID))
	binary.LittleEndian.PutUint32(b[52:], uint32(len(h.id.Members)))
	for i, m := range h.id.Members {
		binary.LittleEndian.PutUint32(b[segFixedHeader+4*i:], uint32(m))
	}
	binary.LittleEndian.PutUint32(b[h.size-4:], crc32.Checksum(b[:h.size-4], castagnoli))
	return b
}

// parseSegmentHeader returns the header of segment seq at the start of
// data, or why there is none. Nothing in data is trusted before the
// checksum over the length it claims has passed.
func parseSegmentHeader(data []byte, seq uint64) (segHeader, string) {
	if len(data) < 16 {
		return segHeader{}, fmt.Sprintf("segment header truncated (%d bytes)", len(data))
	}
	if string(data[:8]) != walMagic {
		return segHeader{}, "bad magic"
	}
	v := binary.LittleEndian.Uint32(data[8:])
	if v != walVersion && v != walVersion3 {
		// Versions 1 and 2 had a 32-byte header with its checksum at [28:32].
		if (v == 1 || v == 2) && len(data) >= 32 &&
			binary.LittleEndian.Uint32(data[28:]) == crc32.Checksum(data[:28], castagnoli) {
			return segHeader{}, fmt.Sprintf("format version %d: this build reads versions %d and %d only, whose segments record "+
				"the log's identity (cluster, replica, members) and preallocated size; version %d logs cannot be upgraded "+
				"in place: run the build that wrote this log, or replace the replica with a new member", v, walVersion3, walVersion, v)
		}
		return segHeader{}, fmt.Sprintf("unknown format version %d, or a damaged header (this build reads versions %d and %d only)",
			v, walVersion3, walVersion)
	}
	h := int64(binary.LittleEndian.Uint32(data[12:]))
	switch {
	case h < int64(headerSizeV(v, 1)) || h > maxHeaderSize || h%recAlign != 0:
		return segHeader{}, fmt.Sprintf("header length %d out of range", h)
	case int64(len(data)) < h:
		return segHeader{}, fmt.Sprintf("segment header truncated (%d of %d bytes)", len(data), h)
	case binary.LittleEndian.Uint32(data[h-4:]) != crc32.Checksum(data[:h-4], castagnoli):
		return segHeader{}, "segment header checksum mismatch"
	}
	m := int(binary.LittleEndian.Uint32(data[52:]))
	if m < 1 || m > maxMembers || int64(headerSizeV(v, m)) != h {
		return segHeader{}, fmt.Sprintf("member count %d does not fit the header length %d", m, h)
	}
	if got := binary.LittleEndian.Uint64(data[16:]); got != seq {
		return segHeader{}, fmt.Sprintf("header names segment %d", got)
	}
	prealloc := binary.LittleEndian.Uint64(data[24:])
	if prealloc < uint64(h)+closeSlotSize || prealloc > 1<<62 {
		return segHeader{}, fmt.Sprintf("preallocated size %d out of range", prealloc)
	}
	id := Identity{ClusterID: binary.LittleEndian.Uint64(data[40:]), ReplicaID: wire.ReplicaID(binary.LittleEndian.Uint32(data[48:]))}
	id.Members = make([]wire.ReplicaID, m)
	for i := range id.Members {
		id.Members[i] = wire.ReplicaID(binary.LittleEndian.Uint32(data[segFixedHeader+4*i:]))
	}
	if err := id.Validate(); err != nil {
		return segHeader{}, fmt.Sprintf("header's identity is invalid: %v", err)
	}
	logID := binary.LittleEndian.Uint64(data[32:])
	if logID == 0 {
		return segHeader{}, "log ID 0"
	}
	start := uint64(1)
	if v >= walVersion {
		if start = binary.LittleEndian.Uint64(data[h-4-startFieldSize:]); start < 1 || start > seq {
			return segHeader{}, fmt.Sprintf("log start %d out of range (segment %d)", start, seq)
		}
	}
	hdr := newSegHeaderV(v, seq, int64(prealloc), logID, id, start)
	contract.Ensure(hdr.size == h, "header length recomputed differently")
	return hdr, ""
}

// sealRecord fills in the header of the record rec (header, body and
// padding), whose body is already in place. mark is the offset up to which
// the segment is durable now.
func sealRecord(rec []byte, kind byte, n int, mark int64, salt uint32) {
	contract.Require(len(rec) == recordSize(n), "record buffer does not fit the body")
	contract.Require(n >= 1 && n <= maxBody, "body length out of range")
	contract.Require(mark > 0 && mark%recAlign == 0, "synced mark out of range")
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

// appendCountRecord appends a seal or close record, whose body is a number
// of records (before it in the segment, for a seal; in the segment, for a
// close record).
func appendCountRecord(buf []byte, kind byte, records uint64, mark int64, salt uint32) []byte {
	contract.Require(kind == kindSeal || kind == kindClose, "not a counting record kind")
	start := len(buf)
	buf = grow(buf, recordSize(countBodySize))
	rec := buf[start:]
	binary.LittleEndian.PutUint64(rec[recHeaderSize:], records)
	sealRecord(rec, kind, countBodySize, mark, salt)
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
// r.off in a segment whose records start at first: a record boundary at or
// before the record itself.
func (r record) markPlausible(first int64) bool {
	return r.mark >= first && r.mark%recAlign == 0 && r.mark <= r.off
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
		(kind == kindSeal || kind == kindClose) && n != countBodySize:
		return record{}, fmt.Sprintf("body length %d wrong for record kind %d", n, kind)
	case kind != kindEntry && kind != kindHardState && kind != kindSeal && kind != kindClose:
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

// lastNonZero returns the offset just past the last non-zero byte of data
// at or after from, or from when there is none.
func lastNonZero(data []byte, from int64) int64 {
	end := int64(len(data))
	for end > from {
		k := min(end-from, int64(len(zeroPage)))
		if !bytes.Equal(data[end-k:end], zeroPage[:k]) {
			for data[end-1] == 0 {
				end--
			}
			return end
		}
		end -= k
	}
	return from
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
func findProof(data []byte, from, bad, first int64, salt uint32) (proof record, ok bool) {
	off := (from + recAlign - 1) &^ (recAlign - 1)
	for off+recHeaderSize <= int64(len(data)) {
		r, reason := checkRecord(data, off, salt)
		if reason != "" {
			off += recAlign
			continue
		}
		if r.markPlausible(first) && r.mark > bad {
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

// decodeCount decodes the body of a seal or close record.
func decodeCount(body []byte) uint64 {
	contract.Require(len(body) == countBodySize, "seal or close body has the wrong size")
	return binary.LittleEndian.Uint64(body)
}

// closeState is what a segment's close slot says.
type closeState struct {
	valid   bool   // a close record is there
	end     int64  // E: its records end here, all durable at Close
	records uint64 // how many records end at E
	// bad says why the slot is neither empty nor a valid close record: a
	// Close cut short by a crash, or damage. Recovery ignores such a slot.
	bad string
}

// readCloseSlot reads the close slot of a segment with header hdr.
func readCloseSlot(data []byte, hdr *segHeader) closeState {
	r, reason := checkRecord(data, hdr.size, hdr.salt)
	switch {
	case reason == "zero-filled" && allZero(data[hdr.size:min(hdr.first, int64(len(data)))]):
		return closeState{}
	case reason != "":
		return closeState{bad: reason}
	case r.kind != kindClose:
		return closeState{bad: fmt.Sprintf("record of kind %d in the close slot", r.kind)}
	case r.mark < hdr.first || r.mark%recAlign != 0:
		return closeState{bad: fmt.Sprintf("close record's end offset %d out of range", r.mark)}
	}
	return closeState{valid: true, end: r.mark, records: decodeCount(r.body)}
}

// segmentScan is what a segment's bytes say, before any decision is taken.
type segmentScan struct {
	header string // why the segment header is bad, or ""
	hdr    segHeader
	size   int64      // the file's size
	close  closeState // the close slot
	recs   []record   // valid records from the start, in order
	end    int64      // offset just past the last valid record (where the next goes)
	reason string     // why there is no valid record at end ("" when end == len)
	zero   bool       // every byte from end on is zero
	resync int64      // first valid record after end, or -1
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
	s := segmentScan{resync: -1, size: int64(len(data))}
	if s.hdr, s.header = parseSegmentHeader(data, seq); s.header != "" {
		return s
	}
	if s.size < s.hdr.first {
		s.end = s.size
		return s // verdict refuses it as shorter than preallocated
	}
	s.close = readCloseSlot(data, &s.hdr)
	salt, first := s.hdr.salt, s.hdr.first
	off := first
	lastMark := first
	for off < int64(len(data)) {
		r, reason := checkRecord(data, off, salt)
		if reason == "" && (!r.markPlausible(first) || r.mark < lastMark) {
			// Checksums pass but no writer could have written this mark here.
			reason = fmt.Sprintf("synced mark %d impossible here (previous mark %d)", r.mark, lastMark)
		}
		if reason == "" && r.kind == kindClose {
			reason = "close record outside the close slot"
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
			s.proof, s.hasProof = findProof(data, s.resync, s.end, first, salt)
			contract.Ensure(!s.hasProof || s.proof.off >= s.resync, "proof before the resync")
		}
	}
	return s
}

// why says why the valid records end at s.end.
func (s *segmentScan) why() string {
	if s.reason == "" {
		return "the records end at the end of the file"
	}
	return s.reason
}

// closeBoundary returns the offset where the segment's first n valid
// records end, or -1 when it has fewer.
func (s *segmentScan) closeBoundary(n uint64) int64 {
	switch {
	case n > uint64(len(s.recs)):
		return -1
	case n == 0:
		return s.hdr.first
	}
	r := s.recs[n-1]
	return r.off + r.size()
}

// verdict decides what a scanned segment means for recovery: nil when its
// records can be used (a torn or unsynced tail in the newest segment
// included), or why the log must not open. truncate reports a tail to cut
// off at s.end.
func (s *segmentScan) verdict(file string, newest bool) (truncate bool, err *CorruptionError) {
	switch {
	case s.header != "":
		return false, &CorruptionError{File: file, Offset: 0, Reason: s.header}
	case s.size < s.hdr.prealloc:
		return false, &CorruptionError{File: file, Offset: s.size, Reason: fmt.Sprintf(
			"the segment is %d bytes, shorter than the %d it was preallocated to (durably, before any record was written): "+
				"no crash shortens a segment, so it was truncated and the records past offset %d are lost; "+
				"restore the file from a copy, or replace this replica with a new member",
			s.size, s.hdr.prealloc, s.size)}
	case s.close.valid && s.end < s.close.end:
		return false, &CorruptionError{File: file, Offset: s.end, Reason: fmt.Sprintf(
			"%s, but the log was closed cleanly with %d records up to offset %d (close record at offset %d): "+
				"records lost after a clean shutdown are damage, not a torn write",
			s.why(), s.close.records, s.close.end, s.hdr.size)}
	case s.close.valid && s.closeBoundary(s.close.records) != s.close.end:
		return false, &CorruptionError{File: file, Offset: s.close.end, Reason: fmt.Sprintf(
			"the close record at offset %d says %d records end at offset %d, but the segment's records do not end there",
			s.hdr.size, s.close.records, s.close.end)}
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
