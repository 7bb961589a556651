package pmem

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/vestalabs/vesta/engine/paxos"
	"github.com/vestalabs/vesta/engine/wire"
)

// The crash explorer.
//
// A driver runs a random workload (appends of random sizes, syncs, hard-state
// changes, compactions, a full log) against a memory log whose media has a
// recorder, and keeps a model: every record appended, and every commit (the
// state a Sync or Compact makes current), with the trace positions where the
// commit started and where it was acknowledged.
//
// The explorer replays the trace over the x86 persistency model at 8-byte
// word granularity: a stored word is pending until a flush of its line and a
// later fence; a pending word may or may not have reached the media at a
// crash, with any of the values it held since it was last durable (a cache
// line can be written back at any time). At every crash point (after each
// store, and after each fence) it builds crash images from the subsets of the
// pending words: all of them when the combinations are few, many random ones
// otherwise. It runs recovery on each and checks:
//
//   - recovery succeeds (a crash never looks like corruption);
//   - the recovered state (hard state and entries, in order) is exactly the
//     state of one commit that had started by the crash point, and not older
//     than the last acknowledged commit: no acknowledged append lost, nothing
//     unacknowledged or damaged returned as valid;
//   - for a sample of images, the recovered log accepts an append and a sync,
//     and recovers again to the state plus that append.
//
// The model treats each aligned 8-byte word as failure-atomic. The log relies
// on that for exactly one word, the flip word, which it writes with a single
// atomic 8-byte store; every other byte it writes is covered by a checksum or
// not read until a later fence has made it durable, so finer tearing inside a
// word could not change the outcome.

// model is the driver's account of what the log holds.
type model struct {
	records [][]wire.Entry // every record appended, in order
	head    int            // records[:head] have been compacted away (at the latest commit)
	hs      paxos.HardState
	commits []modelCommit
}

type modelCommit struct {
	head, tail int // records[head:tail] are live in this state
	hs         paxos.HardState
	entries    int // number of entries in records[head:tail]
}

func (m *model) commit(head int, hs paxos.HardState) {
	n := 0
	for _, r := range m.records[head:] {
		n += len(r)
	}
	m.head, m.hs = head, hs
	m.commits = append(m.commits, modelCommit{head: head, tail: len(m.records), hs: hs, entries: n})
}

func (m *model) matches(p paxos.Persisted, c modelCommit) bool {
	if p.HardState != c.hs || len(p.Entries) != c.entries {
		return false
	}
	i := 0
	for _, r := range m.records[c.head:c.tail] {
		for _, e := range r {
			g := p.Entries[i]
			if g.Slot != e.Slot || g.Ballot != e.Ballot || !g.Value.Equal(e.Value) {
				return false
			}
			i++
		}
	}
	return true
}

// Marks in the trace: commit i started, commit i acknowledged.
func markStart(i int) int { return 2 * i }
func markAck(i int) int   { return 2*i + 1 }

// workload parameterizes a driver run.
type workload struct {
	name     string
	seed     uint64
	dataSize int
	warmup   int // operations before recording starts (to place head and tail mid-lap)
	ops      int // recorded operations
	maxData  int // largest value data; most values are much smaller
	samples  int // random images per crash point when the combinations are many
	contEach int // check continuation after recovery on every contEach-th image
}

// driver runs a workload and records it.
type driver struct {
	t     testing.TB
	rng   *rand.Rand
	w     workload
	log   *Log
	m     model
	rec   *recorder
	img0  []byte // the media at the start of recording
	slot  wire.Slot
	round uint64
	// pendingHS is the hard state appended since the last commit, if any.
	pendingHS *paxos.HardState
}

func newDriver(t testing.TB, w workload) *driver {
	l, err := openOn(media{buf: newMemoryImage(w.dataSize, testID), method: flushNone}, "explore", DurabilityMemory)
	if err != nil {
		t.Fatal(err)
	}
	d := &driver{t: t, rng: rand.New(rand.NewPCG(w.seed, 0x9e3779b97f4a7c15)), w: w, log: l, round: 1}
	d.m.commit(0, paxos.HardState{})
	for range w.warmup {
		d.step()
	}
	d.img0 = slices.Clone(l.m.buf)
	d.rec = &recorder{}
	l.m.rec = d.rec
	d.m.commits = d.m.commits[len(d.m.commits)-1:] // the state at img0 is commit 0
	for range w.ops {
		d.step()
	}
	d.sync() // end on an acknowledged commit
	return d
}

func (d *driver) mark(v int) {
	if d.rec != nil {
		d.rec.mark(v)
	}
}

func (d *driver) value() wire.Value {
	if d.rng.IntN(10) == 0 {
		return wire.Noop
	}
	n := d.rng.IntN(24)
	if d.rng.IntN(8) == 0 {
		n = d.rng.IntN(d.w.maxData + 1)
	}
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(d.rng.Uint32())
	}
	return wire.Value{Kind: wire.ValueBatch, Data: b}
}

func (d *driver) step() {
	switch r := d.rng.IntN(100); {
	case r < 55:
		d.appendEntries()
	case r < 62:
		d.round++
		hs := d.m.hs
		hs.Promised = wire.Ballot{Round: d.round, Replica: wire.ReplicaID(1 + d.rng.IntN(5))}
		hs.Commit = d.slot / 2
		if err := d.log.Append(nil, hs, true); err != nil {
			d.t.Fatal(err)
		}
		d.pendingHS = &hs
	case r < 95:
		d.sync()
	default:
		d.compact(d.slot - wire.Slot(d.rng.IntN(int(d.slot)+1)/2))
	}
}

func (d *driver) appendEntries() {
	k := 1 + d.rng.IntN(3)
	entries := make([]wire.Entry, k)
	for i := range entries {
		s := d.slot
		if d.slot > 0 && d.rng.IntN(6) == 0 {
			s = d.slot - 1 - wire.Slot(d.rng.IntN(min(int(d.slot), 8))) // re-accept an earlier slot
		} else {
			d.slot++
		}
		b := wire.Ballot{Round: d.round, Replica: wire.ReplicaID(1 + d.rng.IntN(5))}
		if d.rng.IntN(5) == 0 {
			b = wire.BallotChosen
		}
		entries[i] = wire.Entry{Slot: s, Ballot: b, Value: d.value()}
	}
	for EncodedSize(entries) > d.log.MaxRecord() {
		entries = entries[:len(entries)-1]
		k--
	}
	var hs paxos.HardState
	saveHS := d.rng.IntN(4) == 0
	if saveHS {
		hs = paxos.HardState{Promised: wire.Ballot{Round: d.round, Replica: 1}, Commit: d.slot / 2}
	}
	for tries := 0; ; tries++ {
		err := d.log.Append(entries, hs, saveHS)
		if err == nil {
			break
		}
		if !isFull(err) || tries > 0 {
			d.t.Fatalf("append: %v", err)
		}
		d.compact(d.slot + 1) // drop everything: the snapshot covers all
	}
	// The model keeps its own copy, and the driver scribbles over the
	// caller's buffers: Append must have copied them.
	own := make([]wire.Entry, k)
	for i, e := range entries {
		e.Value.Data = slices.Clone(e.Value.Data)
		own[i] = e
		for j := range entries[i].Value.Data {
			entries[i].Value.Data[j] ^= 0xff
		}
	}
	d.m.records = append(d.m.records, own)
	if saveHS {
		d.pendingHS = &hs
	}
}

func (d *driver) sync() {
	i := len(d.m.commits)
	d.mark(markStart(i))
	if err := d.log.Sync(); err != nil {
		d.t.Fatal(err)
	}
	d.mark(markAck(i))
	d.commitModel(d.m.head)
}

func (d *driver) compact(below wire.Slot) {
	head := d.m.head
	for head < len(d.m.records) && !slices.ContainsFunc(d.m.records[head], func(e wire.Entry) bool { return e.Slot >= below }) {
		head++
	}
	i := len(d.m.commits)
	d.mark(markStart(i))
	if err := d.log.Compact(below); err != nil {
		d.t.Fatal(err)
	}
	d.mark(markAck(i))
	d.commitModel(head)
}

func (d *driver) commitModel(head int) {
	hs := d.m.hs
	if d.pendingHS != nil {
		hs = *d.pendingHS
		d.pendingHS = nil
	}
	d.m.commit(head, hs)
}

// explorer replays a driver's trace into crash images.
type explorer struct {
	t   testing.TB
	d   *driver
	rng *rand.Rand

	img  []byte          // durable contents at the current point of the replay
	pend map[int]*wstate // word index -> pending versions

	acked, started int // commit indices

	res exploreResult
}

type wstate struct {
	vers    []uint64 // values stored since the word was last durable, oldest first
	flushed int      // vers[:flushed] were covered by a flush after their store
}

type exploreResult struct {
	points       int // crash points visited
	states       int // crash images recovered and checked
	exhaustive   int // crash points whose images were all enumerated
	maxPending   int // most pending words at one point
	continuation int // images on which append-after-recovery was checked
	lost         int // violations: an acknowledged commit missing
	garbage      int // violations: a state no commit produced
	recoverErr   int // violations: recovery failed on a crash image
	firstErr     string
}

func (r *exploreResult) add(o exploreResult) {
	r.points += o.points
	r.states += o.states
	r.exhaustive += o.exhaustive
	r.maxPending = max(r.maxPending, o.maxPending)
	r.continuation += o.continuation
	r.lost += o.lost
	r.garbage += o.garbage
	r.recoverErr += o.recoverErr
	if r.firstErr == "" {
		r.firstErr = o.firstErr
	}
}

func (r exploreResult) violations() int { return r.lost + r.garbage + r.recoverErr }

func (r exploreResult) String() string {
	return fmt.Sprintf("%d crash states at %d crash points (%d enumerated exhaustively, up to %d pending words), %d continuations; violations: %d lost acknowledged, %d garbage, %d recovery failures",
		r.states, r.points, r.exhaustive, r.maxPending, r.continuation, r.lost, r.garbage, r.recoverErr)
}

const exhaustiveLimit = 1024 // enumerate every image when there are at most this many

func explore(t testing.TB, d *driver) exploreResult {
	x := &explorer{t: t, d: d, rng: rand.New(rand.NewPCG(d.w.seed, 7)), img: slices.Clone(d.img0), pend: map[int]*wstate{}}
	evs := d.rec.events
	for k, e := range evs {
		switch e.kind {
		case evStore:
			data := d.rec.storeData(e)
			for i := 0; i < e.n; i += 8 {
				w := (e.off + i) / 8
				ws := x.pend[w]
				if ws == nil {
					ws = &wstate{}
					x.pend[w] = ws
				}
				ws.vers = append(ws.vers, binary.LittleEndian.Uint64(data[i:]))
			}
			x.crashPoint(x.acked)
		case evFlush:
			lo := e.off &^ (lineSize - 1)
			hi := (e.off + e.n + lineSize - 1) &^ (lineSize - 1)
			for w := lo / 8; w < hi/8; w++ {
				if ws := x.pend[w]; ws != nil {
					ws.flushed = len(ws.vers)
				}
			}
		case evFence:
			for w, ws := range x.pend {
				if ws.flushed == 0 {
					continue
				}
				binary.LittleEndian.PutUint64(x.img[w*8:], ws.vers[ws.flushed-1])
				ws.vers = ws.vers[ws.flushed:]
				ws.flushed = 0
				if len(ws.vers) == 0 {
					delete(x.pend, w)
				}
			}
			// The strictest check for these images: count the acknowledgments
			// that follow before anything else reaches the media.
			// (A commit with nothing to do leaves no events: it starts and is
			// acknowledged here too.)
			acked, started := x.acked, x.started
			for _, n := range evs[k+1:] {
				if n.kind == evStore || n.kind == evFence {
					break
				}
				if n.kind == evMark && n.off%2 == 1 {
					acked = n.off / 2
				} else if n.kind == evMark {
					started = n.off / 2
				}
			}
			saved := x.started
			x.started = started
			x.crashPoint(acked)
			x.started = saved
		case evMark:
			if e.off%2 == 0 {
				x.started = e.off / 2
			} else {
				x.acked = e.off / 2
			}
		}
	}
	if x.acked != len(d.m.commits)-1 {
		t.Fatalf("trace ends with commit %d acknowledged of %d", x.acked, len(d.m.commits)-1)
	}
	return x.res
}

// crashPoint checks the crash images possible now.
func (x *explorer) crashPoint(acked int) {
	type choice struct {
		w     int
		cands []uint64 // values other than the durable one
	}
	var ch []choice
	combos := 1
	for w, ws := range x.pend {
		durable := binary.LittleEndian.Uint64(x.img[w*8:])
		var c []uint64
		for _, v := range ws.vers {
			if v != durable && !slices.Contains(c, v) {
				c = append(c, v)
			}
		}
		if len(c) > 0 {
			ch = append(ch, choice{w, c})
			if combos <= exhaustiveLimit {
				combos *= 1 + len(c)
			}
		}
	}
	slices.SortFunc(ch, func(a, b choice) int { return a.w - b.w }) // map order is random; keep runs repeatable
	x.res.points++
	x.res.maxPending = max(x.res.maxPending, len(ch))

	saved := make([]uint64, len(ch))
	for i, c := range ch {
		saved[i] = binary.LittleEndian.Uint64(x.img[c.w*8:])
	}
	apply := func(pick func(i int, c choice) int) {
		for i, c := range ch {
			if j := pick(i, c); j > 0 {
				binary.LittleEndian.PutUint64(x.img[c.w*8:], c.cands[j-1])
			}
		}
		x.check(acked)
		for i, c := range ch {
			binary.LittleEndian.PutUint64(x.img[c.w*8:], saved[i])
		}
	}
	if combos <= exhaustiveLimit {
		x.res.exhaustive++
		for n := range combos {
			apply(func(_ int, c choice) int { // mixed radix: digit i picks durable (0) or a candidate
				j := n % (1 + len(c.cands))
				n /= 1 + len(c.cands)
				return j
			})
		}
		return
	}
	apply(func(int, choice) int { return 0 })                // nothing pending reached the media
	apply(func(_ int, c choice) int { return len(c.cands) }) // everything did, latest values
	for range x.d.w.samples {
		p := x.rng.Float64()
		apply(func(_ int, c choice) int {
			if x.rng.Float64() >= p {
				return 0
			}
			if x.rng.IntN(4) == 0 {
				return 1 + x.rng.IntN(len(c.cands))
			}
			return len(c.cands)
		})
	}
}

// check recovers the current image and compares it with the model.
func (x *explorer) check(acked int) {
	x.res.states++
	l, err := openOn(media{buf: x.img, method: flushNone}, "crash-image", DurabilityMemory)
	if err != nil {
		x.violation(&x.res.recoverErr, "recovery failed: %v", err)
		return
	}
	p, _ := l.Load()
	m := &x.d.m
	match := -1
	for j := x.started; j >= acked; j-- {
		if m.matches(p, m.commits[j]) {
			match = j
			break
		}
	}
	if match < 0 {
		for j := acked - 1; j >= 0; j-- {
			if m.matches(p, m.commits[j]) {
				x.violation(&x.res.lost, "recovered commit %d, but commit %d was acknowledged", j, acked)
				return
			}
		}
		x.violation(&x.res.garbage, "recovered a state no commit in [%d,%d] made: hs=%+v, %d entries", acked, x.started, p.HardState, len(p.Entries))
		return
	}
	if x.d.w.contEach > 0 && x.res.states%x.d.w.contEach == 0 {
		x.continuation(p)
	}
}

// continuation appends to a log recovered from a copy of the image, syncs,
// and recovers again: the result must be the recovered state plus the append.
func (x *explorer) continuation(p paxos.Persisted) {
	x.res.continuation++
	buf := slices.Clone(x.img)
	l, err := openOn(media{buf: buf, method: flushNone}, "continued", DurabilityMemory)
	if err != nil {
		x.violation(&x.res.recoverErr, "recovery of a copy failed: %v", err)
		return
	}
	e := wire.Entry{Slot: 1 << 40, Ballot: wire.Ballot{Round: 99, Replica: 9}, Value: wire.Value{Kind: wire.ValueBatch, Data: []byte("after-crash")}}
	hs := paxos.HardState{Promised: e.Ballot, Commit: 7}
	want := p.Entries
	if err := l.Append([]wire.Entry{e}, hs, true); isFull(err) {
		if err := l.Compact(e.Slot); err != nil {
			x.violation(&x.res.recoverErr, "compact after recovery: %v", err)
			return
		}
		want = nil
		err = l.Append([]wire.Entry{e}, hs, true)
		if err != nil {
			x.violation(&x.res.recoverErr, "append after recovery and compaction: %v", err)
			return
		}
	} else if err != nil {
		x.violation(&x.res.recoverErr, "append after recovery: %v", err)
		return
	}
	if err := l.Sync(); err != nil {
		x.violation(&x.res.recoverErr, "sync after recovery: %v", err)
		return
	}
	l2, err := openOn(media{buf: buf, method: flushNone}, "continued", DurabilityMemory)
	if err != nil {
		x.violation(&x.res.recoverErr, "second recovery failed: %v", err)
		return
	}
	q, _ := l2.Load()
	want = append(slices.Clone(want), e)
	if q.HardState != hs || !entriesEqual(q.Entries, want) {
		x.violation(&x.res.garbage, "after recovery, append and sync, recovered %d entries (hs %+v), want %d", len(q.Entries), q.HardState, len(want))
	}
}

func (x *explorer) violation(counter *int, format string, args ...any) {
	*counter++
	if x.res.firstErr == "" {
		x.res.firstErr = fmt.Sprintf("seed %d, state %d: ", x.d.w.seed, x.res.states) + fmt.Sprintf(format, args...)
	}
}

func isFull(err error) bool { return errors.Is(err, ErrFull) }

func entriesEqual(a, b []wire.Entry) bool {
	return slices.EqualFunc(a, b, func(x, y wire.Entry) bool {
		return x.Slot == y.Slot && x.Ballot == y.Ballot && x.Value.Equal(y.Value)
	})
}
