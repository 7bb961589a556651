package pmem

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math"

	"github.com/vestalabs/vesta/internal/contract"
)

// ring is the circular record log on a media: records in the data area
// between head and tail, and the two metadata slots plus flip word that say
// where head and tail are. It knows nothing of entries or hard states; the
// Log layer gives it opaque payloads and a userSize-byte state to commit.
//
// Crash consistency rests on three orderings, each enforced by a fence:
//
//  1. a record's bytes are flushed before the metadata that covers it is
//     made current (commit fences once after the records and the new slot);
//  2. the new metadata slot is durable before the flip word names it (the
//     flip is stored after that fence), so a torn slot is never current;
//  3. space is reused only after a committed head has moved past it (the
//     writer allocates from the committed head, and commit of a head advance
//     completes before begin can hand out the freed bytes).
//
// The flip word is one aligned 8-byte store, which reaches the persistence
// domain whole or not at all. Recovery trusts nothing past the committed
// tail.
type ring struct {
	m        *media
	name     string
	sb       superblock
	dataOff  int
	dataSize uint64

	seq   uint64 // sequence number of the committed metadata slot
	head  uint64 // committed: first live byte
	tail  uint64 // committed: end of the durable records
	wtail uint64 // end of the appended records, committed or not (>= tail)
	// flushed is the end of the appended bytes already written back
	// (tail <= flushed <= wtail). Records are written back at commit, each
	// line once, however many records share it.
	flushed uint64
	user    [userSize]byte

	// The record between begin and end.
	recOpen bool
	recPos  uint64
	recLen  int

	// failed is sticky: after a fence failed the durable state is unknown,
	// and nothing more may be acknowledged.
	failed error
}

var errStopWalk = errors.New("stop walk")

func (r *ring) phys(pos uint64) int       { return r.dataOff + int(pos%r.dataSize) }
func (r *ring) lapLeft(pos uint64) uint64 { return r.dataSize - pos%r.dataSize }

// maxPayload is the largest payload a record may carry: a record may take at
// most half the data area, so an empty log always has room for one whatever
// the lap position (a pad before it takes less than the record).
func (r *ring) maxPayload() int { return int(min(r.dataSize/2-recHdrSize, math.MaxInt32)) }

func (r *ring) used() uint64 { return r.wtail - r.head }
func (r *ring) free() uint64 { return r.dataSize - r.used() }

func (r *ring) corrupt(off int, reason string) error {
	return &CorruptError{Path: r.name, Offset: int64(off), Reason: reason}
}

// recover reads the committed state from m. It only reads: a crash image is
// never changed by looking at it.
func (r *ring) recover(m *media, name string) error {
	*r = ring{m: m, name: name}
	buf := m.buf
	if len(buf) < MinSize {
		return r.corrupt(0, "file of "+utoa(uint64(len(buf)))+" bytes is smaller than a log header and data area")
	}
	sb, version, why := decodeSuperblock(buf[superOff : superOff+metaSize])
	if why != "" {
		return r.corrupt(superOff, why)
	}
	if version != formatVersion {
		return &VersionError{Path: name, Version: version}
	}
	if sb.fileSize != uint64(len(buf)) {
		return r.corrupt(superOff, "file has "+utoa(uint64(len(buf)))+" bytes, superblock says "+utoa(sb.fileSize))
	}
	seq, ok := decodeFlip(binary.LittleEndian.Uint64(buf[flipOff:]))
	if !ok {
		return r.corrupt(flipOff, "flip word damaged")
	}
	off := slotOff(seq)
	md, ok := decodeMeta(buf[off : off+metaSize])
	if !ok {
		return r.corrupt(off, "current metadata slot checksum mismatch")
	}
	if md.seq != seq {
		return r.corrupt(off, "metadata slot holds sequence "+utoa(md.seq)+", flip word names "+utoa(seq))
	}
	if md.head > md.tail || md.tail-md.head > sb.dataSize || md.head%recAlign != 0 || md.tail%recAlign != 0 {
		return r.corrupt(off, "metadata head "+utoa(md.head)+" and tail "+utoa(md.tail)+" are inconsistent")
	}
	r.sb = sb
	r.dataOff = int(sb.dataOff)
	r.dataSize = sb.dataSize
	r.seq, r.head, r.tail, r.wtail, r.flushed, r.user = md.seq, md.head, md.tail, md.tail, md.tail, md.user
	r.checkInvariants()
	return nil
}

// walk visits the data records in [from, to), checking every header and
// checksum; from must be a record boundary. fn may return errStopWalk.
func (r *ring) walk(from, to uint64, fn func(pos uint64, payload []byte) error) error {
	contract.Requiref(from <= to && to-from <= r.dataSize, "ring: walk [%d,%d) spans more than the data area", from, to)
	buf := r.m.buf
	pos := from
	for pos < to {
		contract.Invariantf(pos%recAlign == 0, "ring: walk reached unaligned position %d", pos)
		left := r.lapLeft(pos)
		if left < recHdrSize { // too little room for a header: the writer skipped it
			pos += left
			continue
		}
		p := r.phys(pos)
		h := buf[p : p+recHdrSize]
		n := uint64(binary.LittleEndian.Uint32(h[0:]))
		kind := binary.LittleEndian.Uint16(h[4:])
		if binary.LittleEndian.Uint16(h[6:]) != 0 || binary.LittleEndian.Uint32(h[8:]) != uint32(pos>>3) {
			return r.corrupt(p, "record header at log position "+utoa(pos)+" damaged")
		}
		switch kind {
		case recPad:
			if n+recHdrSize != left || pos+left > to || crc32c(h[:12]) != binary.LittleEndian.Uint32(h[12:]) {
				return r.corrupt(p, "pad record at log position "+utoa(pos)+" damaged")
			}
			pos += left
		case recData:
			size := recHdrSize + align8(n)
			if size > left || size > to-pos {
				return r.corrupt(p, "record at log position "+utoa(pos)+" of "+utoa(n)+" bytes runs past the lap or the committed tail")
			}
			body := buf[p+recHdrSize : p+int(size)]
			if crc32.Update(crc32c(h[:12]), castagnoli, body) != binary.LittleEndian.Uint32(h[12:]) {
				return r.corrupt(p, "record at log position "+utoa(pos)+" checksum mismatch")
			}
			if err := fn(pos, body[:n]); err != nil {
				return err
			}
			pos += size
		default:
			return r.corrupt(p, "record at log position "+utoa(pos)+" has unknown kind "+utoa(uint64(kind)))
		}
	}
	if pos != to {
		return r.corrupt(r.phys(to), "records overrun the committed tail "+utoa(to))
	}
	return nil
}

// begin reserves room for a record with an n-byte payload at the write
// position and returns the payload's bytes in the mapping for the caller to
// fill; end seals it. A full log returns ErrFull and changes nothing.
func (r *ring) begin(n int) ([]byte, error) {
	contract.Require(!r.recOpen, "ring: begin while a record is open")
	if r.failed != nil {
		return nil, r.failed
	}
	if n < 0 || n > r.maxPayload() {
		return nil, errTooLarge(n, r.maxPayload())
	}
	size := recordSize(n)
	pos := r.wtail
	var skip uint64
	if left := r.lapLeft(pos); left < size {
		skip = left
	}
	if skip+size > r.free() {
		return nil, errFull(size+skip, r.free(), r.dataSize)
	}
	if skip > 0 {
		if skip >= recHdrSize {
			r.writePad(pos, skip)
		}
		pos += skip
		r.wtail = pos
	}
	contract.Invariantf(r.lapLeft(pos) >= size, "ring: record of %d bytes at %d straddles the end of the data area", size, pos)
	p := r.phys(pos)
	r.recOpen, r.recPos, r.recLen = true, pos, n
	return r.m.buf[p+recHdrSize : p+recHdrSize+n : p+recHdrSize+n], nil
}

func (r *ring) writePad(pos, skip uint64) {
	p := r.phys(pos)
	h := r.m.buf[p : p+recHdrSize]
	binary.LittleEndian.PutUint32(h[0:], uint32(skip-recHdrSize))
	binary.LittleEndian.PutUint16(h[4:], recPad)
	binary.LittleEndian.PutUint16(h[6:], 0)
	binary.LittleEndian.PutUint32(h[8:], uint32(pos>>3))
	binary.LittleEndian.PutUint32(h[12:], crc32c(h[:12]))
	r.m.wrote(p, recHdrSize)
}

// end seals the record begin opened: zero padding, header and checksum. The
// next commit writes it back, fences, and makes it live.
func (r *ring) end() {
	contract.Require(r.recOpen, "ring: end without begin")
	pos, n := r.recPos, r.recLen
	size := int(recordSize(n))
	p := r.phys(pos)
	rec := r.m.buf[p : p+size]
	clear(rec[recHdrSize+n:])
	binary.LittleEndian.PutUint32(rec[0:], uint32(n))
	binary.LittleEndian.PutUint16(rec[4:], recData)
	binary.LittleEndian.PutUint16(rec[6:], 0)
	binary.LittleEndian.PutUint32(rec[8:], uint32(pos>>3))
	binary.LittleEndian.PutUint32(rec[12:], crc32.Update(crc32c(rec[:12]), castagnoli, rec[recHdrSize:]))
	r.m.wrote(p, size)
	r.wtail = pos + uint64(size)
	r.recOpen = false
	if contract.Enabled {
		seen := false
		err := r.walk(pos, r.wtail, func(at uint64, payload []byte) error {
			seen = at == pos && len(payload) == n
			return nil
		})
		contract.Ensuref(err == nil && seen, "ring: record just written at %d does not read back: %v", pos, err)
	}
	r.checkInvariants()
}

// flushRecords writes back the appended bytes not yet written back: one
// range, or two where the records wrap around the end of the data area.
func (r *ring) flushRecords() {
	for a := r.flushed; a < r.wtail; {
		n := min(r.wtail-a, r.lapLeft(a))
		if plantedBugs&bugSkipRecordFlush == 0 {
			r.m.flush(r.phys(a), int(n))
		}
		a += n
	}
	r.flushed = r.wtail
}

// commit makes the records appended so far durable and current, with head
// moved to newHead (a record boundary in [head, wtail]) and user as the
// committed state: it writes back the new records' lines and the next
// metadata slot, fences, stores and writes back the flip word, and fences
// again. Nothing to commit costs nothing.
func (r *ring) commit(newHead uint64, user *[userSize]byte) error {
	contract.Require(!r.recOpen, "ring: commit while a record is open")
	contract.Requiref(r.head <= newHead && newHead <= r.wtail, "ring: new head %d outside [%d,%d]", newHead, r.head, r.wtail)
	if r.failed != nil {
		return r.failed
	}
	if newHead == r.head && r.wtail == r.tail && *user == r.user {
		return nil
	}
	seq := r.seq + 1
	if seq > maxSeq {
		return ErrSeqExhausted
	}
	r.flushRecords()
	md := meta{seq: seq, head: newHead, tail: r.wtail, user: *user}
	off := slotOff(seq)
	contract.Invariant(off != slotOff(r.seq), "ring: commit would overwrite the current metadata slot")
	md.encode(r.m.buf[off : off+metaSize])
	r.m.wrote(off, metaSize)
	r.m.flush(off, metaSize)
	// Ordering 1 and 2: records and the new slot durable before the flip.
	if plantedBugs&bugSkipSlotFence == 0 {
		if err := r.m.fence(); err != nil {
			r.failed = &SyncError{Path: r.name, Err: err}
			return r.failed
		}
	}
	r.m.store64(flipOff, flipWord(seq))
	if plantedBugs&bugSkipFlipFlush == 0 {
		r.m.flush(flipOff, 8)
	}
	if err := r.m.fence(); err != nil {
		r.failed = &SyncError{Path: r.name, Err: err}
		return r.failed
	}
	r.seq, r.head, r.tail, r.user = seq, newHead, md.tail, md.user
	if contract.Enabled {
		got, ok := decodeMeta(r.m.buf[off : off+metaSize])
		fseq, fok := decodeFlip(binary.LittleEndian.Uint64(r.m.buf[flipOff:]))
		contract.Ensure(ok && got == md && fok && fseq == seq, "ring: committed metadata does not read back")
	}
	r.checkInvariants()
	return nil
}

func (r *ring) checkInvariants() {
	contract.Invariantf(r.head <= r.tail && r.tail <= r.wtail && r.wtail-r.head <= r.dataSize,
		"ring: head %d, tail %d, write tail %d do not fit a data area of %d", r.head, r.tail, r.wtail, r.dataSize)
	contract.Invariantf(r.tail <= r.flushed && r.flushed <= r.wtail, "ring: flushed %d outside [%d,%d]", r.flushed, r.tail, r.wtail)
	contract.Invariantf(r.head%recAlign == 0 && r.tail%recAlign == 0 && r.wtail%recAlign == 0,
		"ring: positions %d/%d/%d not aligned", r.head, r.tail, r.wtail)
	contract.Invariantf(r.seq >= 1 && r.seq <= maxSeq, "ring: sequence %d out of range", r.seq)
}
