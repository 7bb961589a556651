package storage

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/vestalabs/vesta/engine/paxos"
	"github.com/vestalabs/vesta/engine/storage/vfs"
	"github.com/vestalabs/vesta/engine/wire"
	"github.com/vestalabs/vesta/internal/contract"
)

// Segment and buffer sizes.
const (
	// DefaultSegmentSize is the segment size when WALOptions leaves it zero.
	DefaultSegmentSize = 64 << 20
	// MinSegmentSize is the smallest segment size OpenWAL accepts.
	MinSegmentSize = 256
	// DefaultBufferSize is the buffer size when WALOptions leaves it zero.
	DefaultBufferSize = 1 << 20
)

// WALOptions configures OpenWAL. The zero value is the production setting
// on the operating system's file system.
type WALOptions struct {
	// FS is the file system the WAL lives on; nil means vfs.Default.
	FS vfs.FS
	// SegmentSize is the size each segment is preallocated to and at which
	// the WAL moves on to a new one. A record too large for an empty segment
	// gets a segment of its own, which grows past this size. Zero means
	// DefaultSegmentSize; it must be at least MinSegmentSize.
	SegmentSize int64
	// BufferSize bounds the encoded records Append keeps in memory: when an
	// Append leaves at least this many bytes unwritten, it writes them (one
	// write, no sync). Zero or less means DefaultBufferSize.
	BufferSize int
}

// WAL is the segmented file write-ahead log: a Log on a file system.
//
// Write path and group commit: Append encodes records into a buffer in
// memory and copies the entries' data, so the caller may reuse its buffers
// as soon as Append returns. Sync writes the whole buffer with one write
// and then issues one fdatasync, which makes durable every record appended
// since the previous Sync. Append itself writes only when the buffer passes
// WALOptions.BufferSize (one write per Append at most) or at a segment
// rollover.
//
// What is durable before what:
//
//   - Records are durable in the order appended; a Sync that returned nil
//     made every record appended before it durable.
//   - A segment's header, preallocation and name are durable before any
//     record is written into it (the segment is created under a temporary
//     name, synced, renamed and the directory synced).
//   - At rollover the full segment's last records and its seal record are
//     written and synced before the next segment is created; rollover
//     therefore makes every record appended so far durable, as a Sync would.
//   - OpenWAL syncs the newest segment and the directory before it returns,
//     so what Load reports is durable even when the previous process died
//     with records in the page cache that it had never synced.
//
// After any write, sync or file-system failure the WAL is unusable: every
// method returns a *FailedError (see there why); close it and open again.
//
// A WAL is used by one goroutine at a time, as the Log contract says.
type WAL struct {
	fs   vfs.FS
	dir  string
	opts WALOptions
	lock io.Closer

	// The segment being written.
	file    vfs.File
	path    string
	seq     uint64
	salt    uint32
	written int64  // bytes of the segment in the file; buf goes at this offset
	synced  int64  // bytes of the segment known durable
	marked  int64  // the highest synced mark encoded into the segment's records
	records uint64 // records in the segment, buffered ones included (the seal counts them)
	buf     []byte // encoded records not yet written, owned by the WAL

	lastHS paxos.HardState // the last hard state appended (or recovered)
	loaded paxos.Persisted // what recovery found, for Load
	err    error           // set once the WAL is unusable
	closed bool
}

var _ Log = (*WAL)(nil)

// OpenWAL opens the write-ahead log in dir, creating dir and an empty log
// where there is none, and recovers it (see Load):
//
//   - The newest segment's torn or unsynced tail is truncated at its first
//     bad record, and the segment re-preallocated: a record cut short or
//     failing its checksum, zero-filled preallocated space, and valid
//     records after a bad one when none of them proves by its synced mark
//     that the bad one had been synced (a power failure may write unsynced
//     pages back out of order; see wal_format.go).
//   - Damage anywhere else (a bad record that a later record's synced mark
//     shows was synced, any damage to a segment that is not the newest, a
//     missing segment, a bad segment header or unknown format version)
//     refuses to open with a *CorruptionError naming the file and byte
//     offset: those records were durable, and a replica must not forget a
//     promise or a vote.
//
// Left-over temporary segments from an interrupted rollover are removed. The
// directory is locked (file LOCK) until Close.
func OpenWAL(dir string, opts WALOptions) (*WAL, error) {
	if opts.FS == nil {
		opts.FS = vfs.Default
	}
	if opts.SegmentSize == 0 {
		opts.SegmentSize = DefaultSegmentSize
	}
	if opts.SegmentSize < MinSegmentSize {
		return nil, fmt.Errorf("storage: wal segment size %d below the minimum %d", opts.SegmentSize, MinSegmentSize)
	}
	if opts.BufferSize <= 0 {
		opts.BufferSize = DefaultBufferSize
	}
	if err := opts.FS.MkdirAll(dir); err != nil {
		return nil, fmt.Errorf("storage: wal: %w", err)
	}
	lock, err := opts.FS.Lock(filepath.Join(dir, "LOCK"))
	if err != nil {
		return nil, fmt.Errorf("storage: wal: %w", err)
	}
	w := &WAL{fs: opts.FS, dir: dir, opts: opts, lock: lock}
	if err := w.recover(); err != nil {
		if w.file != nil {
			w.file.Close()
		}
		lock.Close()
		return nil, err
	}
	w.buf = make([]byte, 0, opts.BufferSize)
	w.checkInvariants()
	return w, nil
}

// recover reads every segment, fills w.loaded and leaves w ready to append.
func (w *WAL) recover() error {
	names, err := w.fs.List(w.dir)
	if err != nil {
		return fmt.Errorf("storage: wal: %w", err)
	}
	var seqs []uint64
	for _, name := range names {
		if strings.HasSuffix(name, ".wal.tmp") {
			// A rollover died before its rename: the segment never held a record.
			if err := w.fs.Remove(filepath.Join(w.dir, name)); err != nil {
				return fmt.Errorf("storage: wal: %w", err)
			}
			continue
		}
		if seq, ok := parseSegmentName(name); ok {
			seqs = append(seqs, seq)
		}
	}
	for i := 1; i < len(seqs); i++ {
		contract.Invariant(seqs[i] > seqs[i-1], "segment names not sorted") // fixed-width hex sorts numerically
		if seqs[i] != seqs[i-1]+1 {
			return &CorruptionError{File: filepath.Join(w.dir, segmentName(seqs[i-1]+1)), Offset: 0,
				Reason: fmt.Sprintf("segment missing: %s is followed by %s", segmentName(seqs[i-1]), segmentName(seqs[i]))}
		}
	}
	var scratch []byte
	next := uint64(1)
	for i, seq := range seqs {
		path := filepath.Join(w.dir, segmentName(seq))
		if scratch, err = readFile(w.fs, path, scratch); err != nil {
			return fmt.Errorf("storage: wal: %w", err)
		}
		s := scanSegment(scratch, seq)
		newest := i == len(seqs)-1
		truncate, cerr := s.verdict(path, newest)
		if cerr != nil {
			return cerr
		}
		w.collect(s.recs)
		next = seq + 1
		if newest {
			if err := w.resume(seq, path, &s, truncate); err != nil {
				return err
			}
		}
	}
	if w.file == nil {
		if err := w.createSegment(next); err != nil {
			return err
		}
	}
	// Make every name recovery relied on durable (a rename whose directory
	// sync the previous process never reached, a removed temporary file).
	if err := w.fs.SyncDir(w.dir); err != nil {
		return fmt.Errorf("storage: wal: %w", err)
	}
	return nil
}

// readFile reads all of name into buf's storage.
func readFile(fs vfs.FS, name string, buf []byte) ([]byte, error) {
	f, err := fs.Open(name)
	if err != nil {
		return buf, err
	}
	defer f.Close()
	size, err := f.Size()
	if err != nil {
		return buf, err
	}
	if int64(cap(buf)) < size {
		buf = make([]byte, size)
	}
	buf = buf[:size]
	n, err := f.ReadAt(buf, 0)
	if err == io.EOF && int64(n) == size {
		err = nil
	}
	if err == nil && int64(n) != size {
		err = fmt.Errorf("%s: read %d of %d bytes", name, n, size)
	}
	return buf, err
}

// collect adds the valid records of one segment to w.loaded, copying the
// value data (recs alias the scratch buffer) into one arena per segment.
func (w *WAL) collect(recs []record) {
	total := 0
	for _, r := range recs {
		if r.kind == kindEntry {
			total += len(r.body) - entryFixedSize
		}
	}
	arena := make([]byte, 0, total)
	for _, r := range recs {
		switch r.kind {
		case kindEntry:
			e := decodeEntry(r.body)
			if len(e.Value.Data) == 0 {
				e.Value.Data = nil
			} else {
				start := len(arena)
				arena = append(arena, e.Value.Data...)
				e.Value.Data = arena[start:len(arena):len(arena)]
			}
			w.loaded.Entries = append(w.loaded.Entries, e)
		case kindHardState:
			w.loaded.HardState = decodeHardState(r.body)
		case kindSeal, kindMark:
		default:
			contract.Invariantf(false, "scan passed record kind %d", r.kind)
		}
	}
	contract.Ensure(len(arena) == total, "arena size")
	w.lastHS = w.loaded.HardState
}

// resume makes the newest segment durable as recovery found it (cutting a
// torn tail) and, unless it is sealed, the one being written.
func (w *WAL) resume(seq uint64, path string, s *segmentScan, truncate bool) error {
	f, err := w.fs.OpenReadWrite(path)
	if err != nil {
		return fmt.Errorf("storage: wal: %w", err)
	}
	w.file = f // closed by OpenWAL on error
	if truncate {
		if err := f.Truncate(s.end); err != nil {
			return fmt.Errorf("storage: wal: truncating the torn tail: %w", err)
		}
	}
	if !s.sealed {
		if err := f.Preallocate(w.opts.SegmentSize); err != nil {
			return fmt.Errorf("storage: wal: %w", err)
		}
	}
	// After a process crash the records just read may sit in the page cache
	// only; the caller is about to act on them as durable. A sealed segment
	// must be durable before OpenWAL creates its successor: the previous
	// process may have died between writing the seal and syncing it.
	if err := f.Sync(); err != nil {
		return fmt.Errorf("storage: wal: %w", err)
	}
	if s.sealed {
		w.file = nil
		if err := f.Close(); err != nil {
			return fmt.Errorf("storage: wal: %w", err)
		}
		return nil
	}
	w.path, w.seq, w.salt = path, seq, segmentSalt(seq)
	w.written, w.synced, w.records = s.end, s.end, uint64(len(s.recs))
	w.marked = segHeaderSize
	if len(s.recs) > 0 {
		w.marked = s.recs[len(s.recs)-1].mark
	}
	return nil
}

// createSegment creates segment seq durably and makes it the one written.
// The caller has closed the previous one.
func (w *WAL) createSegment(seq uint64) error {
	path := filepath.Join(w.dir, segmentName(seq))
	tmp := path + ".tmp"
	f, err := w.fs.Create(tmp)
	if err != nil {
		return &FailedError{Op: "create", File: tmp, Err: err}
	}
	op, err := "write", error(nil)
	if _, err = f.WriteAt(encodeSegmentHeader(seq), 0); err == nil {
		if op, err = "preallocate", f.Preallocate(w.opts.SegmentSize); err == nil {
			if op, err = "sync", f.Sync(); err == nil {
				if op, err = "rename", w.fs.Rename(tmp, path); err == nil {
					op, err = "sync directory", w.fs.SyncDir(w.dir)
				}
			}
		}
	}
	if err != nil {
		f.Close()
		return &FailedError{Op: op, File: tmp, Err: err}
	}
	w.file, w.path, w.seq, w.salt = f, path, seq, segmentSalt(seq)
	w.written, w.synced, w.records, w.marked = segHeaderSize, segHeaderSize, 0, segHeaderSize
	return nil
}

func (w *WAL) usable() error {
	if w.closed {
		return ErrWALClosed
	}
	return w.err
}

// fail makes the WAL unusable and returns why.
func (w *WAL) fail(op string, err error) error {
	var fe *FailedError
	if !errors.As(err, &fe) {
		fe = &FailedError{Op: op, File: w.path, Err: err}
	}
	w.err = fe
	return fe
}

// Append implements Log: it encodes the entries, then the hard state when
// saveHS is set, and copies everything it needs, so the caller may reuse
// the entries' buffers when it returns. The records are durable after the
// next successful Sync (or rollover), not before. An entry whose data
// exceeds MaxValueSize fails the whole Append with ErrValueTooLarge and
// records nothing; other errors make the WAL unusable.
func (w *WAL) Append(entries []wire.Entry, hs paxos.HardState, saveHS bool) error {
	if err := w.usable(); err != nil {
		return err
	}
	for i := range entries {
		e := &entries[i]
		if len(e.Value.Data) > MaxValueSize {
			return ErrValueTooLarge
		}
		// Formatted checks sit behind their condition so that the hot path
		// boxes no arguments, even in contract builds.
		if e.Ballot.IsZero() {
			contract.Requiref(false, "entry for slot %d has the zero ballot", e.Slot)
		}
		if e.Value.Kind == 0 {
			contract.Requiref(false, "entry for slot %d has no value kind", e.Slot)
		}
	}
	if saveHS {
		if hs.Promised.Less(w.lastHS.Promised) {
			contract.Requiref(false, "promise moves back from %v to %v", w.lastHS.Promised, hs.Promised)
		}
		if hs.Commit < w.lastHS.Commit {
			contract.Requiref(false, "commit moves back from %d to %d", w.lastHS.Commit, hs.Commit)
		}
	}
	for i := range entries {
		e := &entries[i]
		if err := w.reserve(recordSize(entryFixedSize + len(e.Value.Data))); err != nil {
			return err
		}
		start := len(w.buf)
		w.buf = appendEntryRecord(w.buf, e, w.synced, w.salt)
		w.records++
		w.marked = w.synced
		if contract.Enabled {
			r := w.checkEncoded(start, kindEntry)
			got := decodeEntry(r.body)
			if got.Slot != e.Slot || got.Ballot != e.Ballot || !got.Value.Equal(e.Value) {
				contract.Ensuref(false, "entry for slot %d does not decode to itself", e.Slot)
			}
		}
	}
	if saveHS {
		if err := w.reserve(recordSize(hardStateSize)); err != nil {
			return err
		}
		start := len(w.buf)
		w.buf = appendHardStateRecord(w.buf, hs, w.synced, w.salt)
		w.records++
		w.marked = w.synced
		w.lastHS = hs
		if contract.Enabled {
			r := w.checkEncoded(start, kindHardState)
			contract.Ensure(decodeHardState(r.body) == hs, "hard state does not decode to itself")
		}
	}
	if len(w.buf) >= w.opts.BufferSize {
		if err := w.flush(); err != nil {
			return err
		}
	}
	w.checkInvariants()
	return nil
}

// checkEncoded checks, in contract builds, that the record just encoded at
// buf[start:] is valid where it will land in the file.
func (w *WAL) checkEncoded(start int, kind byte) record {
	contract.Require(start%recAlign == 0, "record in the buffer misaligned")
	r, reason := checkRecord(w.buf, int64(start), w.salt)
	if reason != "" {
		contract.Ensuref(false, "record just encoded does not check: %s", reason)
	}
	contract.Ensure(r.kind == kind && int64(start)+r.size() == int64(len(w.buf)), "record just encoded has the wrong kind or size")
	return r
}

// reserve rolls over to a new segment when a record of size bytes would
// not fit in the current one beside its seal. A segment always takes at
// least one record, however large.
func (w *WAL) reserve(size int) error {
	end := w.written + int64(len(w.buf))
	if w.records == 0 || end+int64(size)+sealRecordSize <= w.opts.SegmentSize {
		return nil
	}
	return w.roll()
}

// roll seals the current segment, makes it durable and starts the next.
func (w *WAL) roll() error {
	w.buf = appendCountRecord(w.buf, kindSeal, w.records, w.synced, w.salt)
	if err := w.flush(); err != nil {
		return err
	}
	if err := w.file.Sync(); err != nil {
		return w.fail("sync", err)
	}
	w.synced = w.written
	// The sealed segment is durable before its successor exists: a crash
	// never leaves a newer segment beside an older one that lost its tail.
	contract.Invariant(w.synced == w.written && len(w.buf) == 0, "rollover with unsynced records")
	if err := w.file.Close(); err != nil {
		return w.fail("close", err)
	}
	w.file = nil
	if err := w.createSegment(w.seq + 1); err != nil {
		return w.fail("rollover", err)
	}
	return nil
}

// flush writes the buffer at the end of the segment's written bytes, in one
// write, without syncing.
func (w *WAL) flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	contract.Require(w.file != nil, "flush without a segment")
	n, err := w.file.WriteAt(w.buf, w.written)
	if err != nil {
		return w.fail("write", err)
	}
	contract.Ensure(n == len(w.buf), "short write without an error")
	w.written += int64(n)
	w.buf = w.buf[:0]
	if limit := max(4*w.opts.BufferSize, 4<<20); cap(w.buf) > limit {
		w.buf = make([]byte, 0, w.opts.BufferSize) // one huge Append must not pin its memory
	}
	return nil
}

// Sync implements Log: one write of everything buffered, then one
// fdatasync, after which every record appended so far is durable. A Sync
// with nothing new to make durable does no I/O. An error makes the WAL
// unusable.
func (w *WAL) Sync() error {
	if err := w.usable(); err != nil {
		return err
	}
	if err := w.flush(); err != nil {
		return err
	}
	if w.synced == w.written {
		return nil
	}
	if err := w.file.Sync(); err != nil {
		return w.fail("sync", err)
	}
	w.synced = w.written
	contract.Ensure(len(w.buf) == 0 && w.synced == w.written, "Sync left records undurable")
	return nil
}

// Load implements Log: the hard state and entries recovered by OpenWAL, in
// append order (a later entry for a slot replaces an earlier one). Records
// appended since are not included. Every call returns the same state; its
// entries' data is shared between calls and with nothing else, and must be
// treated as read-only.
func (w *WAL) Load() (paxos.Persisted, error) {
	if w.closed {
		return paxos.Persisted{}, ErrWALClosed
	}
	p := w.loaded
	p.Entries = p.Entries[:len(p.Entries):len(p.Entries)]
	return p, nil
}

// Close implements Log: it writes what is buffered without syncing it (so
// a clean shutdown keeps it in the page cache, but a crash may lose it),
// closes the segment and releases the directory lock. When records are
// synced that no record's synced mark covers yet, it writes a synced-mark
// record first, so that recovery can tell later damage to them from a torn
// tail (see wal_format.go).
func (w *WAL) Close() error {
	if w.closed {
		return ErrWALClosed
	}
	w.closed = true
	var err error
	if w.err == nil && w.file != nil {
		end := w.written + int64(len(w.buf))
		if w.synced > w.marked && end+markRecordSize+sealRecordSize <= w.opts.SegmentSize {
			w.buf = appendCountRecord(w.buf, kindMark, w.records, w.synced, w.salt)
			w.records++
			w.marked = w.synced
		}
		err = w.flush()
	}
	if w.file != nil {
		if cerr := w.file.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("storage: wal: %w", cerr)
		}
		w.file = nil
	}
	if lerr := w.lock.Close(); err == nil && lerr != nil {
		err = fmt.Errorf("storage: wal: %w", lerr)
	}
	return err
}

// Dir returns the WAL's directory.
func (w *WAL) Dir() string { return w.dir }

func (w *WAL) checkInvariants() {
	if !contract.Enabled || w.err != nil {
		return
	}
	// Unformatted: this runs on every Append and Sync of a contract build.
	end := w.written + int64(len(w.buf))
	contract.Invariant(w.file != nil, "no segment open")
	contract.Invariant(w.written%recAlign == 0 && len(w.buf)%recAlign == 0, "records misaligned")
	contract.Invariant(segHeaderSize <= w.synced && w.synced <= w.written, "synced beyond written, or into the header")
	contract.Invariant(segHeaderSize <= w.marked && w.marked <= w.synced, "synced mark beyond what is synced")
	contract.Invariant(w.records > 0 || end == segHeaderSize, "segment bytes without records")
	// Past its first record a segment keeps room for its seal (or it was
	// recovered from a run with larger segments, and rolls at the next record).
	contract.Invariant(w.records <= 1 || end+sealRecordSize <= w.opts.SegmentSize ||
		w.written+sealRecordSize > w.opts.SegmentSize, "segment overfull")
}
