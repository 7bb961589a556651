package storage

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"path/filepath"
	"strings"

	"github.com/vestalabs/vesta/engine/storage/vfs"
	"github.com/vestalabs/vesta/engine/wire"
)

// DumpWAL writes a readable listing of the WAL in dir on the operating
// system's file system to out; see DumpWALFS.
func DumpWAL(dir string, out io.Writer) error { return DumpWALFS(vfs.Default, dir, out) }

// DumpWALFS writes a readable listing of the WAL in dir to out: first whose
// log it is (the identity and log ID its first segment records), then for
// each segment its header and close slot, one line per record (offset, kind,
// slot, ballot, value kind and size, checksum ok or bad), the bytes past the
// last record, and what OpenWAL would decide. It lists the valid records it
// can find past a bad one too. It only reads (it takes no lock and truncates
// nothing), so it may run beside a live WAL, whose unsynced tail it may show
// torn. Damage is reported in the listing, not as an error: the error is for
// failing to read or to write the listing. It cannot know whose log the
// caller expects, so it reports a segment whose identity differs from the
// first segment's, and OpenWAL would refuse either one that is not the
// replica's own.
func DumpWALFS(fs vfs.FS, dir string, out io.Writer) error {
	bw := bufio.NewWriter(out)
	names, err := fs.List(dir)
	if err != nil {
		return err
	}
	var seqs []uint64
	var paths []string
	for _, name := range names {
		switch seq, ok := parseSegmentName(name); {
		case ok:
			seqs = append(seqs, seq)
			paths = append(paths, filepath.Join(dir, name))
		case strings.HasSuffix(name, ".wal.tmp"):
			fmt.Fprintf(bw, "%s: temporary segment of an interrupted rollover (OpenWAL removes it)\n", name)
		case name != "LOCK":
			fmt.Fprintf(bw, "%s: not part of the WAL, ignored\n", name)
		}
	}
	var problem string
	var scratch []byte
	var first *segHeader // the first valid header: whose log this is
	records, entries := 0, 0
	if len(seqs) == 0 {
		problem = "no segments: " + ErrNoLog.Error()
	}
	start, err := dumpLogStart(fs, paths, seqs)
	if err != nil {
		return err
	}
	if start > 1 {
		fmt.Fprintf(bw, "log start: segment %s (a compaction released the segments before it)\n", segmentName(start))
	}
	kept := 0 // segments at or after the log start
	for i, seq := range seqs {
		if seq < start {
			fmt.Fprintf(bw, "segment %s: released by a compaction a crash interrupted (OpenWAL removes it)\n", filepath.Base(paths[i]))
			continue
		}
		kept++
		if kept == 1 && seq != start && problem == "" {
			problem = fmt.Sprintf("segment %s is missing (the log starts there)", segmentName(start))
			fmt.Fprintf(bw, "MISSING %s\n", segmentName(start))
		}
		if kept > 1 && seq != seqs[i-1]+1 && problem == "" {
			problem = fmt.Sprintf("segment %s is missing", segmentName(seqs[i-1]+1))
			fmt.Fprintf(bw, "MISSING %s\n", segmentName(seqs[i-1]+1))
		}
		if scratch, err = readFile(fs, paths[i], scratch); err != nil {
			return err
		}
		s := scanSegment(scratch, seq)
		if s.header == "" && first == nil {
			hdr := s.hdr
			first = &hdr
			fmt.Fprintf(bw, "identity: %s; log ID %016x\n", hdr.id, hdr.logID)
		}
		nrec, nent := dumpSegment(bw, scratch, &s, filepath.Base(paths[i]))
		records += nrec
		entries += nent
		if s.header == "" && first != nil {
			var why string
			if err := s.hdr.id.Check(paths[i], first.id); err != nil {
				why = fmt.Sprintf("belongs to %s, not %s as the first segment (copied in from another log?)", s.hdr.id, first.id)
			} else if s.hdr.logID != first.logID {
				why = fmt.Sprintf("belongs to log ID %016x, not %016x as the first segment (copied in from another log?)", s.hdr.logID, first.logID)
			}
			if why != "" {
				fmt.Fprintf(bw, "  verdict: ANOTHER LOG'S SEGMENT: %s\n", why)
				if problem == "" {
					problem = paths[i] + " " + why
				}
				continue
			}
		}
		truncate, cerr := s.verdict(paths[i], i == len(seqs)-1)
		switch {
		case cerr != nil:
			fmt.Fprintf(bw, "  verdict: CORRUPT at offset %d: %s\n", cerr.Offset, cerr.Reason)
			if problem == "" {
				problem = cerr.Error()
			}
		case truncate:
			dropped := lastNonZero(scratch, s.end) - s.end
			if s.resync >= 0 {
				fmt.Fprintf(bw, "  verdict: unsynced tail at offset %d (%s; no later record's synced mark covers it); OpenWAL drops its %d bytes\n", s.end, s.reason, dropped)
			} else {
				fmt.Fprintf(bw, "  verdict: torn tail at offset %d (%s); OpenWAL drops its %d bytes\n", s.end, s.reason, dropped)
			}
		default:
			fmt.Fprintf(bw, "  verdict: ok\n")
		}
	}
	fmt.Fprintf(bw, "%d segments, %d valid records, %d entries\n", kept, records, entries)
	if problem != "" {
		fmt.Fprintf(bw, "OpenWAL refuses this log: %s\n", problem)
	} else {
		fmt.Fprintf(bw, "OpenWAL accepts this log (given the identity above)\n")
	}
	return bw.Flush()
}

// dumpSegment lists one segment's records and returns how many valid
// records and entries it found.
func dumpSegment(w io.Writer, data []byte, s *segmentScan, name string) (records, entries int) {
	if s.header != "" {
		fmt.Fprintf(w, "segment %s size=%d header BAD: %s\n", name, len(data), s.header)
		return 0, 0
	}
	hdr := &s.hdr
	fmt.Fprintf(w, "segment %s seq=%d version=%d log-start=%d size=%d preallocated=%d header ok\n",
		name, hdr.seq, hdr.version, hdr.start, len(data), hdr.prealloc)
	if int64(len(data)) < hdr.first {
		return 0, 0
	}
	switch c := s.close; {
	case c.valid:
		fmt.Fprintf(w, "  off=%-10d close     records=%d end=%d (closed cleanly with these records)\n", hdr.size, c.records, c.end)
	case c.bad != "":
		fmt.Fprintf(w, "  off=%-10d close slot BAD: %s (ignored: a Close cut short, or damage)\n", hdr.size, c.bad)
	default:
		fmt.Fprintf(w, "  off=%-10d close slot empty (no clean Close while this segment was the newest)\n", hdr.size)
	}
	salt := hdr.salt
	off := hdr.first
	for off < int64(len(data)) {
		r, reason := checkRecord(data, off, salt)
		if reason == "" {
			records++
			if r.kind == kindEntry {
				entries++
			}
			fmt.Fprintf(w, "  off=%-10d %s crc=ok\n", off, describeRecord(r))
			off += r.size()
			continue
		}
		if allZero(data[off:]) {
			fmt.Fprintf(w, "  off=%-10d end: zero-filled to %d\n", off, len(data))
			return records, entries
		}
		fmt.Fprintf(w, "  off=%-10d BAD %s crc=bad: %s\n", off, describeBadHeader(data, off, salt), reason)
		next := findRecord(data, off+recAlign, salt)
		if next < 0 {
			fmt.Fprintf(w, "  off=%-10d end: no valid record in the %d bytes after it\n", off, int64(len(data))-off)
			return records, entries
		}
		fmt.Fprintf(w, "  off=%-10d skipped %d bytes to the next valid record\n", off, next-off)
		off = next
	}
	fmt.Fprintf(w, "  off=%-10d end of file\n", off)
	return records, entries
}

func describeRecord(r record) string {
	switch r.kind {
	case kindEntry:
		e := decodeEntry(r.body)
		return fmt.Sprintf("entry     slot=%d ballot=%v value=%s size=%d", e.Slot, e.Ballot, valueKindName(e.Value.Kind), len(e.Value.Data))
	case kindHardState:
		hs := decodeHardState(r.body)
		return fmt.Sprintf("hardstate promised=%v commit=%d", hs.Promised, hs.Commit)
	case kindSeal:
		return fmt.Sprintf("seal      records=%d synced=%d", decodeCount(r.body), r.mark)
	case kindClose:
		return fmt.Sprintf("close     records=%d end=%d (outside the close slot)", decodeCount(r.body), r.mark)
	}
	return fmt.Sprintf("kind=%d", r.kind)
}

// describeBadHeader shows what a bad record's header claims, and the slot
// and ballot its body claims when the header checks: untrusted, for a human.
func describeBadHeader(data []byte, off int64, salt uint32) string {
	if off+recHeaderSize > int64(len(data)) {
		return fmt.Sprintf("(%d bytes)", int64(len(data))-off)
	}
	h := data[off : off+recHeaderSize]
	kind, n := h[12], int64(binary.LittleEndian.Uint32(h[4:]))
	s := fmt.Sprintf("kind=%d len=%d", kind, n)
	if binary.LittleEndian.Uint32(h[0:]) != crc32.Update(salt, castagnoli, h[4:]) {
		return s + " (header unchecked)"
	}
	if body := data[off+recHeaderSize:]; kind == kindEntry && n >= entryFixedSize && int64(len(body)) >= n {
		e := decodeEntry(body[:n])
		s += fmt.Sprintf(" (body unchecked: slot=%d ballot=%v value=%s size=%d)", e.Slot, e.Ballot, valueKindName(e.Value.Kind), len(e.Value.Data))
	}
	return s
}

func valueKindName(k wire.ValueKind) string {
	switch k {
	case wire.ValueBatch:
		return "batch"
	case wire.ValueNoop:
		return "noop"
	}
	return fmt.Sprintf("kind(%d)", k)
}

// dumpLogStart returns the log start as OpenWAL would find it: the largest
// that a valid segment header of the first valid header's log records, 1
// where none does.
func dumpLogStart(fs vfs.FS, paths []string, seqs []uint64) (uint64, error) {
	start, logID := uint64(1), uint64(0)
	buf := make([]byte, maxHeaderSize)
	for i, seq := range seqs {
		n, err := readAt(fs, paths[i], buf)
		if err != nil {
			return 0, err
		}
		hdr, reason := parseSegmentHeader(buf[:n], seq)
		if reason != "" || (logID != 0 && hdr.logID != logID) {
			continue
		}
		logID = hdr.logID
		start = max(start, hdr.start)
	}
	return start, nil
}

// WALIdentity reads whose log the WAL in dir is, from its segments' headers
// (the oldest valid one at or after the log's start), without opening it:
// for offline tools (vestactl replay) that then open it with OpenWAL as its
// replica would.
func WALIdentity(fs vfs.FS, dir string) (Identity, error) {
	names, err := fs.List(dir)
	if err != nil {
		return Identity{}, err
	}
	var seqs []uint64
	var paths []string
	for _, name := range names {
		if seq, ok := parseSegmentName(name); ok {
			seqs = append(seqs, seq)
			paths = append(paths, filepath.Join(dir, name))
		}
	}
	if len(seqs) == 0 {
		return Identity{}, fmt.Errorf("storage: wal %s: %w", dir, ErrNoLog)
	}
	start, err := dumpLogStart(fs, paths, seqs)
	if err != nil {
		return Identity{}, err
	}
	var scratch []byte
	for i, seq := range seqs {
		if seq < start {
			continue
		}
		if scratch, err = readFile(fs, paths[i], scratch); err != nil {
			return Identity{}, err
		}
		if s := scanSegment(scratch, seq); s.header == "" {
			return cloneIdentity(s.hdr.id), nil
		}
	}
	return Identity{}, fmt.Errorf("storage: wal %s: no segment has a valid header", dir)
}
