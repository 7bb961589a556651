package storage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/vestalabs/vesta/engine/paxos"
	"github.com/vestalabs/vesta/engine/storage/vfs"
	"github.com/vestalabs/vesta/engine/wire"
	"github.com/vestalabs/vesta/internal/contract"
)

// memSegment keeps MemFS tests small: every segment is preallocated in memory.
const memSegment = 64 << 10

func TestContractsEnabled(t *testing.T) {
	if !contract.Enabled {
		t.Fatal("tests must run with -tags contracts")
	}
}

// abandon drops the WAL as a killed process would: buffered records are
// lost, written ones stay in the (page cache of the) file system.
func (w *WAL) abandon() {
	if w.file != nil {
		w.file.Close()
	}
	w.lock.Close()
	w.closed = true
}

// testIdentity is the identity tOpts gives a test's WAL.
var testIdentity = Identity{ClusterID: 7, ReplicaID: 2, Members: []wire.ReplicaID{1, 2, 3}}

// tOpts completes a test's options the way most tests want them: the test
// identity, CreateIfMissing (tests make their own fresh directories), and a
// logger that keeps the test's output quiet. Tests of identities, create
// modes and logging set those themselves.
func tOpts(o WALOptions) WALOptions {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Identity.ClusterID == 0 && len(o.Identity.Members) == 0 {
		o.Identity = testIdentity
	}
	if o.Create == MustExist {
		o.Create = CreateIfMissing
	}
	return o
}

// openWAL opens a WAL with tOpts(opts).
func openWAL(t testing.TB, dir string, opts WALOptions) *WAL {
	t.Helper()
	w, err := OpenWAL(dir, tOpts(opts))
	if err != nil {
		t.Fatalf("OpenWAL: %v", err)
	}
	return w
}

func load(t testing.TB, w *WAL) paxos.Persisted {
	t.Helper()
	p, err := w.Load()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func mustAppend(t testing.TB, w *WAL, es []wire.Entry, hs paxos.HardState, save bool) {
	t.Helper()
	if err := w.Append(es, hs, save); err != nil {
		t.Fatalf("Append: %v", err)
	}
}

func mustSync(t testing.TB, w *WAL) {
	t.Helper()
	if err := w.Sync(); err != nil {
		t.Fatalf("Sync: %v", err)
	}
}

func entry(slot wire.Slot, size int, rng *rand.Rand) wire.Entry {
	e := wire.Entry{Slot: slot, Ballot: wire.Ballot{Round: uint64(slot)/3 + 1, Replica: 2}}
	if size == 0 {
		e.Value = wire.Noop
		return e
	}
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	e.Value = wire.Value{Kind: wire.ValueBatch, Data: data}
	return e
}

func sameEntries(t testing.TB, got, want []wire.Entry) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d entries, want %d", len(got), len(want))
	}
	for i := range got {
		if got[i].Slot != want[i].Slot || got[i].Ballot != want[i].Ballot || !got[i].Value.Equal(want[i].Value) {
			t.Fatalf("entry %d = %v %v %v, want %v %v %v", i, got[i].Slot, got[i].Ballot, got[i].Value,
				want[i].Slot, want[i].Ballot, want[i].Value)
		}
	}
}

func segments(t testing.TB, fs vfs.FS, dir string) []string {
	t.Helper()
	names, err := fs.List(dir)
	if err != nil {
		t.Fatal(err)
	}
	var segs []string
	for _, n := range names {
		if _, ok := parseSegmentName(n); ok {
			segs = append(segs, filepath.Join(dir, n))
		}
	}
	return segs
}

// recordsOf lists the valid records of a segment file on disk.
func recordsOf(t testing.TB, path string) []record {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	seq, ok := parseSegmentName(filepath.Base(path))
	if !ok {
		t.Fatalf("%s is not a segment", path)
	}
	return scanSegment(data, seq).recs
}

func TestWALRoundTripRealFiles(t *testing.T) {
	dir := t.TempDir()
	opts := WALOptions{SegmentSize: 4096, BufferSize: 512}
	rng := rand.New(rand.NewPCG(1, 2))
	w := openWAL(t, dir, opts)
	if p := load(t, w); len(p.Entries) != 0 || p.HardState != (paxos.HardState{}) {
		t.Fatalf("new WAL loads %+v", p)
	}
	var want []wire.Entry
	var hs paxos.HardState
	slot := wire.Slot(0)
	for round := range 40 {
		batch := make([]wire.Entry, rng.IntN(6))
		for i := range batch {
			batch[i] = entry(slot, rng.IntN(300), rng)
			slot++
		}
		want = append(want, batch...)
		save := round%3 == 0
		if save {
			hs = paxos.HardState{Promised: wire.Ballot{Round: uint64(round), Replica: 1}, Commit: slot / 2}
		}
		mustAppend(t, w, batch, hs, save)
		if round%4 == 3 {
			mustSync(t, w)
		}
	}
	mustSync(t, w)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if n := len(segments(t, vfs.Default, dir)); n < 3 {
		t.Fatalf("%d segments: the test wants rollovers", n)
	}
	w = openWAL(t, dir, opts)
	p := load(t, w)
	sameEntries(t, p.Entries, want)
	if p.HardState != hs {
		t.Fatalf("hard state %+v, want %+v", p.HardState, hs)
	}
	// The reopened log goes on where it stopped.
	more := []wire.Entry{entry(slot, 100, rng), entry(slot+1, 0, rng)}
	hs.Commit++
	mustAppend(t, w, more, hs, true)
	mustSync(t, w)
	w.Close()
	w = openWAL(t, dir, opts)
	defer w.Close()
	p = load(t, w)
	sameEntries(t, p.Entries, append(want, more...))
	if p.HardState != hs {
		t.Fatalf("hard state %+v, want %+v", p.HardState, hs)
	}
}

func TestWALAppendCopiesTheCallersBuffers(t *testing.T) {
	fs := vfs.NewMemFS()
	w := openWAL(t, "/wal", WALOptions{FS: fs, SegmentSize: memSegment})
	data := []byte("original")
	mustAppend(t, w, []wire.Entry{{Slot: 0, Ballot: wire.Ballot{Round: 1, Replica: 1}, Value: wire.Value{Kind: wire.ValueBatch, Data: data}}}, paxos.HardState{}, false)
	copy(data, "CLOBBER!")
	mustSync(t, w)
	w.Close()
	w = openWAL(t, "/wal", WALOptions{FS: fs.CrashSyncedOnly(), SegmentSize: memSegment})
	defer w.Close()
	if got := load(t, w).Entries[0].Value.Data; string(got) != "original" {
		t.Fatalf("recovered %q: Append kept a reference to the caller's buffer", got)
	}
}

func TestWALCloseWritesWhatIsBuffered(t *testing.T) {
	fs := vfs.NewMemFS()
	rng := rand.New(rand.NewPCG(3, 3))
	w := openWAL(t, "/wal", WALOptions{FS: fs, SegmentSize: memSegment})
	es := []wire.Entry{entry(0, 10, rng), entry(1, 20, rng)}
	mustAppend(t, w, es, paxos.HardState{Commit: 1, Promised: wire.Ballot{Round: 1, Replica: 1}}, true)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Sync(); !errors.Is(err, ErrWALClosed) {
		t.Fatalf("Sync after Close = %v", err)
	}
	w = openWAL(t, "/wal", WALOptions{FS: fs, SegmentSize: memSegment}) // same FS: a clean restart, no crash
	defer w.Close()
	sameEntries(t, load(t, w).Entries, es)
}

// TestWALSyncsTheDirectoryAfterCreatingSegments: a crash that keeps only
// what was synced (no dir entry that was not dir-synced) keeps every synced
// record, across many rollovers.
func TestWALSyncsTheDirectoryAfterCreatingSegments(t *testing.T) {
	fs := vfs.NewMemFS()
	rng := rand.New(rand.NewPCG(4, 4))
	w := openWAL(t, "/wal", WALOptions{FS: fs, SegmentSize: 512})
	var want []wire.Entry
	for i := range 50 {
		e := entry(wire.Slot(i), rng.IntN(100), rng)
		want = append(want, e)
		mustAppend(t, w, []wire.Entry{e}, paxos.HardState{}, false)
	}
	mustSync(t, w)
	if n := len(segments(t, fs, "/wal")); n < 5 {
		t.Fatalf("only %d segments", n)
	}
	crashed := fs.CrashSyncedOnly()
	w2 := openWAL(t, "/wal", WALOptions{FS: crashed, SegmentSize: 512})
	defer w2.Close()
	sameEntries(t, load(t, w2).Entries, want)
}

// TestWALOpenMakesRecoveredRecordsDurable: a process killed with written
// but unsynced records restarts and sees them; they must survive a power
// failure after that restart, because the replica now acts on them.
func TestWALOpenMakesRecoveredRecordsDurable(t *testing.T) {
	fs := vfs.NewMemFS()
	rng := rand.New(rand.NewPCG(5, 5))
	opts := WALOptions{FS: fs, SegmentSize: 1024, BufferSize: 1} // every Append writes
	w := openWAL(t, "/wal", opts)
	var es []wire.Entry
	for i := range 20 {
		es = append(es, entry(wire.Slot(i), 50, rng))
		mustAppend(t, w, es[i:i+1], paxos.HardState{}, false)
	}
	w.abandon() // killed: no Sync, no Close
	w = openWAL(t, "/wal", opts)
	sameEntries(t, load(t, w).Entries, es)
	w.abandon()
	opts.FS = fs.CrashSyncedOnly()
	w = openWAL(t, "/wal", opts)
	defer w.Close()
	sameEntries(t, load(t, w).Entries, es)
}

func TestWALOversizedEntryGetsItsOwnSegment(t *testing.T) {
	fs := vfs.NewMemFS()
	rng := rand.New(rand.NewPCG(6, 6))
	opts := WALOptions{FS: fs, SegmentSize: 512}
	w := openWAL(t, "/wal", opts)
	es := []wire.Entry{entry(0, 10, rng), entry(1, 2000, rng), entry(2, 10, rng), entry(3, 3000, rng)}
	mustAppend(t, w, es, paxos.HardState{Commit: 2, Promised: wire.Ballot{Round: 1, Replica: 1}}, true)
	mustSync(t, w)
	w.Close()
	w = openWAL(t, "/wal", WALOptions{FS: fs.CrashSyncedOnly(), SegmentSize: 512})
	defer w.Close()
	sameEntries(t, load(t, w).Entries, es)
	// e0 | e1 alone | e2 | e3 alone | the hard state
	if got := len(segments(t, fs, "/wal")); got != 5 {
		t.Fatalf("%d segments, want 5", got)
	}
}

func TestWALSyncFailureMakesItUnusable(t *testing.T) {
	fs := vfs.NewMemFS()
	rng := rand.New(rand.NewPCG(7, 7))
	w := openWAL(t, "/wal", WALOptions{FS: fs, SegmentSize: memSegment})
	synced := []wire.Entry{entry(0, 10, rng)}
	mustAppend(t, w, synced, paxos.HardState{}, false)
	mustSync(t, w)
	boom := errors.New("EIO")
	fs.SetFault(func(op, _ string) error {
		if op == vfs.OpSync {
			return boom
		}
		return nil
	})
	mustAppend(t, w, []wire.Entry{entry(1, 10, rng)}, paxos.HardState{}, false)
	err := w.Sync()
	var fe *FailedError
	if !errors.As(err, &fe) || !errors.Is(err, boom) || fe.Op != "sync" {
		t.Fatalf("Sync = %v, want a *FailedError for the sync", err)
	}
	fs.SetFault(nil)
	if err2 := w.Sync(); !errors.As(err2, &fe) {
		t.Fatalf("Sync after a failed sync = %v: a failed fdatasync must not be retried", err2)
	}
	if err2 := w.Append([]wire.Entry{entry(2, 1, rng)}, paxos.HardState{}, false); !errors.As(err2, &fe) {
		t.Fatalf("Append after a failure = %v", err2)
	}
	w.Close()
	w = openWAL(t, "/wal", WALOptions{FS: fs.CrashSyncedOnly(), SegmentSize: memSegment})
	defer w.Close()
	sameEntries(t, load(t, w).Entries, synced)
}

// TestWALRolloverInterruptedAfterTheSeal: the process dies after sealing a
// segment and before its successor exists. The sealed segment is newest
// then, and OpenWAL must start a new one rather than append after the seal.
func TestWALRolloverInterruptedAfterTheSeal(t *testing.T) {
	fs := vfs.NewMemFS()
	rng := rand.New(rand.NewPCG(8, 8))
	opts := WALOptions{FS: fs, SegmentSize: 512}
	w := openWAL(t, "/wal", opts)
	var es []wire.Entry
	for i := range 3 {
		es = append(es, entry(wire.Slot(i), 60, rng)) // three fit beside the seal, a fourth of 200 does not
	}
	mustAppend(t, w, es, paxos.HardState{}, false)
	mustSync(t, w)
	fs.SetFault(func(op, name string) error {
		if op == vfs.OpCreate && strings.HasSuffix(name, ".tmp") {
			return errors.New("ENOSPC")
		}
		return nil
	})
	more := entry(3, 200, rng)
	if err := w.Append([]wire.Entry{more}, paxos.HardState{}, false); err == nil {
		t.Fatal("Append across a failing rollover succeeded")
	}
	fs.SetFault(nil)
	w.abandon()
	for _, crashed := range []*vfs.MemFS{fs, fs.CrashSyncedOnly()} {
		opts.FS = crashed
		w = openWAL(t, "/wal", opts)
		sameEntries(t, load(t, w).Entries, es)
		mustAppend(t, w, []wire.Entry{more}, paxos.HardState{}, false)
		mustSync(t, w)
		w.Close()
		w = openWAL(t, "/wal", WALOptions{FS: crashed.CrashSyncedOnly(), SegmentSize: 512})
		sameEntries(t, load(t, w).Entries, append(slices.Clip(es), more))
		w.Close()
	}
}

func TestWALLeftoverTemporarySegmentIsRemoved(t *testing.T) {
	dir := t.TempDir()
	w := openWAL(t, dir, WALOptions{})
	w.Close()
	tmp := filepath.Join(dir, segmentName(2)+".tmp")
	if err := os.WriteFile(tmp, []byte("half a segment"), 0o644); err != nil {
		t.Fatal(err)
	}
	w = openWAL(t, dir, WALOptions{})
	defer w.Close()
	if _, err := os.Stat(tmp); !os.IsNotExist(err) {
		t.Fatalf("temporary segment still there: %v", err)
	}
}

func TestWALDirectoryIsLocked(t *testing.T) {
	dir := t.TempDir()
	w := openWAL(t, dir, WALOptions{})
	if w2, err := OpenWAL(dir, tOpts(WALOptions{})); err == nil {
		w2.Close()
		t.Fatal("a second OpenWAL of an open directory succeeded")
	}
	w.Close()
	w = openWAL(t, dir, WALOptions{})
	w.Close()
}

func TestWALRejectsBadOptions(t *testing.T) {
	if _, err := OpenWAL(t.TempDir(), tOpts(WALOptions{SegmentSize: 100})); err == nil {
		t.Fatal("segment size 100 accepted")
	}
}

// writeLog writes n entries (the last one lastSize bytes) with real files in
// dir, syncs and closes, and returns them.
func writeLog(t testing.TB, dir string, opts WALOptions, n, lastSize int) []wire.Entry {
	t.Helper()
	return writeLogAndStop(t, dir, opts, n, lastSize, true)
}

// writeLogKilled is writeLog with a process killed after the Sync instead
// of a Close: no close record, so later damage to the tail reads as a crash's.
func writeLogKilled(t testing.TB, dir string, opts WALOptions, n, lastSize int) []wire.Entry {
	t.Helper()
	return writeLogAndStop(t, dir, opts, n, lastSize, false)
}

func writeLogAndStop(t testing.TB, dir string, opts WALOptions, n, lastSize int, clean bool) []wire.Entry {
	t.Helper()
	rng := rand.New(rand.NewPCG(uint64(n), uint64(lastSize)))
	w := openWAL(t, dir, opts)
	var es []wire.Entry
	for i := range n {
		size := 40 + rng.IntN(40)
		if i == n-1 {
			size = lastSize
		}
		es = append(es, entry(wire.Slot(i), size, rng))
		mustAppend(t, w, es[i:], paxos.HardState{}, false)
	}
	mustSync(t, w)
	if !clean {
		w.abandon()
		return es
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return es
}

func wantCorruption(t *testing.T, err error, file string, off int64) *CorruptionError {
	t.Helper()
	var ce *CorruptionError
	if !errors.As(err, &ce) {
		t.Fatalf("OpenWAL = %v, want a *CorruptionError", err)
	}
	if ce.File != file || ce.Offset != off {
		t.Fatalf("corruption reported at %s:%d, want %s:%d (%v)", ce.File, ce.Offset, file, off, err)
	}
	if msg := err.Error(); !strings.Contains(msg, file) || !strings.Contains(msg, fmt.Sprintf("offset %d", off)) {
		t.Fatalf("error %q does not name the file and offset", msg)
	}
	return ce
}

func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data[off] ^= 0x40
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestWALCorruptionBeforeTheTailIsRefused(t *testing.T) {
	opts := WALOptions{SegmentSize: 4096}
	for _, where := range []string{"body", "header"} {
		t.Run(where, func(t *testing.T) {
			dir := t.TempDir()
			writeLog(t, dir, opts, 20, 50)
			seg := segments(t, vfs.Default, dir)[0]
			recs := recordsOf(t, seg)
			victim := recs[len(recs)/2]
			off := victim.off + recHeaderSize + int64(len(victim.body))/2
			if where == "header" {
				off = victim.off + 5 // the length field
			}
			flipByte(t, seg, off)
			_, err := OpenWAL(dir, tOpts(opts))
			wantCorruption(t, err, seg, victim.off)
		})
	}
}

func TestWALCorruptionInAnOlderSegmentIsRefused(t *testing.T) {
	opts := WALOptions{SegmentSize: 1024}
	cases := map[string]func(t *testing.T, seg string, recs []record) int64{
		// The segment's last entry: its seal, valid, follows it.
		"last entry": func(t *testing.T, seg string, recs []record) int64 {
			r := recs[len(recs)-2]
			flipByte(t, seg, r.off+recHeaderSize+1)
			return r.off
		},
		// The seal: nothing valid follows, but a newer segment exists.
		"seal": func(t *testing.T, seg string, recs []record) int64 {
			r := recs[len(recs)-1]
			flipByte(t, seg, r.off+recHeaderSize)
			return r.off
		},
		// The seal and the entry before it lost to zeros: a clean-looking end
		// without a seal.
		"zeroed end": func(t *testing.T, seg string, recs []record) int64 {
			data, _ := os.ReadFile(seg)
			from := recs[len(recs)-2].off
			clear(data[from:])
			os.WriteFile(seg, data, 0o644)
			return from
		},
	}
	for name, damage := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			writeLog(t, dir, opts, 40, 50)
			segs := segments(t, vfs.Default, dir)
			if len(segs) < 3 {
				t.Fatalf("%d segments", len(segs))
			}
			seg := segs[1]
			off := damage(t, seg, recordsOf(t, seg))
			_, err := OpenWAL(dir, tOpts(opts))
			wantCorruption(t, err, seg, off)
		})
	}
}

func TestWALMissingSegmentIsRefused(t *testing.T) {
	dir := t.TempDir()
	opts := WALOptions{SegmentSize: 1024}
	writeLog(t, dir, opts, 40, 50)
	segs := segments(t, vfs.Default, dir)
	os.Remove(segs[1])
	_, err := OpenWAL(dir, tOpts(opts))
	wantCorruption(t, err, segs[1], 0)
}

// TestWALTornTailAtEveryByte cuts the last record of a killed process's log
// at each of its bytes, by zeroing the rest (preallocated space) and by
// filling the rest with garbage, and checks recovery drops that record only.
// Truncating the file there instead is no crash's doing (the segment was
// preallocated): it is refused, naming the file and its size.
func TestWALTornTailAtEveryByte(t *testing.T) {
	const n = 12
	opts := WALOptions{SegmentSize: 8192}
	src := t.TempDir()
	es := writeLogKilled(t, src, opts, n, 100)
	seg := segments(t, vfs.Default, src)
	if len(seg) != 1 {
		t.Fatalf("%d segments", len(seg))
	}
	name := filepath.Base(seg[0])
	orig, err := os.ReadFile(seg[0])
	if err != nil {
		t.Fatal(err)
	}
	recs := recordsOf(t, seg[0])
	last := recs[len(recs)-1]
	start, end := last.off, last.off+last.size()
	bodyEnd := last.off + recHeaderSize + int64(len(last.body)) // zeroing the padding changes nothing
	rng := rand.New(rand.NewPCG(9, 9))
	for _, mode := range []string{"truncated", "zeroed", "garbage"} {
		stop := end
		if mode == "zeroed" {
			stop = bodyEnd
		}
		for cut := start; cut < stop; cut++ {
			var data []byte
			switch mode {
			case "truncated":
				data = slices.Clone(orig[:cut])
			case "zeroed":
				data = slices.Clone(orig)
				clear(data[cut:])
			case "garbage":
				data = slices.Clone(orig)
				clear(data[end:])
				for i := cut; i < end; i++ {
					data[i] = byte(rng.Uint32())
				}
			}
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
				t.Fatal(err)
			}
			w, err := OpenWAL(dir, tOpts(opts))
			if mode == "truncated" {
				ce := wantCorruption(t, err, filepath.Join(dir, name), cut)
				if !strings.Contains(ce.Reason, "preallocated") {
					t.Fatalf("truncated at %d: reason %q does not say the segment was preallocated", cut, ce.Reason)
				}
				continue
			}
			if err != nil {
				t.Fatalf("%s at %d: %v", mode, cut, err)
			}
			if got := load(t, w).Entries; len(got) != n-1 {
				t.Fatalf("%s at %d (record [%d,%d)): recovered %d entries, want %d", mode, cut, start, end, len(got), n-1)
			}
			sameEntries(t, load(t, w).Entries, es[:n-1])
			if cut == start || cut == stop-1 {
				// Appending after the cut leaves a log that recovers whole.
				mustAppend(t, w, es[n-1:], paxos.HardState{}, false)
				mustSync(t, w)
				w.Close()
				w = openWAL(t, dir, opts)
				sameEntries(t, load(t, w).Entries, es)
			}
			w.Close()
		}
	}
}

func TestDumpWAL(t *testing.T) {
	dir := t.TempDir()
	opts := WALOptions{SegmentSize: 1024}
	w := openWAL(t, dir, opts)
	rng := rand.New(rand.NewPCG(10, 10))
	for i := range 20 {
		mustAppend(t, w, []wire.Entry{entry(wire.Slot(i), 60, rng)},
			paxos.HardState{Promised: wire.Ballot{Round: 3, Replica: 1}, Commit: wire.Slot(i)}, i%5 == 0)
	}
	mustSync(t, w)
	w.Close()
	var out bytes.Buffer
	if err := DumpWAL(dir, &out); err != nil {
		t.Fatal(err)
	}
	s := out.String()
	for _, want := range []string{"segment 0000000000000001.wal", "entry     slot=0 ballot=1.2 value=batch size=60 crc=ok",
		"hardstate promised=3.1 commit=0", "seal", "zero-filled", "20 entries", "OpenWAL accepts"} {
		if !strings.Contains(s, want) {
			t.Fatalf("dump lacks %q:\n%s", want, s)
		}
	}
	seg := segments(t, vfs.Default, dir)[0]
	victim := recordsOf(t, seg)[2]
	flipByte(t, seg, victim.off+recHeaderSize+3)
	out.Reset()
	if err := DumpWAL(dir, &out); err != nil {
		t.Fatal(err)
	}
	s = out.String()
	for _, want := range []string{fmt.Sprintf("off=%-10d BAD", victim.off), "crc=bad", "body checksum mismatch",
		"verdict: CORRUPT at offset " + fmt.Sprint(victim.off), "OpenWAL refuses", "19 entries"} {
		if !strings.Contains(s, want) {
			t.Fatalf("dump of a corrupt log lacks %q:\n%s", want, s)
		}
	}
	if testing.Verbose() {
		t.Log("\n" + s)
	}
}

func TestWALHotPathDoesNotAllocate(t *testing.T) {
	w := openWAL(t, t.TempDir(), WALOptions{})
	defer w.Close()
	rng := rand.New(rand.NewPCG(11, 11))
	batch := make([]wire.Entry, 64)
	for i := range batch {
		batch[i] = entry(wire.Slot(i), 64, rng)
	}
	hs := paxos.HardState{Promised: wire.Ballot{Round: 1, Replica: 1}}
	mustAppend(t, w, batch, hs, true) // grow the buffer once
	mustSync(t, w)
	if a := testing.AllocsPerRun(20, func() {
		mustAppend(t, w, batch, hs, true)
		mustSync(t, w)
	}); a != 0 {
		t.Fatalf("Append of 64 entries + Sync made %v allocations", a)
	}
	if a := testing.AllocsPerRun(50, func() { mustAppend(t, w, batch[:1], hs, false) }); a != 0 {
		t.Fatalf("Append made %v allocations", a)
	}
}

func TestDumpWALShowsATornTail(t *testing.T) {
	dir := t.TempDir()
	writeLogKilled(t, dir, WALOptions{SegmentSize: 4096}, 5, 100)
	seg := segments(t, vfs.Default, dir)[0]
	recs := recordsOf(t, seg)
	last := recs[len(recs)-1]
	flipByte(t, seg, last.off+30)
	var out bytes.Buffer
	if err := DumpWAL(dir, &out); err != nil {
		t.Fatal(err)
	}
	dropped := last.off + recHeaderSize + int64(len(last.body)) - last.off
	for _, want := range []string{fmt.Sprintf("verdict: torn tail at offset %d", last.off),
		fmt.Sprintf("OpenWAL drops its %d bytes", dropped), "close slot empty", "OpenWAL accepts", "4 entries"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("dump lacks %q:\n%s", want, out.String())
		}
	}
}

// TestWALCorruptionProvenBySyncedMarkIsRefused: a killed process leaves no
// Close mark, but a batch written after a Sync carries the offset synced
// then: damage to the earlier, synced batch is refused even though only
// valid records follow it in the newest segment.
func TestWALCorruptionProvenBySyncedMarkIsRefused(t *testing.T) {
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(13, 13))
	w := openWAL(t, dir, WALOptions{SegmentSize: 8192})
	for i := range 10 {
		mustAppend(t, w, []wire.Entry{entry(wire.Slot(i), 50, rng)}, paxos.HardState{}, false)
		if i == 4 || i == 9 {
			mustSync(t, w)
		}
	}
	w.abandon()
	seg := segments(t, vfs.Default, dir)[0]
	recs := recordsOf(t, seg)
	if len(recs) != 10 {
		t.Fatalf("%d records", len(recs))
	}
	for _, victim := range []record{recs[1], recs[4]} {
		flipByte(t, seg, victim.off+recHeaderSize+2)
		_, err := OpenWAL(dir, tOpts(WALOptions{SegmentSize: 8192}))
		ce := wantCorruption(t, err, seg, victim.off)
		if !strings.Contains(ce.Reason, "synced") {
			t.Fatalf("reason %q does not say the data was synced", ce.Reason)
		}
		flipByte(t, seg, victim.off+recHeaderSize+2)
	}
	// The same damage in the second batch, which no later record shows
	// synced, reads as a torn tail: recovery keeps what precedes it.
	flipByte(t, seg, recs[7].off+recHeaderSize+2)
	w = openWAL(t, dir, WALOptions{SegmentSize: 8192})
	defer w.Close()
	if got := len(load(t, w).Entries); got != 7 {
		t.Fatalf("recovered %d entries, want 7", got)
	}
}

// TestWALOlderFormatVersionIsRefused: a version 2 segment (32-byte header,
// no identity) is refused with an error naming the version and what to do.
func TestWALOlderFormatVersionIsRefused(t *testing.T) {
	for _, v := range []uint32{1, 2} {
		dir := t.TempDir()
		h := make([]byte, 4096)
		copy(h, walMagic)
		binary.LittleEndian.PutUint32(h[8:], v)
		binary.LittleEndian.PutUint64(h[16:], 1)
		binary.LittleEndian.PutUint32(h[28:], crc32.Checksum(h[:28], castagnoli))
		seg := filepath.Join(dir, segmentName(1))
		if err := os.WriteFile(seg, h, 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := OpenWAL(dir, tOpts(WALOptions{}))
		ce := wantCorruption(t, err, seg, 0)
		if !strings.Contains(ce.Reason, fmt.Sprintf("format version %d: this build reads versions 3 and 4 only", v)) ||
			!strings.Contains(ce.Reason, "replace the replica") {
			t.Fatalf("reason %q does not name the version and what to do", ce.Reason)
		}
	}
}
