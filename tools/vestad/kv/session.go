package kv

import (
	"fmt"
	"math/bits"

	"github.com/vestalabs/vesta/internal/contract"
)

// session is one client's exactly-once state: the results of its writes at
// or above its low mark.
//
// A pipelined client's unacknowledged sequence numbers form a short window
// above its low mark, so the results live in a ring indexed by sequence
// number (ring[seq & (len(ring)-1)] for seq in [low, low+len(ring))),
// which a write and the advance of the mark update without the insert and
// delete a hash map costs per write. Results for sequence numbers beyond the
// ring (a client far ahead of its mark) go to the far map and move into the
// ring as the mark advances.
type session struct {
	id         uint64
	low        uint64 // results below were acknowledged and are forgotten
	n          int    // results kept, all at or above low: ring's and far's
	ring       []byte // len 0 or a power of two; 0: no result, else encodeSaved
	far        map[uint64]saved
	farMin     uint64 // far's least sequence number; far is nil when empty
	prev, next *session
}

const (
	ringMin = 16
	// ringMax bounds a ring's length. A ring only grows while it would be
	// at least 1/ringSparse full, so it is never much larger than the map
	// holding the same results would be.
	ringMax    = 1 << 14
	ringSparse = 8

	savedPresent = 0x80
)

func encodeSaved(r saved) byte {
	if contract.Enabled {
		contract.Requiref(r.code <= 3 && r.flags <= 3, "kv: saved result code %d flags %#x", r.code, r.flags)
	}
	return savedPresent | byte(r.code)<<2 | r.flags
}

func decodeSaved(b byte) saved { return saved{code: Code(b >> 2 & 3), flags: b & 3} }

// result returns the result saved for seq (>= low), if any.
func (ss *session) result(seq uint64) (saved, bool) {
	if d := seq - ss.low; d < uint64(len(ss.ring)) {
		b := ss.ring[seq&uint64(len(ss.ring)-1)]
		return decodeSaved(b), b != 0
	}
	if ss.far != nil {
		r, ok := ss.far[seq]
		return r, ok
	}
	return saved{}, false
}

// save keeps r as seq's result; seq is at or above low and has none.
func (ss *session) save(seq uint64, r saved) {
	d := seq - ss.low
	if d >= uint64(len(ss.ring)) && d < ringMax {
		want := max(ringMin, uint64(1)<<bits.Len64(d)) // the least power of two above d
		if want == ringMin || want <= ringSparse*uint64(ss.n+1) {
			ss.resize(int(want))
		}
	}
	if d < uint64(len(ss.ring)) {
		ss.ring[seq&uint64(len(ss.ring)-1)] = encodeSaved(r)
	} else {
		if ss.far == nil {
			ss.far, ss.farMin = map[uint64]saved{}, seq
		}
		ss.far[seq] = r
		ss.farMin = min(ss.farMin, seq)
	}
	ss.n++
}

// resize moves the ring's results into a ring of n slots, then the far
// results that fall into it.
func (ss *session) resize(n int) {
	ring := make([]byte, n)
	if old := ss.ring; len(old) > 0 && ss.n > len(ss.far) {
		oldMask := uint64(len(old) - 1)
		for i, b := range old {
			if b != 0 {
				seq := ss.low + (uint64(i)-ss.low)&oldMask
				ring[seq&uint64(n-1)] = b
			}
		}
	}
	ss.ring = ring
	ss.pullFar()
}

// advance forgets the results below low (> ss.low).
func (ss *session) advance(low uint64) {
	if d := low - ss.low; d >= uint64(len(ss.ring)) {
		if ss.n > len(ss.far) {
			clear(ss.ring)
		}
		ss.n = len(ss.far)
	} else {
		mask := uint64(len(ss.ring) - 1)
		for q := ss.low; q != low; q++ {
			if ss.ring[q&mask] != 0 {
				ss.ring[q&mask] = 0
				ss.n--
			}
		}
	}
	ss.low = low
	ss.pullFar()
}

// pullFar drops the far results below low and moves those now within the
// ring into it.
func (ss *session) pullFar() {
	if ss.far == nil || ss.farMin >= ss.low && ss.farMin-ss.low >= uint64(len(ss.ring)) {
		return
	}
	mask := uint64(len(ss.ring) - 1)
	least, some := uint64(0), false
	for q, r := range ss.far {
		switch {
		case q < ss.low:
			delete(ss.far, q)
			ss.n--
		case q-ss.low < uint64(len(ss.ring)):
			ss.ring[q&mask] = encodeSaved(r)
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

// check verifies the session's invariants in full (for tests).
func (ss *session) check() error {
	n := len(ss.far)
	for _, b := range ss.ring {
		if b != 0 {
			n++
		}
	}
	if n != ss.n {
		return fmt.Errorf("session %d: %d results, counted %d", ss.id, n, ss.n)
	}
	if len(ss.ring)&(len(ss.ring)-1) != 0 || len(ss.ring) > ringMax {
		return fmt.Errorf("session %d: ring of %d", ss.id, len(ss.ring))
	}
	if ss.far != nil && len(ss.far) == 0 {
		return fmt.Errorf("session %d: empty far map kept", ss.id)
	}
	for q := range ss.far {
		if q < ss.low || q-ss.low < uint64(len(ss.ring)) || q < ss.farMin {
			return fmt.Errorf("session %d: far result %d with low %d, ring %d, least %d", ss.id, q, ss.low, len(ss.ring), ss.farMin)
		}
	}
	if _, ok := ss.far[ss.farMin]; ss.far != nil && !ok {
		return fmt.Errorf("session %d: far map lacks its least %d", ss.id, ss.farMin)
	}
	return nil
}
