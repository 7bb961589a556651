package storage

import (
	"bytes"
	"errors"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/vestalabs/vesta/engine/paxos"
	"github.com/vestalabs/vesta/engine/storage/vfs"
	"github.com/vestalabs/vesta/engine/wire"
)

// Damage at rest: what no crash can produce must be refused, never read as
// a torn tail (issue 12, item 3).

// fillLog appends n entries of 40 to 120 bytes with a hard state every 7th
// append, syncing every syncEvery appends and at the end, and returns them.
// The WAL is left open.
func fillLog(t testing.TB, w *WAL, n, syncEvery int, seed uint64) []wire.Entry {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 77))
	var es []wire.Entry
	for i := range n {
		es = append(es, entry(wire.Slot(i), 40+rng.IntN(80), rng))
		hs := paxos.HardState{Promised: wire.Ballot{Round: uint64(i/50 + 1), Replica: 1}, Commit: wire.Slot(i / 2)}
		mustAppend(t, w, es[i:i+1], hs, i%7 == 0)
		if i%syncEvery == syncEvery-1 {
			mustSync(t, w)
		}
	}
	mustSync(t, w)
	return es
}

// TestWALTruncatedNewestSegmentIsRefused is the hostile test of issue 12:
// stop a replica cleanly, truncate its newest (preallocated) segment in the
// middle of its records, start it. It used to start silently with the
// records before the cut, forgetting acknowledged votes. A preallocated
// segment is never shortened by a crash, so the WAL must refuse it.
func TestWALTruncatedNewestSegmentIsRefused(t *testing.T) {
	for _, c := range []struct {
		name    string
		segment int64
	}{
		{"default 64 MiB segment", 0},
		{"newest of several segments", 64 << 10},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			opts := WALOptions{SegmentSize: c.segment}
			w := openWAL(t, dir, opts)
			fillLog(t, w, 2071, 64, 1)
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			segs := segments(t, vfs.Default, dir)
			if c.segment != 0 && len(segs) < 3 {
				t.Fatalf("%d segments: the test wants several", len(segs))
			}
			newest := segs[len(segs)-1]
			recs := recordsOf(t, newest)
			if len(recs) < 20 {
				t.Fatalf("newest segment holds %d records", len(recs))
			}
			cut := recs[len(recs)/3].off + 13 // inside a record
			if err := os.Truncate(newest, cut); err != nil {
				t.Fatal(err)
			}
			w2, err := OpenWAL(dir, tOpts(opts))
			if err == nil {
				n := len(load(t, w2).Entries)
				w2.Close()
				t.Fatalf("OpenWAL of a truncated segment succeeded with %d of 2071 entries", n)
			}
			var ce *CorruptionError
			if !errors.As(err, &ce) || ce.File != newest || !strings.Contains(err.Error(), newest) {
				t.Fatalf("OpenWAL = %v, want a *CorruptionError naming %s", err, newest)
			}
			if ce.Offset != cut || !strings.Contains(ce.Reason, "preallocated") {
				t.Fatalf("OpenWAL = %v, want the size %d named and the preallocation as the reason", err, cut)
			}
		})
	}
}

// damageFile overwrites [from, to) of name on fs with zeros (fill nil) or
// with the fill byte pattern, keeping the file's size, durably.
func damageFile(t testing.TB, fs vfs.FS, name string, from, to int64, fill []byte) {
	t.Helper()
	f, err := fs.OpenReadWrite(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, to-from)
	for i := range b {
		if fill != nil {
			b[i] = fill[i%len(fill)]
		}
	}
	if _, err := f.WriteAt(b, from); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

func fileSize(t testing.TB, fs vfs.FS, name string) int64 {
	t.Helper()
	f, err := fs.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n, err := f.Size()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func recordsOn(t testing.TB, fs vfs.FS, path string) []record {
	t.Helper()
	data, err := readFile(fs, path, nil)
	if err != nil {
		t.Fatal(err)
	}
	seq, _ := parseSegmentName(filepath.Base(path))
	s := scanSegment(data, seq)
	return s.recs
}

// TestWALCleanlyClosedLogThatLostItsTailIsRefused: after a clean Close,
// every record is durable, so any record lost from the tail is damage, even
// when the file keeps its size and what remains reads like a torn write:
// the tail zeroed, or overwritten with garbage, from a record in the middle
// of the newest segment to the end of the file.
func TestWALCleanlyClosedLogThatLostItsTailIsRefused(t *testing.T) {
	for _, fill := range []struct {
		name string
		b    []byte
	}{{"zeroed", nil}, {"garbage", []byte("\x5a\xa5\x13\x37junk")}} {
		t.Run(fill.name, func(t *testing.T) {
			fs := vfs.NewMemFS()
			opts := WALOptions{FS: fs, SegmentSize: memSegment}
			w := openWAL(t, "/wal", opts)
			fillLog(t, w, 300, 16, 2)
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			segs := segments(t, fs, "/wal")
			newest := segs[len(segs)-1]
			recs := recordsOn(t, fs, newest)
			victim := recs[len(recs)/2]
			damageFile(t, fs, newest, victim.off+3, fileSize(t, fs, newest), fill.b)
			w2, err := OpenWAL("/wal", tOpts(opts))
			if err == nil {
				n := len(load(t, w2).Entries)
				w2.Close()
				t.Fatalf("a cleanly closed log that lost its tail opened with %d of 300 entries", n)
			}
			ce := wantCorruption(t, err, newest, victim.off)
			if !strings.Contains(ce.Reason, "closed cleanly") {
				t.Fatalf("reason %q does not say the log was closed cleanly", ce.Reason)
			}
		})
	}
}

// TestWALCleanCloseSurvivesAPowerFailure: the clean-close record is synced,
// so damage to the last synced batch found after a clean Close and a power
// failure is refused. (Before, Close wrote an unsynced mark: a power failure
// could lose it, and the damage read as a torn tail.)
func TestWALCleanCloseSurvivesAPowerFailure(t *testing.T) {
	fs := vfs.NewMemFS()
	w := openWAL(t, "/wal", WALOptions{FS: fs, SegmentSize: memSegment})
	fillLog(t, w, 50, 10, 3)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	crashed := fs.CrashSyncedOnly()
	seg := segments(t, crashed, "/wal")[0]
	recs := recordsOn(t, crashed, seg)
	last := recs[len(recs)-1]
	damageFile(t, crashed, seg, last.off+recHeaderSize, last.off+recHeaderSize+1, []byte{0xff})
	_, err := OpenWAL("/wal", tOpts(WALOptions{FS: crashed, SegmentSize: memSegment}))
	wantCorruption(t, err, seg, last.off)
}

// TestWALCrashStillTruncatesATornTail: without a clean Close, damage past
// the last synced record is an unsynced tail: recovery drops it, keeps every
// synced record, and says so in the log (WALOptions.Logger, or slog.Default
// when it is nil), naming the file, the offset and the bytes dropped.
func TestWALCrashStillTruncatesATornTail(t *testing.T) {
	for _, explicit := range []bool{true, false} {
		name := "default logger"
		if explicit {
			name = "WALOptions.Logger"
		}
		t.Run(name, func(t *testing.T) {
			var logged bytes.Buffer
			logger := slog.New(slog.NewTextHandler(&logged, nil))
			fs := vfs.NewMemFS()
			opts := WALOptions{FS: fs, SegmentSize: memSegment, BufferSize: 1,
				Identity: testIdentity, Create: CreateIfMissing}
			if explicit {
				opts.Logger = logger
			} else {
				defer slog.SetDefault(slog.Default())
				slog.SetDefault(logger)
			}
			w, err := OpenWAL("/wal", opts)
			if err != nil {
				t.Fatal(err)
			}
			es := fillLog(t, w, 100, 10, 4)
			rng := rand.New(rand.NewPCG(4, 4))
			for i := range 5 { // written, never synced
				mustAppend(t, w, []wire.Entry{entry(wire.Slot(100+i), 60, rng)}, paxos.HardState{}, false)
			}
			w.abandon()
			seg := segments(t, fs, "/wal")[0]
			recs := recordsOn(t, fs, seg)
			torn, last := recs[len(recs)-3], recs[len(recs)-1]
			damageFile(t, fs, seg, torn.off+recHeaderSize+5, torn.off+recHeaderSize+6, []byte{0xee})

			logged.Reset()
			if w, err = OpenWAL("/wal", opts); err != nil {
				t.Fatal(err)
			}
			got := load(t, w).Entries
			if len(got) != 102 {
				t.Fatalf("recovered %d entries, want the 100 synced and the 2 written before the torn one", len(got))
			}
			sameEntries(t, got[:100], es)
			w.Close()
			bytesDropped := last.off + recHeaderSize + int64(len(last.body)) - torn.off
			out := logged.String()
			for _, want := range []string{"level=WARN", "torn", "file=" + seg, "offset=" + strconv.FormatInt(torn.off, 10),
				"bytes=" + strconv.FormatInt(bytesDropped, 10)} {
				if !strings.Contains(out, want) {
					t.Fatalf("log lacks %q:\n%s", want, out)
				}
			}
		})
	}
}

// TestWALOversizedSegment: a record too large for a segment gets one of its
// own that grows past the preallocated size. Such a segment is not short,
// reopens after a clean Close and after a kill, and when its record was torn
// by a crash (the file's size only part extended) recovery drops the record
// and cuts the file back to its preallocated size, never below.
func TestWALOversizedSegment(t *testing.T) {
	const segSize = 4096
	rng := rand.New(rand.NewPCG(21, 21))
	small, huge := entry(0, 50, rng), entry(1, 20000, rng)
	for _, clean := range []bool{true, false} {
		dir := t.TempDir()
		opts := WALOptions{SegmentSize: segSize, BufferSize: 1} // every Append writes
		w := openWAL(t, dir, opts)
		mustAppend(t, w, []wire.Entry{small}, paxos.HardState{}, false)
		mustAppend(t, w, []wire.Entry{huge}, paxos.HardState{}, false)
		if clean {
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
		} else {
			w.abandon() // the huge record written, never synced
		}
		segs := segments(t, vfs.Default, dir)
		big := segs[len(segs)-1]
		if n := fileSize(t, vfs.Default, big); n <= segSize {
			t.Fatalf("clean=%v: the huge record's segment is %d bytes", clean, n)
		}
		w = openWAL(t, dir, opts)
		sameEntries(t, load(t, w).Entries, []wire.Entry{small, huge})
		w.abandon()

		// The size only part extended: a crash's doing when the record was
		// unsynced, damage after a clean Close.
		hugeAt := recordsOf(t, big)[0].off
		if err := os.Truncate(big, segSize+1000); err != nil {
			t.Fatal(err)
		}
		w2, err := OpenWAL(dir, tOpts(opts))
		if clean {
			if err == nil {
				w2.Close()
				t.Fatal("a cleanly closed oversized segment cut short opened")
			}
			ce := wantCorruption(t, err, big, hugeAt)
			if !strings.Contains(ce.Reason, "closed cleanly") {
				t.Fatalf("reason %q", ce.Reason)
			}
			continue
		}
		if err != nil {
			t.Fatalf("a torn oversized record refused: %v", err)
		}
		sameEntries(t, load(t, w2).Entries, []wire.Entry{small})
		if n := fileSize(t, vfs.Default, big); n != segSize {
			t.Fatalf("the torn oversized segment is %d bytes after recovery, want its preallocated %d", n, segSize)
		}
		mustAppend(t, w2, []wire.Entry{huge}, paxos.HardState{}, false)
		mustSync(t, w2)
		w2.Close()
		w2 = openWAL(t, dir, opts)
		sameEntries(t, load(t, w2).Entries, []wire.Entry{small, huge})
		w2.Close()
	}
}

// TestWALReopenAfterCleanCloseAppendsOn: the close record vouches for the
// records up to where Close found them, not for the segment's end: a
// reopened WAL appends after them, a crash then still tears only what came
// after, and the next Close moves the close record on. A Close with nothing
// new does no I/O.
func TestWALReopenAfterCleanCloseAppendsOn(t *testing.T) {
	fs := vfs.NewMemFS()
	opts := WALOptions{FS: fs, SegmentSize: memSegment, BufferSize: 1}
	w := openWAL(t, "/wal", opts)
	es := fillLog(t, w, 50, 10, 5)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w = openWAL(t, "/wal", opts)
	rng := rand.New(rand.NewPCG(5, 5))
	for i := range 25 {
		es = append(es, entry(wire.Slot(50+i), 70, rng))
		mustAppend(t, w, es[len(es)-1:], paxos.HardState{}, false)
		if i == 19 {
			mustSync(t, w)
		}
	}
	w.abandon() // 20 more synced, 5 written and unsynced
	seg := segments(t, fs, "/wal")[0]
	recs := recordsOn(t, fs, seg)
	torn := recs[len(recs)-3]
	damageFile(t, fs, seg, torn.off+recHeaderSize, torn.off+recHeaderSize+1, []byte{0x99})
	w = openWAL(t, "/wal", opts)
	got := load(t, w).Entries
	if len(got) != 72 {
		t.Fatalf("recovered %d entries, want 72 (50 closed, 20 synced, 2 written before the torn one)", len(got))
	}
	sameEntries(t, got, es[:72])
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}

	// A power failure after that Close keeps everything, and damage to the
	// records appended after the first Close is refused now.
	crashed := fs.CrashSyncedOnly()
	w = openWAL(t, "/wal", WALOptions{FS: crashed, SegmentSize: memSegment})
	sameEntries(t, load(t, w).Entries, es[:72])
	crashed.SetFault(func(op, name string) error {
		if op == vfs.OpWrite || op == vfs.OpSync {
			return errors.New("Close with nothing new wrote or synced")
		}
		return nil
	})
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	crashed.SetFault(nil)
	recs = recordsOn(t, crashed, seg)
	victim := recs[len(recs)-1]
	damageFile(t, crashed, seg, victim.off+recHeaderSize, victim.off+recHeaderSize+1, []byte{0x99})
	_, err := OpenWAL("/wal", tOpts(WALOptions{FS: crashed, SegmentSize: memSegment}))
	wantCorruption(t, err, seg, victim.off)
}

// TestWALCrashDuringClose: a power failure between writing the close record
// and syncing it leaves the old slot, the new one, or a torn one. Every
// record was synced before, so each recovers everything; a torn slot is
// ignored with a warning.
func TestWALCrashDuringClose(t *testing.T) {
	fs := vfs.NewMemFS()
	opts := WALOptions{FS: fs, SegmentSize: memSegment}
	w := openWAL(t, "/wal", opts)
	es := fillLog(t, w, 40, 10, 6)
	rng := rand.New(rand.NewPCG(6, 6))
	es = append(es, entry(40, 500, rng))
	mustAppend(t, w, es[40:], paxos.HardState{}, false) // buffered: Close syncs it
	syncs := 0
	fs.SetFault(func(op, _ string) error {
		if op == vfs.OpSync {
			if syncs++; syncs == 2 { // Close's records, then its close record
				return errors.New("power failure")
			}
		}
		return nil
	})
	if err := w.Close(); err == nil {
		t.Fatal("Close whose last sync failed returned nil")
	}
	fs.SetFault(nil)
	outcomes := map[string]int{}
	for seed := range uint64(60) {
		var crashed *vfs.MemFS
		if seed%2 == 0 {
			crashed = fs.Crash(rand.New(rand.NewPCG(seed, 1)))
		} else {
			crashed = fs.CrashOutOfOrder(rand.New(rand.NewPCG(seed, 1)), 8)
		}
		data, err := readFile(crashed, "/wal/"+segmentName(1), nil)
		if err != nil {
			t.Fatal(err)
		}
		c := scanSegment(data, 1).close
		var logged bytes.Buffer
		w, err := OpenWAL("/wal", WALOptions{FS: crashed, SegmentSize: memSegment, Identity: testIdentity,
			Logger: slog.New(slog.NewTextHandler(&logged, nil))})
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		sameEntries(t, load(t, w).Entries, es)
		w.Close()
		warned := strings.Contains(logged.String(), "close slot damaged")
		switch {
		case c.bad != "" && warned:
			outcomes["torn"]++
		case c.bad != "":
			t.Fatalf("seed %d: a torn close slot (%s) without a warning", seed, c.bad)
		case c.valid:
			outcomes["valid"]++
		default:
			outcomes["empty"]++
		}
	}
	if outcomes["torn"] == 0 || outcomes["empty"] == 0 || outcomes["valid"] == 0 {
		t.Fatalf("outcomes %v: the test lost its power", outcomes)
	}
	t.Logf("close slot after a crash during Close: %v", outcomes)
}
