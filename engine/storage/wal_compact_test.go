package storage

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/vestalabs/vesta/engine/paxos"
	"github.com/vestalabs/vesta/engine/storage/vfs"
	"github.com/vestalabs/vesta/engine/wire"
	"pgregory.net/rapid"
)

// Tests of log compaction (compact.go, wal_compact.go).

func TestMemLogCompact(t *testing.T) {
	l := NewMemLog()
	rng := rand.New(rand.NewPCG(3, 3))
	var es []wire.Entry
	for i := range 100 {
		es = append(es, entry(wire.Slot(i), 10, rng))
	}
	hs := paxos.HardState{Promised: wire.Ballot{Round: 4, Replica: 1}, Commit: 90}
	if err := l.Append(es, hs, true); err != nil {
		t.Fatal(err)
	}
	if l.Size() != 1000 || l.Len() != 100 {
		t.Fatalf("size %d, len %d", l.Size(), l.Len())
	}
	var c Compactor = l
	if err := c.Compact(60); err != nil {
		t.Fatal(err)
	}
	p, _ := l.Load()
	sameEntries(t, p.Entries, es[60:])
	if p.HardState != hs || l.Size() != 400 || l.Len() != 40 {
		t.Fatalf("after Compact(60): hard state %+v, size %d, len %d", p.HardState, l.Size(), l.Len())
	}
	if err := l.Compact(10); err != nil { // below what is left: nothing to do
		t.Fatal(err)
	}
	more := []wire.Entry{entry(100, 5, rng)}
	if err := l.Append(more, hs, false); err != nil {
		t.Fatal(err)
	}
	p, _ = l.Load()
	sameEntries(t, p.Entries, append(es[60:], more...))
	if l.Size() != 405 {
		t.Fatalf("size %d", l.Size())
	}
}

// fataler is what the helpers below need of a *testing.T or a *rapid.T.
type fataler interface {
	Helper()
	Fatalf(format string, args ...any)
}

// dirSegmentBytes sums the sizes of the segment files in dir.
func dirSegmentBytes(t fataler, fs vfs.FS, dir string) (n int, bytes int64) {
	t.Helper()
	names, err := fs.List(dir)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	for _, name := range names {
		if _, ok := parseSegmentName(name); !ok {
			continue
		}
		f, err := fs.Open(filepath.Join(dir, name))
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		size, err := f.Size()
		f.Close()
		if err != nil {
			t.Fatalf("Size: %v", err)
		}
		n++
		bytes += size
	}
	return n, bytes
}

// checkStats checks that Stats reports the segments on disk.
func checkStats(t testing.TB, w *WAL) {
	t.Helper()
	n, bytes := dirSegmentBytes(t, w.fs, w.dir)
	st := w.Stats()
	if st.Segments != n || st.Bytes != bytes || w.Size() != bytes {
		t.Fatalf("Stats %+v (Size %d), but the directory holds %d segments of %d bytes", st, w.Size(), n, bytes)
	}
	first := segments(t, w.fs, w.dir)[0]
	if seq, _ := parseSegmentName(filepath.Base(first)); seq != st.Start {
		t.Fatalf("Stats says the log starts at %d, the oldest segment is %s", st.Start, first)
	}
}

// entriesFrom returns the entries of got from the first at or above below.
func entriesFrom(got []wire.Entry, below wire.Slot) []wire.Entry {
	for i, e := range got {
		if e.Slot >= below {
			return got[i:]
		}
	}
	return nil
}

func TestWALCompactReleasesSegments(t *testing.T) {
	dir := t.TempDir()
	opts := WALOptions{SegmentSize: 1024, BufferSize: 256}
	w := openWAL(t, dir, opts)
	es := fillLog(t, w, 200, 5, 1)
	hs := w.lastHS
	checkStats(t, w)
	n0, bytes0 := dirSegmentBytes(t, vfs.Default, dir)
	if n0 < 10 {
		t.Fatalf("%d segments: the test wants many", n0)
	}
	const below = 150
	if err := w.Compact(below); err != nil {
		t.Fatal(err)
	}
	checkStats(t, w)
	n1, bytes1 := dirSegmentBytes(t, vfs.Default, dir)
	if n1 >= n0/3 || bytes1 >= bytes0/3 {
		t.Fatalf("Compact(%d) of 200 entries left %d of %d segments, %d of %d bytes", below, n1, n0, bytes1, bytes0)
	}
	st := w.Stats()
	if st.Start <= 1 || st.Compactions != 1 {
		t.Fatalf("stats after Compact: %+v", st)
	}
	// Appending goes on.
	rng := rand.New(rand.NewPCG(5, 5))
	for i := 200; i < 260; i++ {
		es = append(es, entry(wire.Slot(i), 60, rng))
		hs.Commit = wire.Slot(i)
		mustAppend(t, w, es[i:i+1], hs, i%10 == 0)
	}
	mustSync(t, w)
	checkStats(t, w)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w = openWAL(t, dir, opts)
	p := load(t, w)
	sameEntries(t, entriesFrom(p.Entries, below), es[below:])
	sameEntries(t, p.Entries, es[len(es)-len(p.Entries):])
	if p.HardState != w.lastHS || p.HardState.Commit != 250 {
		t.Fatalf("hard state %+v", p.HardState)
	}
	checkStats(t, w)
	// A second Compact, after the reopen, releases more, and Load no
	// longer holds the recovered entries below it.
	if err := w.Compact(255); err != nil {
		t.Fatal(err)
	}
	checkStats(t, w)
	sameEntries(t, load(t, w).Entries, es[255:])
	w.Close()
	w = openWAL(t, dir, opts)
	defer w.Close()
	p = load(t, w)
	sameEntries(t, entriesFrom(p.Entries, 255), es[255:])
	if p.HardState.Commit != 250 {
		t.Fatalf("hard state %+v", p.HardState)
	}
	checkStats(t, w)
}

// TestWALCompactKeepsTheHardState: the only hard state record lies in the
// first segment, which Compact releases; it must survive in a later one.
func TestWALCompactKeepsTheHardState(t *testing.T) {
	fs := vfs.NewMemFS()
	opts := WALOptions{FS: fs, SegmentSize: 512}
	w := openWAL(t, "/wal", opts)
	rng := rand.New(rand.NewPCG(8, 8))
	hs := paxos.HardState{Promised: wire.Ballot{Round: 9, Replica: 3}, Commit: 7}
	mustAppend(t, w, []wire.Entry{entry(0, 20, rng)}, hs, true)
	var es []wire.Entry
	for i := 1; i < 40; i++ {
		es = append(es, entry(wire.Slot(i), 50, rng))
		mustAppend(t, w, es[len(es)-1:], paxos.HardState{}, false)
	}
	mustSync(t, w)
	if err := w.Compact(35); err != nil {
		t.Fatal(err)
	}
	w.abandon()
	w = openWAL(t, "/wal", WALOptions{FS: fs.CrashSyncedOnly(), SegmentSize: 512})
	defer w.Close()
	if w.start <= 1 {
		t.Fatalf("log start %d: nothing was released", w.start)
	}
	p := load(t, w)
	if p.HardState != hs {
		t.Fatalf("hard state %+v after releasing the segment that held it, want %+v", p.HardState, hs)
	}
	sameEntries(t, entriesFrom(p.Entries, 35), es[34:])
}

// TestWALCompactWithNothingToReleaseIsASync: no segment, and never the one
// written, is released, and what was appended is durable.
func TestWALCompactWithNothingToReleaseIsASync(t *testing.T) {
	fs := vfs.NewMemFS()
	w := openWAL(t, "/wal", WALOptions{FS: fs, SegmentSize: memSegment})
	rng := rand.New(rand.NewPCG(9, 9))
	es := []wire.Entry{entry(0, 10, rng), entry(1, 10, rng)}
	hs := paxos.HardState{Promised: wire.Ballot{Round: 1, Replica: 1}, Commit: 2}
	mustAppend(t, w, es, hs, true)
	if err := w.Compact(100); err != nil { // every entry is below, but in the segment written
		t.Fatal(err)
	}
	if n := len(segments(t, fs, "/wal")); n != 1 {
		t.Fatalf("%d segments", n)
	}
	w.abandon()
	w = openWAL(t, "/wal", WALOptions{FS: fs.CrashSyncedOnly(), SegmentSize: memSegment})
	defer w.Close()
	p := load(t, w)
	sameEntries(t, p.Entries, es)
	if p.HardState != hs {
		t.Fatalf("hard state %+v", p.HardState)
	}
}

// compactedLog writes a log of 120 entries in 512-byte segments on a MemFS,
// compacts it below 100 and closes it.
func compactedLog(t *testing.T) (*vfs.MemFS, []wire.Entry) {
	fs := vfs.NewMemFS()
	opts := WALOptions{FS: fs, SegmentSize: 512}
	w := openWAL(t, "/wal", opts)
	es := fillLog(t, w, 120, 4, 2)
	if err := w.Compact(100); err != nil {
		t.Fatal(err)
	}
	mustAppend(t, w, []wire.Entry{entry(120, 200, rand.New(rand.NewPCG(1, 1)))}, paxos.HardState{}, false)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if n := len(segments(t, fs, "/wal")); n < 4 {
		t.Fatalf("%d segments left: the test wants a few", n)
	}
	return fs, es
}

// TestWALCompactedLogMissingASegmentIsRefused: after a compaction, a
// segment missing in the middle, or the first one the log start names, is
// damage, as a segment missing from an uncompacted log is.
func TestWALCompactedLogMissingASegmentIsRefused(t *testing.T) {
	for _, which := range []string{"middle", "first"} {
		t.Run(which, func(t *testing.T) {
			fs, _ := compactedLog(t)
			segs := segments(t, fs, "/wal")
			victim := segs[1]
			if which == "first" {
				victim = segs[0]
			}
			if err := fs.Remove(victim); err != nil {
				t.Fatal(err)
			}
			_, err := OpenWAL("/wal", tOpts(WALOptions{FS: fs, SegmentSize: 512}))
			var ce *CorruptionError
			if !errors.As(err, &ce) || ce.File != victim || !strings.Contains(ce.Reason, "segment missing") {
				t.Fatalf("OpenWAL = %v, want a *CorruptionError naming %s missing", err, victim)
			}
			if n := len(segments(t, fs, "/wal")); n != len(segs)-1 {
				t.Fatalf("a refused log was changed: %d segments", n)
			}
		})
	}
	t.Run("segment 1 of an uncompacted log", func(t *testing.T) {
		fs := vfs.NewMemFS()
		w := openWAL(t, "/wal", WALOptions{FS: fs, SegmentSize: 512})
		fillLog(t, w, 40, 4, 3)
		w.Close()
		segs := segments(t, fs, "/wal")
		fs.Remove(segs[0])
		_, err := OpenWAL("/wal", tOpts(WALOptions{FS: fs, SegmentSize: 512}))
		var ce *CorruptionError
		if !errors.As(err, &ce) || ce.File != segs[0] || !strings.Contains(ce.Reason, "not released by a compaction") {
			t.Fatalf("OpenWAL = %v, want a *CorruptionError naming %s", err, segs[0])
		}
	})
}

// TestWALReleasedSegmentsLeftByACrashAreRemoved: released segments that a
// crash kept, in any subset (a file system need not order removals), are
// removed at open; the log opens with every entry at or above the start.
func TestWALReleasedSegmentsLeftByACrashAreRemoved(t *testing.T) {
	src := vfs.NewMemFS()
	opts := WALOptions{FS: src, SegmentSize: 512}
	w := openWAL(t, "/wal", opts)
	es := fillLog(t, w, 120, 4, 2)
	hs := w.lastHS
	before := map[string][]byte{}
	for _, p := range segments(t, src, "/wal") {
		data, _ := readFile(src, p, nil)
		before[p] = data
	}
	if err := w.Compact(100); err != nil {
		t.Fatal(err)
	}
	w.Close()
	after := segments(t, src, "/wal")
	var released []string
	for p := range before {
		if !strings.Contains(strings.Join(after, " "), p) {
			released = append(released, p)
		}
	}
	if len(released) < 3 {
		t.Fatalf("%d segments released", len(released))
	}
	// Put back every other released segment (a gap among them), as a
	// crash that kept some of the removals might.
	fs := src.CrashSyncedOnly()
	for i, p := range released {
		if i%2 == 1 {
			continue
		}
		f, err := fs.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteAt(before[p], 0)
		f.Sync()
		f.Close()
	}
	fs.SyncDir("/wal")
	w = openWAL(t, "/wal", WALOptions{FS: fs, SegmentSize: 512})
	defer w.Close()
	if got := segments(t, fs, "/wal"); len(got) != len(after) {
		t.Fatalf("segments after open: %v, want %v", got, after)
	}
	p := load(t, w)
	sameEntries(t, entriesFrom(p.Entries, 100), es[100:])
	if p.HardState != hs {
		t.Fatalf("hard state %+v, want %+v", p.HardState, hs)
	}
	checkStats(t, w)
}

// checkRecovered checks what a reopened log loaded against the records
// appended (recs, whose entries have increasing slots): a prefix of them,
// at least durable long, less a prefix of its entries that lie below
// maxBelow (compacted away). It returns the length of that prefix.
func checkRecovered(recs []modelRec, durable int, maxBelow wire.Slot, p paxos.Persisted) (int, error) {
	var want []wire.Entry
	for _, r := range recs {
		if !r.isHS {
			want = append(want, r.e)
		}
	}
	dropped := -1 // entries of want missing from the front of p.Entries
	if len(p.Entries) > 0 {
		for i := range want {
			if want[i].Slot == p.Entries[0].Slot {
				dropped = i
				break
			}
		}
		if dropped < 0 || dropped+len(p.Entries) > len(want) {
			return 0, fmt.Errorf("recovered entries from slot %d (%d of them) are not a run of the %d appended",
				p.Entries[0].Slot, len(p.Entries), len(want))
		}
		for i, e := range p.Entries {
			w := want[dropped+i]
			if e.Slot != w.Slot || e.Ballot != w.Ballot || !e.Value.Equal(w.Value) {
				return 0, fmt.Errorf("entry %d is %v/%v/%v, appended %v/%v/%v", i, e.Slot, e.Ballot, e.Value, w.Slot, w.Ballot, w.Value)
			}
		}
	}
	cut := -1
	entries, hs := 0, paxos.HardState{}
	for c := 0; c <= len(recs); c++ {
		if c > 0 {
			if r := recs[c-1]; r.isHS {
				hs = r.hs
			} else {
				entries++
			}
		}
		d := dropped
		if len(p.Entries) == 0 {
			d = entries
		}
		if entries != d+len(p.Entries) || hs != p.HardState {
			continue
		}
		ok := true
		for _, e := range want[:d] {
			ok = ok && e.Slot < maxBelow
		}
		if ok {
			cut = c
		}
	}
	switch {
	case cut < 0:
		return 0, fmt.Errorf("%d entries (from the %d-th appended) and hard state %+v are no prefix of what was appended, "+
			"less entries below %d", len(p.Entries), dropped, p.HardState, maxBelow)
	case cut < durable:
		return 0, fmt.Errorf("recovered %d records, but %d were synced", cut, durable)
	}
	return cut, nil
}

// TestWALCompactCrashAtEveryOperation fails the k-th file-system operation
// of a Compact, for every k until one completes, then loses power (keeping
// only what was synced, a prefix of the rest, or sectors of it out of
// order): the log must open, with the latest synced hard state and every
// synced entry at or above below, and again after a fault in that
// recovery.
func TestWALCompactCrashAtEveryOperation(t *testing.T) {
	const below = 70
	build := func() (*vfs.MemFS, *WAL, []modelRec, int) {
		fs := vfs.NewMemFS()
		w := openWAL(t, "/wal", WALOptions{FS: fs, SegmentSize: 1024, BufferSize: 64})
		rng := rand.New(rand.NewPCG(4, 4))
		var recs []modelRec
		durable := 0
		for i := range 100 {
			e := entry(wire.Slot(i), 30+rng.IntN(60), rng)
			mustAppend(t, w, []wire.Entry{e}, paxos.HardState{}, false)
			recs = append(recs, modelRec{e: e})
			if i%9 == 0 && i < 40 { // the last hard state lies in a segment Compact releases
				hs := paxos.HardState{Promised: wire.Ballot{Round: uint64(i + 1), Replica: 1}, Commit: wire.Slot(i)}
				mustAppend(t, w, nil, hs, true)
				recs = append(recs, modelRec{isHS: true, hs: hs})
			}
			if i%10 == 9 && i < 90 {
				mustSync(t, w)
				durable = len(recs)
			}
		}
		return fs, w, recs, durable
	}
	completed, withFaults := false, 0
	for k := 1; !completed; k++ {
		if k > 200 {
			t.Fatal("Compact still failing after 200 operations")
		}
		fs, w, recs, durable := build()
		ops, op := 0, ""
		fs.SetFault(func(o, name string) error {
			if ops++; ops == k {
				op = o + " " + name
				return errors.New("injected failure")
			}
			return nil
		})
		err := w.Compact(below)
		fs.SetFault(nil)
		completed = ops < k
		var fe *FailedError
		switch {
		case completed && err != nil:
			t.Fatalf("Compact without a fault: %v", err)
		case completed:
			durable = len(recs)
		case err == nil:
			t.Fatalf("Compact ignored a failed %s", op)
		case !errors.As(err, &fe):
			// A removal failed: the WAL stays usable, everything is durable,
			// and the next Compact removes what is left.
			if !strings.HasPrefix(op, vfs.OpRemove) && !strings.HasPrefix(op, vfs.OpSyncDir) {
				t.Fatalf("failed %s: Compact = %v, want a *FailedError", op, err)
			}
			durable = len(recs)
		}
		crashes := []*vfs.MemFS{fs.CrashSyncedOnly(), fs.Crash(rand.New(rand.NewPCG(uint64(k), 1))),
			fs.Crash(rand.New(rand.NewPCG(uint64(k), 2))), fs.CrashOutOfOrder(rand.New(rand.NewPCG(uint64(k), 3)), 64)}
		if err != nil && !errors.As(err, &fe) {
			if err := w.Compact(below); err != nil {
				t.Fatalf("Compact after a failed %s: %v", op, err)
			}
			checkStats(t, w)
		}
		w.abandon()
		for ci, crashed := range crashes {
			// Faults in recovery: after the harshest crash only, and where
			// it has released segments or a new one's temporary file to
			// remove, to keep the test short.
			faults := ci == 0 && (hasLeftovers(t, crashed) || completed)
			check := func(why string, w *WAL) {
				t.Helper()
				if _, err := checkRecovered(recs, durable, below, load(t, w)); err != nil {
					t.Fatalf("Compact failing at operation %d (%s), crash %d, %s: %v\n%s", k, op, ci, why, err, crashed)
				}
				checkStats(t, w)
			}
			// A fault during the recovery itself (removing released
			// segments, say) fails the open; the next one must work.
			for j := 1; ; j++ {
				rfs := crashed.CrashSyncedOnly() // a copy: the open may change it
				rops := 0
				rfs.SetFault(func(string, string) error {
					if rops++; rops == j {
						return errors.New("injected failure")
					}
					return nil
				})
				if !faults {
					rfs.SetFault(nil)
				}
				w, err := OpenWAL("/wal", tOpts(WALOptions{FS: rfs, SegmentSize: 1024}))
				rfs.SetFault(nil)
				if faults && j == 1 {
					withFaults++
				}
				if err == nil {
					check("open", w)
					w.Close()
					break
				}
				w, err = OpenWAL("/wal", tOpts(WALOptions{FS: rfs.CrashSyncedOnly(), SegmentSize: 1024}))
				if err != nil {
					t.Fatalf("Compact failing at operation %d (%s), crash %d, recovery failing at operation %d: reopen: %v\n%s",
						k, op, ci, j, err, crashed)
				}
				check(fmt.Sprintf("recovery failing at operation %d", j), w)
				w.Close()
			}
		}
		if completed {
			t.Logf("Compact completes in %d file-system operations; a crash after each recovered, "+
				"%d times with faults in recovery", k-1, withFaults)
		}
	}
}

// hasLeftovers reports whether the WAL in /wal on fs holds segments below
// its log start or a temporary segment: what recovery removes.
func hasLeftovers(t fataler, fs vfs.FS) bool {
	names, err := fs.List("/wal")
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	var seqs []uint64
	var paths []string
	for _, name := range names {
		if strings.HasSuffix(name, ".wal.tmp") {
			return true
		}
		if seq, ok := parseSegmentName(name); ok {
			seqs, paths = append(seqs, seq), append(paths, "/wal/"+name)
		}
	}
	start, err := dumpLogStart(fs, paths, seqs)
	if err != nil {
		t.Fatalf("reading headers: %v", err)
	}
	return len(seqs) > 0 && seqs[0] < start
}

// writeV3Segment writes a version 3 segment, as the previous release did.
func writeV3Segment(t testing.TB, fs vfs.FS, seq, logID uint64, es []wire.Entry, hs *paxos.HardState, sealed bool) {
	t.Helper()
	hdr := newSegHeaderV(walVersion3, seq, 1024, logID, testIdentity, 1)
	buf := append(hdr.encode(), make([]byte, closeSlotSize)...)
	n := uint64(0)
	for i := range es {
		buf = appendEntryRecord(buf, &es[i], hdr.first, hdr.salt)
		n++
	}
	if hs != nil {
		buf = appendHardStateRecord(buf, *hs, hdr.first, hdr.salt)
		n++
	}
	if sealed {
		buf = appendCountRecord(buf, kindSeal, n, hdr.first, hdr.salt)
	}
	if int64(len(buf)) > hdr.prealloc {
		t.Fatalf("v3 segment of %d bytes", len(buf))
	}
	buf = append(buf, make([]byte, hdr.prealloc-int64(len(buf)))...)
	f, err := fs.Create(filepath.Join("/wal", segmentName(seq)))
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt(buf, 0)
	f.Sync()
	f.Close()
	fs.SyncDir("/wal")
}

// TestWALOpensAVersion3Log: a log written by the previous release (version
// 3 headers, no log start) opens, goes on in version 4 segments, compacts
// and reopens.
func TestWALOpensAVersion3Log(t *testing.T) {
	fs := vfs.NewMemFS()
	rng := rand.New(rand.NewPCG(6, 6))
	var es []wire.Entry
	for i := range 12 {
		es = append(es, entry(wire.Slot(i), 30, rng))
	}
	hs := paxos.HardState{Promised: wire.Ballot{Round: 2, Replica: 1}, Commit: 5}
	const logID = 0x1234
	writeV3Segment(t, fs, 1, logID, es[:6], &hs, true)
	writeV3Segment(t, fs, 2, logID, es[6:], nil, false)
	opts := WALOptions{FS: fs, SegmentSize: 1024}
	w := openWAL(t, "/wal", opts)
	p := load(t, w)
	sameEntries(t, p.Entries, es)
	if p.HardState != hs || w.hdr.version != walVersion3 {
		t.Fatalf("hard state %+v, segment written of version %d", p.HardState, w.hdr.version)
	}
	for i := 12; i < 40; i++ {
		es = append(es, entry(wire.Slot(i), 30, rng))
		mustAppend(t, w, es[i:i+1], paxos.HardState{}, false)
	}
	mustSync(t, w)
	if w.hdr.version != walVersion {
		t.Fatalf("new segments are of version %d", w.hdr.version)
	}
	if err := w.Compact(20); err != nil {
		t.Fatal(err)
	}
	if w.start <= 2 {
		t.Fatalf("log start %d: the version 3 segments were not released", w.start)
	}
	w.Close()
	w = openWAL(t, "/wal", opts)
	defer w.Close()
	p = load(t, w)
	sameEntries(t, entriesFrom(p.Entries, 20), es[20:])
	if p.HardState != hs {
		t.Fatalf("hard state %+v", p.HardState)
	}
	var out strings.Builder
	if err := DumpWALFS(fs, "/wal", &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "log start: segment") || !strings.Contains(out.String(), "OpenWAL accepts this log") {
		t.Fatalf("dump:\n%s", out.String())
	}
}

// compactModel drives a WAL on a MemFS with random appends, syncs,
// compactions, injected failures, kills, clean restarts and power failures,
// and checks each recovery against what was appended (checkRecovered).
type compactModel struct {
	crashModel
	maxBelow wire.Slot // the largest below any Compact was called with
}

func (m *compactModel) compact(t *rapid.T) {
	below := wire.Slot(rapid.IntRange(0, int(m.slot)+1).Draw(t, "below"))
	before := m.w.Stats().Compactions
	err := m.w.Compact(below)
	m.log = append(m.log, fmt.Sprintf("compact below %d: %v", below, err))
	m.maxBelow = max(m.maxBelow, below)
	switch {
	case m.broken && err == nil:
		m.fatalf(t, "Compact succeeded on a failed WAL")
	case m.broken:
	case err != nil:
		var fe *FailedError
		if errors.As(err, &fe) {
			m.broken = true
			return
		}
		// A released segment not removed: the WAL is usable, and synced.
		if !strings.Contains(err.Error(), "released") {
			m.fatalf(t, "Compact: %v", err)
		}
		m.durable = len(m.recs)
		m.checkStats(t)
	default:
		m.durable = len(m.recs)
		if m.w.Stats().Compactions > before {
			compactStats.released.Add(1)
		}
		p, err := m.w.Load()
		if err != nil {
			m.fatalf(t, "Load: %v", err)
		}
		for _, e := range p.Entries {
			if e.Slot < below {
				m.fatalf(t, "Load after Compact(%d) returns slot %d", below, e.Slot)
			}
		}
		m.checkStats(t)
	}
}

func (m *compactModel) checkStats(t *rapid.T) {
	n, bytes := dirSegmentBytes(t, m.fs, "/wal")
	if st := m.w.Stats(); st.Segments != n || st.Bytes != bytes {
		m.fatalf(t, "Stats %+v, but the directory holds %d segments of %d bytes", st, n, bytes)
	}
}

// compactStats counts what the property test exercised.
var compactStats struct {
	released  atomic.Int64 // Compacts that released segments
	leftovers atomic.Int64 // opens that found released segments a crash left
}

// reopen opens the WAL on m.fs and checks what it recovered.
func (m *compactModel) reopen(t *rapid.T, why string, exact bool) {
	if hasLeftovers(t, m.fs) {
		compactStats.leftovers.Add(1)
	}
	m.installFault()
	w, err := OpenWAL("/wal", tOpts(m.opts))
	if err != nil && m.faultOp == "" {
		m.log = append(m.log, fmt.Sprintf("open after %s: %v", why, err))
		w, err = OpenWAL("/wal", tOpts(m.opts))
	}
	if err != nil {
		m.fatalf(t, "OpenWAL after %s: %v", why, err)
	}
	m.w, m.broken = w, false
	p, err := w.Load()
	if err != nil {
		m.fatalf(t, "Load: %v", err)
	}
	cut, err := checkRecovered(m.recs, m.durable, m.maxBelow, p)
	if err != nil {
		m.fatalf(t, "after %s: %v", why, err)
	}
	if exact && cut != len(m.recs) {
		m.fatalf(t, "after %s: recovered %d records of %d", why, cut, len(m.recs))
	}
	m.log = append(m.log, fmt.Sprintf("%s: recovered %d of %d records (%d durable), %d entries", why, cut, len(m.recs), m.durable, len(p.Entries)))
	m.recs = m.recs[:cut]
	m.durable = cut
	m.hsN = max(m.hsN, uint64(p.HardState.Commit))
	m.checkStats(t)
}

func (m *compactModel) crash(t *rapid.T) {
	m.w.abandon()
	rng := rand.New(rand.NewPCG(rapid.Uint64().Draw(t, "crash seed"), 0))
	if sector := rapid.SampledFrom([]int{0, 64, 512}).Draw(t, "sector"); sector == 0 {
		m.log = append(m.log, "power failure")
		m.fs = m.fs.Crash(rng)
	} else {
		m.log = append(m.log, fmt.Sprintf("power failure, out-of-order writeback of %d-byte sectors", sector))
		m.fs = m.fs.CrashOutOfOrder(rng, sector)
	}
	m.opts.FS = m.fs
	m.reopen(t, "power failure", false)
}

// TestWALCompactProperty: under random workloads with compactions, every
// recovery returns a prefix of what was appended, at least as long as what
// was synced (a Compact that returned is a Sync), less only entries below
// a compaction's bound; Stats matches the directory; OpenWAL never refuses.
func TestWALCompactProperty(t *testing.T) {
	r0, l0 := compactStats.released.Load(), compactStats.leftovers.Load()
	defer func() {
		r, l := compactStats.released.Load()-r0, compactStats.leftovers.Load()-l0
		t.Logf("%d Compacts released segments, %d opens found released segments left by a crash", r, l)
		if !t.Failed() && (r < 50 || l < 1) {
			t.Errorf("the test lost its power: %d releasing Compacts, %d opens with left-over segments", r, l)
		}
	}()
	rapid.Check(t, func(t *rapid.T) {
		m := &compactModel{crashModel: crashModel{fs: vfs.NewMemFS()}}
		m.opts = WALOptions{
			FS:          m.fs,
			SegmentSize: int64(rapid.IntRange(MinSegmentSize, 1024).Draw(t, "segment size")),
			BufferSize:  rapid.IntRange(1, 512).Draw(t, "buffer size"),
		}
		m.reopen(t, "create", true)
		for range rapid.IntRange(1, 60).Draw(t, "steps") {
			switch op := rapid.IntRange(0, 19).Draw(t, "op"); {
			case op < 8:
				m.append(t)
			case op < 11:
				m.sync(t)
			case op < 14:
				m.compact(t)
			case op < 16:
				m.crash(t)
			case op < 17:
				m.w.abandon()
				m.log = append(m.log, "kill")
				m.reopen(t, "kill", false)
			case op < 18:
				err := m.w.Close()
				m.log = append(m.log, fmt.Sprintf("close: %v", err))
				m.reopen(t, "clean restart", !m.broken && err == nil)
			default:
				m.faultOp = rapid.SampledFrom([]string{vfs.OpSync, vfs.OpWrite, vfs.OpCreate, vfs.OpPreallocate,
					vfs.OpRename, vfs.OpSyncDir, vfs.OpRemove}).Draw(t, "fault")
				m.log = append(m.log, "arm "+m.faultOp+" fault")
			}
		}
		m.compact(t)
		m.crash(t)
		m.w.Close()
	})
}
