package storage

import (
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"slices"
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

// WALOptions configures OpenWAL. Identity is required; for the rest the
// zero value is the production setting on the operating system's file
// system.
type WALOptions struct {
	// Identity is whose log this is. A new log records it in every
	// segment; an existing one must record exactly this identity, or
	// OpenWAL refuses it with a *IdentityError.
	Identity Identity
	// Create says what OpenWAL does where there is no log: the zero value,
	// MustExist, refuses (ErrNoLog); MustCreate creates one and refuses an
	// existing log (ErrAlreadyBootstrapped); CreateIfMissing does either.
	Create CreateMode
	// FS is the file system the WAL lives on; nil means vfs.Default.
	FS vfs.FS
	// SegmentSize is the size each segment is preallocated to and at which
	// the WAL moves on to a new one. A record too large for an empty segment
	// gets a segment of its own, which grows past this size. Zero means
	// DefaultSegmentSize; it must be at least MinSegmentSize, and leave
	// room for the header, the close slot and a seal.
	SegmentSize int64
	// BufferSize bounds the encoded records Append keeps in memory: when an
	// Append leaves at least this many bytes unwritten, it writes them (one
	// write, no sync). Zero or less means DefaultBufferSize.
	BufferSize int
	// Logger receives what recovery did that an operator should know (a
	// torn tail dropped, a damaged close slot ignored). Nil means
	// slog.Default().
	Logger *slog.Logger
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
//   - A segment's header (with the log's identity), preallocation and name
//     are durable before any record is written into it (the segment is
//     created under a temporary name, synced, renamed and the directory
//     synced).
//   - At rollover the full segment's last records and its seal record are
//     written and synced before the next segment is created; rollover
//     therefore makes every record appended so far durable, as a Sync would.
//   - Close makes every record durable, then writes the close record and
//     syncs it: after a clean Close, recovery refuses a log that lost any
//     record (see wal_format.go).
//   - OpenWAL syncs the newest segment and the directory before it returns,
//     so what Load reports is durable even when the previous process died
//     with records in the page cache that it had never synced.
//
// After any write, sync or file-system failure the WAL is unusable: every
// method returns a *FailedError (see there why); close it and open again.
//
// A WAL is used by one goroutine at a time, as the Log contract says.
type WAL struct {
	fs    vfs.FS
	dir   string
	opts  WALOptions
	lock  io.Closer
	log   *slog.Logger
	id    Identity // whose log this is, as its segments record it
	logID uint64   // the log's random ID, in every segment header

	// The segment being written.
	file     vfs.File
	path     string
	hdr      segHeader // its header: salt, first record offset, preallocated size
	written  int64     // bytes of the segment in the file; buf goes at this offset
	synced   int64     // bytes of the segment known durable
	records  uint64    // records in the segment, buffered ones included (the seal counts them)
	closedAt int64     // the end offset its close slot vouches for, 0 if none
	buf      []byte    // encoded records not yet written, owned by the WAL

	lastHS paxos.HardState // the last hard state appended (or recovered)
	loaded paxos.Persisted // what recovery found, for Load
	err    error           // set once the WAL is unusable
	closed bool

	// Compaction and sizes (wal_compact.go).
	start       uint64    // the log start: the oldest segment the log needs
	segs        []segInfo // segments start .. the one written, oldest first
	released    []segInfo // segments below start not yet removed (a removal failed)
	sealedBytes int64     // on-disk size of every segment in segs but the last, and of released
	compactions uint64
	stats       walStats // published for Stats, read from any goroutine
}

var (
	_ Log        = (*WAL)(nil)
	_ Identified = (*WAL)(nil)
)

// OpenWAL opens the write-ahead log in dir and recovers it (see Load).
//
// Whose log: opts.Identity must be valid. Where dir holds no segment,
// OpenWAL refuses with an error wrapping ErrNoLog unless opts.Create allows
// creating one, which records the identity and a new random log ID in the
// first segment's header (and every later one). Where a log exists,
// MustCreate refuses it (ErrAlreadyBootstrapped), and every segment must
// record opts.Identity (else a *IdentityError names the segment and the
// field that differs) and the log ID of the first (else a *CorruptionError:
// the segment was copied from another log).
//
// Recovery:
//
//   - The newest segment's torn or unsynced tail is zeroed from its first
//     bad record on, and logged (file, offset, bytes dropped): a record cut
//     short or failing its checksum, and valid records after a bad one when
//     none of them proves by its synced mark that the bad one had been
//     synced (a power failure may write unsynced pages back out of order;
//     see wal_format.go).
//   - Damage anywhere else refuses to open with a *CorruptionError naming
//     the file and byte offset: a segment shorter than it was preallocated
//     to, records lost before the end recorded by a clean Close, a bad
//     record that a later record's synced mark shows was synced, any damage
//     to a segment that is not the newest, a missing segment (from the log
//     start on: the first segment, or the one the newest compaction kept),
//     a bad segment header or another format version. Those records were
//     durable, and a replica must not forget a promise or a vote.
//
// Left-over temporary segments from an interrupted rollover are removed, and
// so are segments below the log start that a Compact cut short by a crash
// had released but not yet removed (wal_format.go, "The log start"). The
// directory is locked (file LOCK) until Close.
func OpenWAL(dir string, opts WALOptions) (*WAL, error) {
	if opts.Identity.ClusterID == 0 && opts.Identity.ReplicaID == 0 && len(opts.Identity.Members) == 0 {
		return nil, fmt.Errorf("storage: wal %s: WALOptions.Identity is required: a log records whose it is "+
			"(cluster, replica, members) and refuses to run as another's", dir)
	}
	if err := opts.Identity.Validate(); err != nil {
		return nil, fmt.Errorf("storage: wal %s: WALOptions.Identity: %w", dir, err)
	}
	if len(opts.Identity.Members) > maxMembers {
		return nil, fmt.Errorf("storage: wal %s: WALOptions.Identity has %d members, more than the %d a segment header holds",
			dir, len(opts.Identity.Members), maxMembers)
	}
	if opts.Create > CreateIfMissing {
		return nil, fmt.Errorf("storage: wal %s: unknown WALOptions.Create %v", dir, opts.Create)
	}
	if opts.FS == nil {
		opts.FS = vfs.Default
	}
	if opts.SegmentSize == 0 {
		opts.SegmentSize = DefaultSegmentSize
	}
	if need := int64(headerSize(len(opts.Identity.Members))) + closeSlotSize + sealRecordSize; opts.SegmentSize < max(MinSegmentSize, need) {
		return nil, fmt.Errorf("storage: wal %s: segment size %d below the minimum %d", dir, opts.SegmentSize, max(MinSegmentSize, need))
	}
	if opts.BufferSize <= 0 {
		opts.BufferSize = DefaultBufferSize
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	// A replica's restart must not create the directory it expected its
	// log in: a mistyped or unmounted -data is then ErrNoLog, not a new
	// empty log somewhere else.
	if opts.Create != MustExist {
		if err := opts.FS.MkdirAll(dir); err != nil {
			return nil, fmt.Errorf("storage: wal: %w", err)
		}
	}
	lock, err := opts.FS.Lock(filepath.Join(dir, "LOCK"))
	if err != nil {
		if opts.Create == MustExist && errors.Is(err, iofs.ErrNotExist) {
			return nil, fmt.Errorf("storage: wal %s: %w", dir, ErrNoLog)
		}
		return nil, fmt.Errorf("storage: wal: %w", err)
	}
	w := &WAL{fs: opts.FS, dir: dir, opts: opts, lock: lock, log: opts.Logger,
		id: cloneIdentity(opts.Identity)}
	if err := w.recover(); err != nil {
		if w.file != nil {
			w.file.Close()
		}
		lock.Close()
		return nil, err
	}
	w.buf = make([]byte, 0, opts.BufferSize)
	w.recountSizes()
	w.checkInvariants()
	return w, nil
}

func cloneIdentity(id Identity) Identity {
	id.Members = slices.Clone(id.Members)
	return id
}

// Identity implements Identified: whose log this is, as every segment
// records it (and as WALOptions.Identity asked).
func (w *WAL) Identity() Identity { return cloneIdentity(w.id) }

// newLogID returns a random non-zero log ID. It tells segments of two logs
// apart even where their identities agree (a replica bootstrapped twice);
// it needs to be unique, not secret.
func newLogID() uint64 {
	for {
		if id := rand.Uint64(); id != 0 {
			return id
		}
	}
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
	switch {
	case len(seqs) == 0 && w.opts.Create == MustExist:
		return fmt.Errorf("storage: wal %s: %w", w.dir, ErrNoLog)
	case len(seqs) == 0:
		w.logID = newLogID()
		w.start = 1
		if err := w.createSegment(1); err != nil {
			return err
		}
		w.log.Info("wal created", "dir", w.dir, "identity", w.id.String(), "log_id", fmt.Sprintf("%016x", w.logID))
		return nil // createSegment synced the directory
	case w.opts.Create == MustCreate:
		return fmt.Errorf("storage: wal %s: %w", w.dir, ErrAlreadyBootstrapped)
	}
	for i := 1; i < len(seqs); i++ {
		contract.Invariant(seqs[i] > seqs[i-1], "segment names not sorted") // fixed-width hex sorts numerically
	}
	start, err := w.checkOwner(seqs)
	if err != nil {
		return err
	}
	// Segments below the log start were released by a Compact that a crash
	// cut short; from the start on none may be missing (wal_compact.go).
	if seqs, err = w.releaseBelowStart(seqs, start); err != nil {
		return err
	}
	w.start = start
	var scratch []byte
	for i, seq := range seqs {
		path := filepath.Join(w.dir, segmentName(seq))
		if scratch, err = readFile(w.fs, path, scratch); err != nil {
			return fmt.Errorf("storage: wal: %w", err)
		}
		s := scanSegment(scratch, seq)
		contract.Invariant(s.header != "" || s.hdr.logID == w.logID, "segment header changed during recovery")
		newest := i == len(seqs)-1
		truncate, cerr := s.verdict(path, newest)
		if cerr != nil {
			return cerr
		}
		if s.close.bad != "" {
			w.log.Warn("wal: close slot damaged or cut short by a crash during Close; ignored (no record depends on it)",
				"file", path, "offset", s.hdr.size, "reason", s.close.bad)
		}
		w.collect(s.recs)
		w.noteSegment(&s, newest && truncate)
		if newest {
			if err := w.resume(path, scratch, &s, truncate); err != nil {
				return err
			}
			previous := "crash or kill (no close record)"
			switch {
			case !truncate && s.close.valid && s.close.end == s.end:
				previous = "clean close"
			case !truncate && !s.sealed && len(s.recs) == 0:
				previous = "unknown (the newest segment is empty)"
			}
			w.log.Info("wal opened", "dir", w.dir, "segments", len(seqs), "start", w.start, "entries", len(w.loaded.Entries),
				"previous_run_ended", previous)
		}
	}
	if w.file == nil {
		if err := w.createSegment(seqs[len(seqs)-1] + 1); err != nil {
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

// checkOwner reads every segment's header and refuses the log unless each
// records the identity the caller expects and the log ID of the first. It
// runs before any record is judged, so that a segment copied in from
// elsewhere is named as such rather than as the damage it causes around it
// (its predecessor would look unsealed, say). A header that does not parse
// is left to the record pass, which refuses it with its reason. It returns
// the log start: the largest any header records (1 where none does).
func (w *WAL) checkOwner(seqs []uint64) (start uint64, err error) {
	start = 1
	buf := make([]byte, maxHeaderSize)
	for _, seq := range seqs {
		path := filepath.Join(w.dir, segmentName(seq))
		n, err := readAt(w.fs, path, buf)
		if err != nil {
			return 0, fmt.Errorf("storage: wal: %w", err)
		}
		hdr, reason := parseSegmentHeader(buf[:n], seq)
		if reason != "" {
			continue
		}
		if err := hdr.id.Check(path, w.id); err != nil {
			return 0, err
		}
		if w.logID == 0 {
			w.logID = hdr.logID
		} else if hdr.logID != w.logID {
			return 0, &CorruptionError{File: path, Offset: 0, Reason: fmt.Sprintf(
				"segment of another log (log ID %016x, not this log's %016x) with the same identity: "+
					"it was copied in from another directory or from an earlier bootstrap of this replica; "+
					"put back this log's own segment", hdr.logID, w.logID)}
		}
		start = max(start, hdr.start)
	}
	return start, nil
}

// readAt reads the start of name into buf and returns how many bytes it got
// (fewer at the end of the file).
func readAt(fs vfs.FS, name string, buf []byte) (int, error) {
	f, err := fs.Open(name)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	n, err := f.ReadAt(buf, 0)
	if err == io.EOF {
		err = nil
	}
	return n, err
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
		case kindSeal:
		default:
			contract.Invariantf(false, "scan passed record kind %d", r.kind)
		}
	}
	contract.Ensure(len(arena) == total, "arena size")
	w.lastHS = w.loaded.HardState
}

// resume makes the newest segment durable as recovery found it (cutting a
// torn tail) and, unless it is sealed, the one being written. data is the
// segment's contents as scanned.
func (w *WAL) resume(path string, data []byte, s *segmentScan, truncate bool) error {
	f, err := w.fs.OpenReadWrite(path)
	if err != nil {
		return fmt.Errorf("storage: wal: %w", err)
	}
	w.file = f // closed by OpenWAL on error
	if truncate {
		if err := cutTail(f, data, s); err != nil {
			return fmt.Errorf("storage: wal: %s: dropping the torn tail at offset %d: %w", path, s.end, err)
		}
		w.log.Warn("wal: dropped a torn or unsynced tail (written by a process that crashed before syncing it)",
			"file", path, "offset", s.end, "bytes", lastNonZero(data, s.end)-s.end, "reason", s.reason)
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
	w.path, w.hdr = path, s.hdr
	w.written, w.synced, w.records = s.end, s.end, uint64(len(s.recs))
	w.closedAt = 0
	if s.close.valid {
		w.closedAt = s.close.end
	}
	return nil
}

// cutTail overwrites with zeros what lies in the segment from s.end on, so
// that no stale record of the dropped tail can ever be read after the
// records appended there next, and cuts back a file that grew past its
// preallocated size (an oversized record torn). It never makes the file
// shorter than its preallocated size: a crash in the middle must leave a
// segment the next recovery treats the same way, not one it refuses as
// truncated. The caller syncs.
func cutTail(f vfs.File, data []byte, s *segmentScan) error {
	limit := max(s.hdr.prealloc, s.end)
	stop := min(lastNonZero(data, s.end), limit)
	zeros := make([]byte, min(stop-s.end, 1<<20))
	for off := s.end; off < stop; {
		n := min(int64(len(zeros)), stop-off)
		if _, err := f.WriteAt(zeros[:n], off); err != nil {
			return err
		}
		off += n
	}
	if s.size > limit {
		return f.Truncate(limit)
	}
	return nil
}

// createSegment creates segment seq durably and makes it the one written.
// The caller has closed the previous one.
func (w *WAL) createSegment(seq uint64) error {
	path := filepath.Join(w.dir, segmentName(seq))
	tmp := path + ".tmp"
	hdr := newSegHeader(seq, w.opts.SegmentSize, w.logID, w.id, w.start)
	f, err := w.fs.Create(tmp)
	if err != nil {
		return &FailedError{Op: "create", File: tmp, Err: err}
	}
	op, err := "write", error(nil)
	if _, err = f.WriteAt(hdr.encode(), 0); err == nil {
		if op, err = "preallocate", f.Preallocate(hdr.prealloc); err == nil {
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
	w.file, w.path, w.hdr = f, path, hdr
	w.written, w.synced, w.records, w.closedAt = hdr.first, hdr.first, 0, 0
	w.addSegment(seq)
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
		w.buf = appendEntryRecord(w.buf, e, w.synced, w.hdr.salt)
		w.records++
		w.noteEntry(e.Slot)
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
		w.buf = appendHardStateRecord(w.buf, hs, w.synced, w.hdr.salt)
		w.records++
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
	r, reason := checkRecord(w.buf, int64(start), w.hdr.salt)
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
	if w.records == 0 || end+int64(size)+sealRecordSize <= w.hdr.prealloc {
		return nil
	}
	return w.roll()
}

// roll seals the current segment, makes it durable and starts the next.
func (w *WAL) roll() error {
	w.buf = appendCountRecord(w.buf, kindSeal, w.records, w.synced, w.hdr.salt)
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
	w.sealCurrent()
	if err := w.createSegment(w.hdr.seq + 1); err != nil {
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
	w.publish()
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

// Close implements Log. It makes every record appended durable (a Sync),
// then writes the close record into the segment's close slot and syncs it:
// from then on recovery knows where the records end and refuses a log that
// lost any of them (see wal_format.go). Then it closes the segment and
// releases the directory lock. A WAL that failed is closed without either;
// recovery then treats its tail as a crash's. An error from the Sync or the
// close record is returned, and the WAL is closed all the same.
func (w *WAL) Close() error {
	if w.closed {
		return ErrWALClosed
	}
	var err error
	if w.err == nil && w.file != nil {
		err = w.writeCloseRecord()
	}
	w.closed = true
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

// writeCloseRecord syncs every record, then writes and syncs the close
// record saying where they end. The order matters: a close record durable
// before the records it vouches for would make a crash in between look like
// damage. A segment without records, or whose slot already says as much,
// needs no close record.
func (w *WAL) writeCloseRecord() error {
	if err := w.Sync(); err != nil {
		return err
	}
	contract.Require(w.synced == w.written && len(w.buf) == 0, "close record before the records are durable")
	if w.written == w.hdr.first || w.closedAt == w.written {
		return nil
	}
	rec := appendCountRecord(make([]byte, 0, closeSlotSize), kindClose, w.records, w.written, w.hdr.salt)
	contract.Invariant(len(rec) == closeSlotSize, "close record does not fit its slot")
	if _, err := w.file.WriteAt(rec, w.hdr.size); err != nil {
		return w.fail("write", err)
	}
	if err := w.file.Sync(); err != nil {
		return w.fail("sync", err)
	}
	w.closedAt = w.written
	return nil
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
	contract.Invariant(w.hdr.first <= w.synced && w.synced <= w.written, "synced beyond written, or into the header")
	contract.Invariant(w.closedAt == 0 || (w.hdr.first < w.closedAt && w.closedAt <= w.synced), "close slot vouches for records not durable")
	contract.Invariant(w.records > 0 || end == w.hdr.first, "segment bytes without records")
	// Past its first record a segment keeps room for its seal.
	contract.Invariant(w.records <= 1 || end+sealRecordSize <= w.hdr.prealloc, "segment overfull")
	contract.Invariant(len(w.segs) > 0 && w.segs[len(w.segs)-1].seq == w.hdr.seq && w.segs[0].seq == w.start,
		"segment list does not run from the log start to the segment written")
}
