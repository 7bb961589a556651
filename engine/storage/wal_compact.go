package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	iofs "io/fs"
	"path/filepath"
	"sync/atomic"

	"github.com/vestalabs/vesta/engine/wire"
	"github.com/vestalabs/vesta/internal/contract"
)

// Compaction of the file WAL: the log start (wal_format.go, "The log
// start") and what the WAL keeps in memory to use it.

// segInfo is what the WAL knows of one of its segments without reading it:
// the slots of its entries, kept up to date by Append and rebuilt by
// recovery, so that Compact knows what it may release.
type segInfo struct {
	seq     uint64
	entries int       // entry records in the segment
	minSlot wire.Slot // smallest and largest slot among them (entries > 0)
	maxSlot wire.Slot
	// size is the file's size on disk: its preallocated size, or what
	// recovery found (a record that did not fit, or a zeroed tail, may take
	// it past that); the segment written is max(size, written).
	size int64
}

func (s *segInfo) note(slot wire.Slot) {
	if s.entries == 0 || slot < s.minSlot {
		s.minSlot = slot
	}
	if s.entries == 0 || slot > s.maxSlot {
		s.maxSlot = slot
	}
	s.entries++
}

// releasable reports whether every entry of the segment lies below below.
func (s *segInfo) releasable(below wire.Slot) bool { return s.entries == 0 || s.maxSlot < below }

// walStats is what Stats reports, published for readers on any goroutine.
type walStats struct {
	segments    atomic.Int64
	bytes       atomic.Int64
	start       atomic.Uint64
	compactions atomic.Uint64
}

// WALStats is the WAL's size on disk, for a status page.
type WALStats struct {
	Segments    int    // segment files the log holds
	Bytes       int64  // their size on disk, preallocated space included
	Start       uint64 // the oldest segment's sequence number (the log start)
	Compactions uint64 // Compacts that released segments since OpenWAL
}

// Stats returns the WAL's size on disk. It is safe to call from any
// goroutine, beside the one using the WAL; its fields are each current but
// may come from either side of a concurrent rollover or Compact.
func (w *WAL) Stats() WALStats {
	return WALStats{
		Segments:    int(w.stats.segments.Load()),
		Bytes:       w.stats.bytes.Load(),
		Start:       w.stats.start.Load(),
		Compactions: w.stats.compactions.Load(),
	}
}

// Size returns the bytes of all the WAL's segments on disk, preallocated
// space included (Stats().Bytes); safe from any goroutine.
func (w *WAL) Size() int64 { return w.stats.bytes.Load() }

// publish makes the current sizes visible to Stats.
func (w *WAL) publish() {
	w.stats.bytes.Store(w.sealedBytes + max(w.segs[len(w.segs)-1].size, w.written))
	w.stats.segments.Store(int64(len(w.segs) + len(w.released)))
	w.stats.start.Store(w.start)
	w.stats.compactions.Store(w.compactions)
}

// addSegment records that segment seq, just created, is the one written.
func (w *WAL) addSegment(seq uint64) {
	if n := len(w.segs); n > 0 {
		contract.Require(w.segs[n-1].seq+1 == seq, "segments added out of order")
		w.sealedBytes += w.segs[n-1].size
	}
	w.segs = append(w.segs, segInfo{seq: seq, size: w.hdr.prealloc})
	w.publish()
}

// noteEntry records an entry appended to the segment written.
func (w *WAL) noteEntry(slot wire.Slot) { w.segs[len(w.segs)-1].note(slot) }

// sealCurrent records the final size of the segment written, sealed and
// closed by a rollover.
func (w *WAL) sealCurrent() {
	s := &w.segs[len(w.segs)-1]
	s.size = max(s.size, w.written)
}

// noteSegment records a segment recovery accepted, with its valid records
// (those before a torn tail, when truncated is set: its file is then cut
// back to max(preallocated, end)).
func (w *WAL) noteSegment(s *segmentScan, truncated bool) {
	info := segInfo{seq: s.hdr.seq, size: s.size}
	if truncated {
		info.size = min(s.size, max(s.hdr.prealloc, s.end))
	}
	for _, r := range s.recs {
		if r.kind == kindEntry {
			info.note(wire.Slot(binary.LittleEndian.Uint64(r.body)))
		}
	}
	if n := len(w.segs); n > 0 {
		contract.Invariant(w.segs[n-1].seq+1 == info.seq, "recovered segments out of order")
	}
	w.segs = append(w.segs, info)
}

// recountSizes sums the sizes of the segments not written, after recovery.
func (w *WAL) recountSizes() {
	w.sealedBytes = 0
	for _, s := range w.segs[:len(w.segs)-1] {
		w.sealedBytes += s.size
	}
	w.publish()
}

// releaseBelowStart applies the log start to the segments found (sorted,
// headers checked): segments below start were released by a Compact that
// a crash cut short, and are removed; from start on the sequence must begin
// at start and have no gap, else the log lost a segment and is refused. It
// returns the segments from start on. It checks before it removes anything,
// so that a log it refuses is left as it was found.
func (w *WAL) releaseBelowStart(seqs []uint64, start uint64) ([]uint64, error) {
	i := 0
	for i < len(seqs) && seqs[i] < start {
		i++
	}
	released, rest := seqs[:i], seqs[i:]
	contract.Invariant(len(rest) > 0, "the segment recording the log start is below it")
	if rest[0] != start {
		reason := fmt.Sprintf("segment missing: the oldest segment is %s, and no segment header records a log start "+
			"after %s: the segments before it were lost, not released by a compaction", segmentName(rest[0]), segmentName(start))
		if start > 1 {
			reason = fmt.Sprintf("segment missing: the log starts at %s (a compaction released the segments before it), "+
				"but the oldest segment from there on is %s", segmentName(start), segmentName(rest[0]))
		}
		return nil, &CorruptionError{File: filepath.Join(w.dir, segmentName(start)), Offset: 0, Reason: reason}
	}
	for j := 1; j < len(rest); j++ {
		if rest[j] != rest[j-1]+1 {
			return nil, &CorruptionError{File: filepath.Join(w.dir, segmentName(rest[j-1]+1)), Offset: 0,
				Reason: fmt.Sprintf("segment missing: %s is followed by %s", segmentName(rest[j-1]), segmentName(rest[j]))}
		}
	}
	// Oldest first, though the rule does not need it: any subset of
	// released segments may be left by a crash. recover syncs the
	// directory before OpenWAL returns.
	for _, seq := range released {
		if err := w.fs.Remove(filepath.Join(w.dir, segmentName(seq))); err != nil {
			return nil, fmt.Errorf("storage: wal: removing a segment released by an interrupted compaction: %w", err)
		}
	}
	if len(released) > 0 {
		w.log.Info("wal: removed segments released by a compaction that a crash interrupted",
			"dir", w.dir, "first", segmentName(released[0]), "last", segmentName(released[len(released)-1]),
			"count", len(released), "start", segmentName(start))
	}
	return rest, nil
}

// Compact implements Compactor. It releases the longest run of oldest
// segments whose entries all lie below below, never the segment being
// written, and makes every record appended so far durable (it is also a
// Sync). The order (wal_format.go, "The log start"): the latest hard state
// is appended to the segment written, then a rollover syncs it and starts a
// segment whose header records the new log start, then the released
// segments are removed, oldest first, and the directory synced. A crash at
// any point leaves a log that opens with the hard state and every entry at
// or above below.
//
// A Compact that releases something therefore starts a new segment, and
// the rest of the one written stays allocated until a later Compact
// releases it; one that releases nothing is a Sync. Load called afterwards
// returns the state recovered at open without the entries below below, so
// that their memory comes back too.
//
// A failure to remove a released segment or to sync the directory after
// the removals is returned, but leaves the WAL usable: everything was
// durable and the new log start recorded before the first removal, and the
// next Compact (or OpenWAL) removes what is left. Any other error makes the
// WAL unusable, as a failed Sync does (a *FailedError); a reopen finishes
// what such a Compact left half done.
func (w *WAL) Compact(below wire.Slot) error {
	if err := w.usable(); err != nil {
		return err
	}
	n := 0
	for n < len(w.segs)-1 && w.segs[n].releasable(below) {
		n++
	}
	w.dropLoadedBelow(below)
	if n == 0 {
		if err := w.Sync(); err != nil {
			return err
		}
		return w.removeReleased()
	}
	start := w.segs[n].seq
	contract.Invariant(start > w.start && start <= w.hdr.seq, "log start out of range")
	// 1. The latest hard state into a segment that stays, durable (with
	// every record) before the new start is: the record that holds it may
	// be in a segment about to go. reserve may roll over first; the new
	// segment then still records the old start.
	if err := w.reserve(recordSize(hardStateSize)); err != nil {
		return err
	}
	w.buf = appendHardStateRecord(w.buf, w.lastHS, w.synced, w.hdr.salt)
	w.records++
	// 2. The rollover seals and syncs, then creates the next segment with
	// the new start in its header and syncs the directory.
	w.start = start
	if err := w.roll(); err != nil {
		return err
	}
	// 3. Remove the released segments; recovery removes what a crash left.
	w.released = append(w.released, w.segs[:n]...)
	w.segs = append(w.segs[:0], w.segs[n:]...)
	w.compactions++
	contract.Ensure(w.segs[0].seq == w.start && w.synced == w.written && len(w.buf) == 0, "Compact left the log inconsistent")
	w.checkInvariants()
	return w.removeReleased()
}

// removeReleased removes the segments released below the log start, oldest
// first, and syncs the directory. Its errors leave the WAL usable: those
// segments are no part of the log any more, whether or not they exist.
func (w *WAL) removeReleased() error {
	if len(w.released) == 0 {
		return nil
	}
	defer w.publish()
	for len(w.released) > 0 {
		s := w.released[0]
		contract.Invariant(s.seq < w.start, "releasing a segment of the log")
		path := filepath.Join(w.dir, segmentName(s.seq))
		if err := w.fs.Remove(path); err != nil && !errors.Is(err, iofs.ErrNotExist) {
			return fmt.Errorf("storage: wal: removing segment %s, released by a compaction: %w "+
				"(the log is intact; the next Compact or OpenWAL removes it)", path, err)
		}
		w.sealedBytes -= s.size
		w.released = w.released[1:]
	}
	w.released = nil
	if err := w.fs.SyncDir(w.dir); err != nil {
		return fmt.Errorf("storage: wal: syncing the directory after removing released segments: %w "+
			"(the log is intact; a crash may leave some of them, which OpenWAL removes)", err)
	}
	return nil
}

// dropLoadedBelow releases the recovered entries below below, which Load
// would otherwise keep (and their values' memory) for the WAL's lifetime.
func (w *WAL) dropLoadedBelow(below wire.Slot) {
	kept := 0
	for i := range w.loaded.Entries {
		if w.loaded.Entries[i].Slot >= below {
			kept++
		}
	}
	if kept == len(w.loaded.Entries) {
		return
	}
	es := make([]wire.Entry, 0, kept)
	for _, e := range w.loaded.Entries {
		if e.Slot >= below {
			es = append(es, e)
		}
	}
	w.loaded.Entries = es
}
