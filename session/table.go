package session

import (
	"fmt"
	"iter"
	"math/bits"

	"github.com/vestalabs/vesta/internal/contract"
)

// The range of session IDs a Table issues (New): in log order from
// IssuedBase on. Open refuses an ID of this range that the table does not
// hold, so the table knows the state of each of its IDs (open, evicted, or
// not issued yet) from its own replicated state. A client choosing a random
// 64-bit ID for Open falls in it with probability 2^-24.
const (
	IssuedBase uint64 = 1 << 63
	IssuedSpan uint64 = 1 << 40
)

// IsIssued reports whether id lies in the range New issues from.
func IsIssued(id uint64) bool { return id-IssuedBase < IssuedSpan }

// Defaults of Options.
const (
	DefaultMaxSessions       = 100_000
	DefaultMaxSessionResults = 1 << 16
)

// Options bound a table's memory. Zero values take the defaults. They are
// part of the replicated semantics (they decide evictions and refusals):
// every replica must use the same, and a table refuses a checkpoint written
// with others.
type Options struct {
	// MaxSessions bounds the sessions kept (DefaultMaxSessions); opening
	// one more evicts the least recently used.
	MaxSessions int
	// MaxSessionResults bounds the results one session keeps
	// (DefaultMaxSessionResults): writes at or above its low mark, applied
	// or in flight. A write beyond it is refused (Full).
	MaxSessionResults int
	// ApplyPlain is read by Machine only: see Wrap. False (the default): a
	// command that is not an envelope is refused. True: it is handed to the
	// inner machine as it is, applied each time it is delivered
	// (at-least-once), and its result returned as the inner machine made it.
	ApplyPlain bool
}

// resolved returns o with defaults applied.
func (o Options) resolved() Options {
	if o.MaxSessions <= 0 {
		o.MaxSessions = DefaultMaxSessions
	}
	if o.MaxSessionResults <= 0 {
		o.MaxSessionResults = DefaultMaxSessionResults
	}
	return o
}

// Status is what Begin decided about a write.
type Status uint8

// The statuses.
const (
	// Fresh: not applied before. Apply it, then Record its result. Until
	// then the write is in flight: Begin returns InFlight for a copy.
	Fresh Status = iota
	// Duplicate: applied before; Begin returns the recorded result. Do not
	// apply it again.
	Duplicate
	// InFlight: begun (Fresh) and not yet recorded: a copy of a write in
	// the same batch. Do not apply it; its result is the first copy's.
	InFlight
	// Stale: below the session's low mark: the client saw it completed, or
	// abandoned it. Not applied, and its result is forgotten.
	Stale
	// Expired: the table holds no such session (never opened, or evicted).
	// Not applied; the client must open a new session.
	Expired
	// Full: the session holds Options.MaxSessionResults results already.
	// Not applied; the client may retry once it acknowledged some.
	Full
)

func (s Status) String() string {
	switch s {
	case Fresh:
		return "fresh"
	case Duplicate:
		return "duplicate"
	case InFlight:
		return "in-flight"
	case Stale:
		return "stale"
	case Expired:
		return "expired"
	case Full:
		return "full"
	}
	return fmt.Sprintf("status(%d)", uint8(s))
}

// Table is a deterministic table of client sessions, kept by a state
// machine inside Apply: a write's status (Begin), its result (Record),
// opening sessions (New, Open), least-recently-used eviction in log order,
// and a canonical encoding for checkpoints (AppendBinary, ReadTable). R is
// a write's result; the codec encodes it for checkpoints.
//
// A Table is not safe for concurrent use: the goroutine that applies
// commands calls every method, between applies for the encoding (the
// encoded bytes are a frozen copy, which any goroutine may then write).
// Results passed to Record are kept, and returned by later Begins, as they
// are: the caller must not modify them afterwards, nor the ones Begin
// returns (copy before handing them out where someone may write them).
type Table[R any] struct {
	opts       Options
	codec      Codec[R]
	sessions   map[uint64]*sess[R]
	lru        sess[R]  // sentinel of the list of sessions, most recently used first
	last       *sess[R] // the session of the last Begin (nil once evicted): writes mostly come in runs of one client
	nextIssued uint64   // the ID New issues next; every issued ID below it is open or was evicted
	evicted    uint64
}

// NewTable returns an empty table that encodes results with codec.
func NewTable[R any](opts Options, codec Codec[R]) *Table[R] {
	t := &Table[R]{opts: opts.resolved(), codec: codec, sessions: map[uint64]*sess[R]{}, nextIssued: IssuedBase}
	t.lru.next, t.lru.prev = &t.lru, &t.lru
	return t
}

// Options returns the table's options, defaults applied.
func (t *Table[R]) Options() Options { return t.opts }

// Len returns the number of sessions held.
func (t *Table[R]) Len() int { return len(t.sessions) }

// Evicted returns how many sessions this table evicted (a counter, not part
// of the replicated state: a table read from a checkpoint starts at 0).
func (t *Table[R]) Evicted() uint64 { return t.evicted }

// NextIssued returns the ID New issues next.
func (t *Table[R]) NextIssued() uint64 { return t.nextIssued }

// Has reports whether the table holds session id.
func (t *Table[R]) Has(id uint64) bool { return t.sessions[id] != nil }

// New opens a session under the next issued ID and returns it; false when
// every ID of the issued range was issued (after 2^40 opens).
func (t *Table[R]) New() (uint64, bool) {
	if t.nextIssued-IssuedBase >= IssuedSpan {
		return 0, false
	}
	id := t.nextIssued
	t.nextIssued++
	if contract.Enabled {
		// Nothing opens an unissued ID of the range (Open refuses it).
		contract.Invariantf(t.sessions[id] == nil, "session: issuing %#x, which is open", id)
	}
	t.open(id)
	return id, true
}

// Open opens session id, a client's choice, or touches it (makes it the
// most recently used) if it is open. It refuses (false) ID 0, and an ID of
// the issued range that the table does not hold: one was evicted (id <
// NextIssued()) or never issued. Open cannot tell a first open of a chosen
// ID from a duplicate applied after the session's eviction, which reopens
// it empty, so a late copy of a write the evicted session had applied
// applies again: prefer New.
func (t *Table[R]) Open(id uint64) bool {
	if id == 0 || IsIssued(id) && t.sessions[id] == nil {
		return false
	}
	t.open(id)
	return true
}

func (t *Table[R]) open(id uint64) {
	if ss := t.sessions[id]; ss != nil {
		t.touch(ss)
		return
	}
	if len(t.sessions) >= t.opts.MaxSessions {
		old := t.lru.prev
		t.unlink(old)
		delete(t.sessions, old.id)
		if t.last == old {
			t.last = nil
		}
		t.evicted++
	}
	ss := &sess[R]{id: id, low: 1}
	t.sessions[id] = ss
	t.pushFront(ss)
}

// find returns session id, or nil.
func (t *Table[R]) find(id uint64) *sess[R] {
	if ss := t.last; ss != nil && ss.id == id {
		return ss
	}
	ss := t.sessions[id]
	if ss != nil {
		t.last = ss
	}
	return ss
}

// Begin decides what to do with write seq of session client, which names
// low as its client's low mark: results below it are forgotten (the mark
// only moves up). It touches the session. For a Fresh write, apply it and
// call Record; for a Duplicate, r is the recorded result. client and seq
// are nonzero: a write without a session is not the table's business.
func (t *Table[R]) Begin(client, seq, low uint64) (s Status, r R) {
	if contract.Enabled && (client == 0 || seq == 0) { // the condition first: boxing the arguments allocates
		contract.Requiref(false, "session: Begin(%d, %d): client and seq are nonzero", client, seq)
	}
	ss := t.find(client)
	if ss == nil {
		return Expired, r
	}
	t.touch(ss)
	if low > ss.low {
		ss.advance(low)
	}
	if seq < ss.low {
		return Stale, r
	}
	if e, ok := ss.get(seq); ok {
		if e.st == pending {
			return InFlight, r
		}
		return Duplicate, e.r
	}
	if ss.n >= t.opts.MaxSessionResults {
		return Full, r
	}
	ss.save(seq, entry[R]{st: pending})
	return Fresh, r
}

// Record records r as the result of write seq of session client, which
// Begin found Fresh. If the session was evicted since, or its low mark
// passed seq, r is dropped: no retry can ask for it. The table keeps r:
// the caller must not modify it afterwards.
func (t *Table[R]) Record(client, seq uint64, r R) {
	ss := t.find(client)
	if ss == nil || seq < ss.low {
		return
	}
	ok := ss.set(seq, r)
	if contract.Enabled && !ok {
		contract.Requiref(false, "session: Record(%#x, %d) of a write Begin did not find Fresh", client, seq)
	}
}

func (t *Table[R]) touch(ss *sess[R]) {
	if t.lru.next != ss {
		t.unlink(ss)
		t.pushFront(ss)
	}
}

func (t *Table[R]) unlink(ss *sess[R]) {
	ss.prev.next, ss.next.prev = ss.next, ss.prev
	ss.prev, ss.next = nil, nil
}

func (t *Table[R]) pushFront(ss *sess[R]) {
	ss.prev, ss.next = &t.lru, t.lru.next
	t.lru.next.prev = ss
	t.lru.next = ss
}

// Info describes one session.
type Info struct {
	ID      uint64
	Low     uint64 // its low mark: results below it are forgotten
	Results int    // the results it keeps (writes at or above Low)
}

// Info describes session id, if the table holds it.
func (t *Table[R]) Info(id uint64) (Info, bool) {
	ss := t.sessions[id]
	if ss == nil {
		return Info{}, false
	}
	return Info{ss.id, ss.low, ss.n}, true
}

// All yields every session, most recently used first (the last is evicted
// next). The table must not change during the iteration.
func (t *Table[R]) All() iter.Seq[Info] {
	return func(yield func(Info) bool) {
		for ss := t.lru.next; ss != &t.lru; ss = ss.next {
			if !yield(Info{ss.id, ss.low, ss.n}) {
				return
			}
		}
	}
}

// Result returns the result recorded for write seq of session id, if the
// table keeps one (seq at or above the low mark, applied and recorded). It
// touches nothing.
func (t *Table[R]) Result(id, seq uint64) (r R, ok bool) {
	ss := t.sessions[id]
	if ss == nil || seq < ss.low {
		return r, false
	}
	e, ok := ss.get(seq)
	if !ok || e.st != recorded {
		return r, false
	}
	return e.r, true
}

// Check verifies the table's invariants in full (for tests; it costs a
// pass over everything).
func (t *Table[R]) Check() error {
	n := 0
	for ss := t.lru.next; ss != &t.lru; ss = ss.next {
		if n++; n > len(t.sessions) || t.sessions[ss.id] != ss || ss.next.prev != ss || ss.prev.next != ss {
			return fmt.Errorf("session: LRU list broken at session %#x", ss.id)
		}
		if err := ss.check(); err != nil {
			return err
		}
		if ss.n > t.opts.MaxSessionResults || ss.low == 0 || ss.id == 0 || IsIssued(ss.id) && ss.id >= t.nextIssued {
			return fmt.Errorf("session: session %#x: %d results, low %d, next issued %#x", ss.id, ss.n, ss.low, t.nextIssued)
		}
	}
	if n != len(t.sessions) {
		return fmt.Errorf("session: LRU list of %d sessions, map of %d", n, len(t.sessions))
	}
	if n > t.opts.MaxSessions {
		return fmt.Errorf("session: %d sessions, at most %d", n, t.opts.MaxSessions)
	}
	if t.nextIssued-IssuedBase > IssuedSpan {
		return fmt.Errorf("session: next issued %#x outside the issued range", t.nextIssued)
	}
	if t.last != nil && t.sessions[t.last.id] != t.last {
		return fmt.Errorf("session: last-session cache holds %#x, not held", t.last.id)
	}
	return nil
}

// The states of a result's place.
const (
	empty    = 0
	pending  = 1 // begun, not recorded
	recorded = 2
)

type entry[R any] struct {
	st uint8
	r  R
}

// sess is one client's session: the results of its writes at or above its
// low mark.
//
// A client's unacknowledged sequence numbers form a short window above its
// low mark, so the results live in a ring indexed by sequence number
// (ring[seq & (len(ring)-1)] for seq in [low, low+len(ring))), which a
// write and the advance of the mark update without the insert and delete a
// hash map costs per write. Results beyond the ring (a client far ahead of
// its mark) go to the far map and move into the ring as the mark advances.
type sess[R any] struct {
	id         uint64
	low        uint64 // results below were acknowledged and are forgotten
	n          int    // results kept, all at or above low: ring's and far's
	ring       []entry[R]
	far        map[uint64]entry[R]
	farMin     uint64 // far's least sequence number; far is nil when empty
	prev, next *sess[R]
}

const (
	ringMin = 16
	// ringMax bounds a ring's length. A ring only grows while it would be
	// at least 1/ringSparse full, so it is never much larger than the map
	// holding the same results would be.
	ringMax    = 1 << 14
	ringSparse = 8
)

// get returns the entry kept for seq (>= low), if any.
func (ss *sess[R]) get(seq uint64) (entry[R], bool) {
	if d := seq - ss.low; d < uint64(len(ss.ring)) {
		e := ss.ring[seq&uint64(len(ss.ring)-1)]
		return e, e.st != empty
	}
	if ss.far != nil {
		e, ok := ss.far[seq]
		return e, ok
	}
	return entry[R]{}, false
}

// set records r for seq (>= low), which is pending; false if it is not.
func (ss *sess[R]) set(seq uint64, r R) bool {
	if d := seq - ss.low; d < uint64(len(ss.ring)) {
		e := &ss.ring[seq&uint64(len(ss.ring)-1)]
		if e.st != pending {
			return false
		}
		*e = entry[R]{recorded, r}
		return true
	}
	if e, ok := ss.far[seq]; ok && e.st == pending {
		ss.far[seq] = entry[R]{recorded, r}
		return true
	}
	return false
}

// save keeps e for seq, which is at or above low and has none.
func (ss *sess[R]) save(seq uint64, e entry[R]) {
	d := seq - ss.low
	if d >= uint64(len(ss.ring)) && d < ringMax {
		want := max(ringMin, uint64(1)<<bits.Len64(d)) // the least power of two above d
		if want == ringMin || want <= ringSparse*uint64(ss.n+1) {
			ss.resize(int(want))
		}
	}
	if d < uint64(len(ss.ring)) {
		ss.ring[seq&uint64(len(ss.ring)-1)] = e
	} else {
		if ss.far == nil {
			ss.far, ss.farMin = map[uint64]entry[R]{}, seq
		}
		ss.far[seq] = e
		ss.farMin = min(ss.farMin, seq)
	}
	ss.n++
}

// resize moves the ring's results into a ring of n slots, then the far
// results that fall into it.
func (ss *sess[R]) resize(n int) {
	ring := make([]entry[R], n)
	if old := ss.ring; len(old) > 0 && ss.n > len(ss.far) {
		oldMask := uint64(len(old) - 1)
		for i := range old {
			if old[i].st != empty {
				seq := ss.low + (uint64(i)-ss.low)&oldMask
				ring[seq&uint64(n-1)] = old[i]
			}
		}
	}
	ss.ring = ring
	ss.pullFar()
}

// advance forgets the results below low (> ss.low).
func (ss *sess[R]) advance(low uint64) {
	if d := low - ss.low; d >= uint64(len(ss.ring)) {
		if ss.n > len(ss.far) {
			clear(ss.ring)
		}
		ss.n = len(ss.far)
	} else {
		mask := uint64(len(ss.ring) - 1)
		for q := ss.low; q != low; q++ {
			if e := &ss.ring[q&mask]; e.st != empty {
				*e = entry[R]{}
				ss.n--
			}
		}
	}
	ss.low = low
	ss.pullFar()
}

// pullFar drops the far results below low and moves those now within the
// ring into it.
func (ss *sess[R]) pullFar() {
	if ss.far == nil || ss.farMin >= ss.low && ss.farMin-ss.low >= uint64(len(ss.ring)) {
		return
	}
	mask := uint64(len(ss.ring) - 1)
	least, some := uint64(0), false
	for q, e := range ss.far {
		switch {
		case q < ss.low:
			delete(ss.far, q)
			ss.n--
		case q-ss.low < uint64(len(ss.ring)):
			ss.ring[q&mask] = e
			delete(ss.far, q)
		case !some || q < least:
			least, some = q, true
		}
	}
	ss.farMin = least
	if len(ss.far) == 0 {
		ss.far = nil
	}
}

// each calls f with every kept entry, in increasing sequence order; far
// holds scratch space.
func (ss *sess[R]) each(far []uint64, f func(seq uint64, e entry[R])) []uint64 {
	inRing := ss.n - len(ss.far)
	mask := uint64(len(ss.ring) - 1)
	// The ring's, in sequence order: ring[(low+d) & mask] for d from 0. Stop
	// once all are found: they sit near low.
	for d := uint64(0); inRing > 0 && d < uint64(len(ss.ring)); d++ {
		seq := ss.low + d
		if e := ss.ring[seq&mask]; e.st != empty {
			f(seq, e)
			inRing--
		}
	}
	if len(ss.far) > 0 { // beyond the ring: all above its results
		far = far[:0]
		for q := range ss.far {
			far = append(far, q)
		}
		sortU64(far)
		for _, q := range far {
			f(q, ss.far[q])
		}
	}
	return far
}

// check verifies the session's invariants in full.
func (ss *sess[R]) check() error {
	n := len(ss.far)
	for i := range ss.ring {
		if ss.ring[i].st != empty {
			n++
		}
	}
	if n != ss.n {
		return fmt.Errorf("session %#x: %d results, counted %d", ss.id, n, ss.n)
	}
	if len(ss.ring)&(len(ss.ring)-1) != 0 || len(ss.ring) > ringMax {
		return fmt.Errorf("session %#x: ring of %d", ss.id, len(ss.ring))
	}
	for i := range ss.ring {
		if ss.ring[i].st > recorded {
			return fmt.Errorf("session %#x: ring place %d in state %d", ss.id, i, ss.ring[i].st)
		}
	}
	if ss.far != nil && len(ss.far) == 0 {
		return fmt.Errorf("session %#x: empty far map kept", ss.id)
	}
	for q := range ss.far {
		if q < ss.low || q-ss.low < uint64(len(ss.ring)) || q < ss.farMin {
			return fmt.Errorf("session %#x: far result %d with low %d, ring %d, least %d", ss.id, q, ss.low, len(ss.ring), ss.farMin)
		}
	}
	if _, ok := ss.far[ss.farMin]; ss.far != nil && !ok {
		return fmt.Errorf("session %#x: far map lacks its least %d", ss.id, ss.farMin)
	}
	return nil
}
