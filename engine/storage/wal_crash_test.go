package storage

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"testing"

	"github.com/vestalabs/vesta/engine/paxos"
	"github.com/vestalabs/vesta/engine/storage/vfs"
	"github.com/vestalabs/vesta/engine/wire"
	"pgregory.net/rapid"
)

// modelRec is one record the test appended: an entry or a hard state.
type modelRec struct {
	isHS bool
	e    wire.Entry
	hs   paxos.HardState
}

// crashModel drives a WAL on a MemFS with random appends, syncs, injected
// failures, process kills, clean restarts and power failures, and checks
// every recovery against what was appended.
type crashModel struct {
	fs      *vfs.MemFS
	opts    WALOptions
	w       *WAL
	recs    []modelRec // appended, in order; a crash keeps a prefix of them
	durable int        // recs[:durable] must survive anything
	broken  bool       // the WAL reported a failure: only a restart helps
	faultOp string     // the next operation of this kind fails once
	slot    wire.Slot
	hsN     uint64
	scratch []byte // value buffers, reused across appends like a caller would
	log     []string
}

func (m *crashModel) installFault() {
	m.fs.SetFault(func(op, name string) error {
		if op == m.faultOp {
			m.faultOp = ""
			return errors.New("injected " + op + " failure")
		}
		return nil
	})
}

func (m *crashModel) fatalf(t *rapid.T, format string, args ...any) {
	t.Helper()
	t.Fatalf("%s\nhistory:\n%v\nfs:\n%s", fmt.Sprintf(format, args...), m.log, m.fs)
}

func (m *crashModel) append(t *rapid.T) {
	k := rapid.IntRange(0, 4).Draw(t, "entries")
	batch := make([]wire.Entry, k)
	m.scratch = m.scratch[:0]
	sizes := make([]int, k)
	for i := range batch {
		sizes[i] = rapid.IntRange(0, 200).Draw(t, "size")
		if rapid.IntRange(0, 20).Draw(t, "huge") == 0 {
			sizes[i] = rapid.IntRange(1000, 3000).Draw(t, "huge size") // beyond a segment
		}
	}
	for i := range batch {
		start := len(m.scratch)
		for range sizes[i] {
			m.scratch = append(m.scratch, byte(m.slot)+byte(len(m.scratch)))
		}
		batch[i] = wire.Entry{Slot: m.slot, Ballot: wire.Ballot{Round: uint64(m.slot%5) + 1, Replica: 1 + wire.ReplicaID(m.slot%3)}, Value: wire.Noop}
		if sizes[i] > 0 {
			batch[i].Value = wire.Value{Kind: wire.ValueBatch, Data: m.scratch[start:]}
		}
		m.slot++
	}
	save := rapid.Bool().Draw(t, "save hard state")
	var hs paxos.HardState
	if save {
		m.hsN++
		hs = paxos.HardState{Promised: wire.Ballot{Round: m.hsN, Replica: 1}, Commit: wire.Slot(m.hsN)}
	}
	err := m.w.Append(batch, hs, save)
	m.log = append(m.log, fmt.Sprintf("append %d entries %v hs=%v: %v", k, sizes, save, err))
	if m.broken {
		if err == nil {
			m.fatalf(t, "Append succeeded on a failed WAL")
		}
		return
	}
	// A failed Append may have written some of its records: the model keeps
	// them as records a crash may or may not keep.
	for _, e := range batch {
		e.Value.Data = append([]byte(nil), e.Value.Data...)
		m.recs = append(m.recs, modelRec{e: e})
	}
	if save {
		m.recs = append(m.recs, modelRec{isHS: true, hs: hs})
	}
	if err != nil {
		var fe *FailedError
		if !errors.As(err, &fe) {
			m.fatalf(t, "Append: %v", err)
		}
		m.broken = true
	}
	// The caller reuses its buffers at once.
	for i := range m.scratch {
		m.scratch[i] = 0xEE
	}
}

func (m *crashModel) sync(t *rapid.T) {
	err := m.w.Sync()
	m.log = append(m.log, fmt.Sprintf("sync: %v", err))
	switch {
	case m.broken && err == nil:
		m.fatalf(t, "Sync succeeded on a failed WAL")
	case m.broken:
	case err != nil:
		var fe *FailedError
		if !errors.As(err, &fe) {
			m.fatalf(t, "Sync: %v", err)
		}
		m.broken = true
	default:
		m.durable = len(m.recs)
	}
}

// reopen opens the WAL on m.fs and checks what it recovered: a prefix of
// the appended records at least as long as the durable ones (all of them
// when exact is set).
func (m *crashModel) reopen(t *rapid.T, why string, exact bool) {
	m.installFault()
	w, err := OpenWAL("/wal", tOpts(m.opts))
	if err != nil && m.faultOp == "" {
		// The injected fault fired during recovery; a second open must work.
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
	var want []wire.Entry
	for _, r := range m.recs {
		if !r.isHS {
			want = append(want, r.e)
		}
	}
	if len(p.Entries) > len(want) {
		m.fatalf(t, "after %s: %d entries recovered, only %d appended", why, len(p.Entries), len(want))
	}
	for i, e := range p.Entries {
		if e.Slot != want[i].Slot || e.Ballot != want[i].Ballot || !e.Value.Equal(want[i].Value) {
			m.fatalf(t, "after %s: entry %d is %v/%v/%v, appended %v/%v/%v", why, i, e.Slot, e.Ballot, e.Value,
				want[i].Slot, want[i].Ballot, want[i].Value)
		}
	}
	// Find the cut c of m.recs the recovery corresponds to.
	cut := -1
	entries, hs := 0, paxos.HardState{}
	for c := 0; c <= len(m.recs); c++ {
		if c > 0 {
			if r := m.recs[c-1]; r.isHS {
				hs = r.hs
			} else {
				entries++
			}
		}
		if entries == len(p.Entries) && hs == p.HardState {
			cut = c
		}
	}
	switch {
	case cut < 0:
		m.fatalf(t, "after %s: %d entries and hard state %+v are no prefix of what was appended", why, len(p.Entries), p.HardState)
	case cut < m.durable:
		m.fatalf(t, "after %s: recovered %d records, but %d were synced", why, cut, m.durable)
	case exact && cut != len(m.recs):
		m.fatalf(t, "after %s: recovered %d records of %d", why, cut, len(m.recs))
	}
	m.log = append(m.log, fmt.Sprintf("%s: recovered %d of %d records (%d durable)", why, cut, len(m.recs), m.durable))
	m.recs = m.recs[:cut]
	m.durable = cut // OpenWAL makes what it recovered durable
	if m.hsN < uint64(p.HardState.Commit) {
		m.hsN = uint64(p.HardState.Commit)
	}
}

// crashStats counts what the power failures of the property test produced.
var crashStats struct {
	prefix, outOfOrder atomic.Int64
	// holes: out-of-order crashes that left the newest segment with a bad
	// record followed by a valid one, which recovery must truncate.
	holes atomic.Int64
}

func (m *crashModel) crash(t *rapid.T) {
	seed := rapid.Uint64().Draw(t, "crash seed")
	m.w.abandon()
	rng := rand.New(rand.NewPCG(seed, 0))
	if sector := rapid.SampledFrom([]int{0, 8, 64, 512, 4096}).Draw(t, "sector"); sector == 0 {
		m.log = append(m.log, "power failure")
		m.fs = m.fs.Crash(rng)
		crashStats.prefix.Add(1)
	} else {
		m.log = append(m.log, fmt.Sprintf("power failure, out-of-order writeback of %d-byte sectors", sector))
		m.fs = m.fs.CrashOutOfOrder(rng, sector)
		crashStats.outOfOrder.Add(1)
		if m.newestHasHole(t) {
			crashStats.holes.Add(1)
		}
	}
	m.opts.FS = m.fs
	m.reopen(t, "power failure", false)
}

// newestHasHole reports whether the newest segment holds a bad record with a
// valid one after it.
func (m *crashModel) newestHasHole(t *rapid.T) bool {
	names, err := m.fs.List("/wal")
	if err != nil {
		m.fatalf(t, "List: %v", err)
	}
	for i := len(names) - 1; i >= 0; i-- {
		if seq, ok := parseSegmentName(names[i]); ok {
			data, err := readFile(m.fs, "/wal/"+names[i], nil)
			if err != nil {
				m.fatalf(t, "reading %s: %v", names[i], err)
			}
			return scanSegment(data, seq).resync >= 0
		}
	}
	return false
}

func (m *crashModel) kill(t *rapid.T) {
	m.w.abandon()
	m.log = append(m.log, "kill")
	m.reopen(t, "kill", false)
}

func (m *crashModel) restart(t *rapid.T) {
	err := m.w.Close()
	m.log = append(m.log, fmt.Sprintf("close: %v", err))
	m.reopen(t, "clean restart", !m.broken && err == nil)
}

func (m *crashModel) fault(t *rapid.T) {
	m.faultOp = rapid.SampledFrom([]string{vfs.OpSync, vfs.OpWrite, vfs.OpCreate, vfs.OpPreallocate,
		vfs.OpRename, vfs.OpSyncDir}).Draw(t, "fault")
	m.log = append(m.log, "arm "+m.faultOp+" fault")
}

// TestWALCrashRecoveryProperty: under random workloads with power failures
// at random points (keeping a prefix of the unsynced writes, or writing
// unsynced sectors back out of order), every record appended before the last
// successful Sync is recovered, what is recovered is a prefix of what was
// appended, nothing corrupt is returned, and OpenWAL never refuses the log
// (its only damage is ever in the unsynced tail).
func TestWALCrashRecoveryProperty(t *testing.T) {
	p0, o0, h0 := crashStats.prefix.Load(), crashStats.outOfOrder.Load(), crashStats.holes.Load()
	defer func() {
		t.Logf("power failures: %d prefix, %d out-of-order (%d left a bad record before a valid one)",
			crashStats.prefix.Load()-p0, crashStats.outOfOrder.Load()-o0, crashStats.holes.Load()-h0)
	}()
	rapid.Check(t, func(t *rapid.T) {
		m := &crashModel{fs: vfs.NewMemFS()}
		m.opts = WALOptions{
			FS:          m.fs,
			SegmentSize: int64(rapid.IntRange(MinSegmentSize, 2048).Draw(t, "segment size")),
			BufferSize:  rapid.IntRange(1, 1024).Draw(t, "buffer size"),
		}
		m.reopen(t, "create", true)
		steps := rapid.IntRange(1, 80).Draw(t, "steps")
		for range steps {
			switch op := rapid.IntRange(0, 19).Draw(t, "op"); {
			case op < 9:
				m.append(t)
			case op < 14:
				m.sync(t)
			case op < 16:
				m.crash(t)
			case op < 17:
				m.kill(t)
			case op < 18:
				m.restart(t)
			default:
				m.fault(t)
			}
		}
		m.sync(t)
		m.crash(t)
		m.w.Close()
	})
}

// TestWALOutOfOrderUnsyncedTailIsTruncated: with synced records and then
// unsynced ones written one Append at a time, a power failure that writes
// the unsynced sectors back out of order often leaves a bad record before
// valid ones. Recovery must open, keep every synced record and return a
// prefix of what was appended.
func TestWALOutOfOrderUnsyncedTailIsTruncated(t *testing.T) {
	fs := vfs.NewMemFS()
	rng := rand.New(rand.NewPCG(12, 12))
	opts := WALOptions{FS: fs, SegmentSize: memSegment, BufferSize: 1} // every Append writes
	w := openWAL(t, "/wal", opts)
	var es []wire.Entry
	for i := range 30 {
		es = append(es, entry(wire.Slot(i), rng.IntN(300), rng))
		mustAppend(t, w, es[i:i+1], paxos.HardState{}, false)
		if i == 9 {
			mustSync(t, w)
		}
	}
	w.abandon()
	seg := "/wal/" + segmentName(1)
	holes, lengths := 0, map[int]bool{}
	for seed := range uint64(400) {
		sector := []int{8, 64, 512}[seed%3]
		crashed := fs.CrashOutOfOrder(rand.New(rand.NewPCG(seed, 4)), sector)
		data, err := readFile(crashed, seg, nil)
		if err != nil {
			t.Fatal(err)
		}
		s := scanSegment(data, 1)
		if s.resync >= 0 {
			holes++
		}
		w, err := OpenWAL("/wal", tOpts(WALOptions{FS: crashed, SegmentSize: memSegment}))
		if err != nil {
			t.Fatalf("seed %d, %d-byte sectors: damage only in the unsynced tail refused: %v", seed, sector, err)
		}
		got := load(t, w).Entries
		if len(got) < 10 {
			t.Fatalf("seed %d: %d entries recovered, 10 were synced", seed, len(got))
		}
		sameEntries(t, got, es[:len(got)])
		if s.resync >= 0 && int64(len(s.recs)) != int64(len(got)) {
			t.Fatalf("seed %d: recovered %d entries, the valid prefix has %d", seed, len(got), len(s.recs))
		}
		lengths[len(got)] = true
		w.Close()
	}
	if holes < 100 || len(lengths) < 5 {
		t.Fatalf("%d of 400 crashes left a bad record before a valid one, %d distinct recoveries: the test lost its power",
			holes, len(lengths))
	}
	t.Logf("400 out-of-order crashes: %d left a bad record before a valid one; %d distinct recovered lengths", holes, len(lengths))
}
