package pmem

import (
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
)

type flipResult struct {
	trials   int // corrupted images recovered
	detected int // recovery refused them with a CorruptError
	harmless int // recovery returned exactly the committed state (damage outside live data)
	garbage  int // recovery returned anything else: must stay zero
}

func (r *flipResult) add(o flipResult) {
	r.trials += o.trials
	r.detected += o.detected
	r.harmless += o.harmless
	r.garbage += o.garbage
}

// liveSpan is a structure recovery reads and checks: corrupting any of its
// bytes must be detected, reported at its start.
type liveSpan struct {
	lo, hi int
	what   string
}

// liveSpans lists the superblock, the flip word, the identity block, the
// current metadata slot, and every record header and data record between head and tail (pad bodies
// and skipped lap ends are never read).
func liveSpans(l *Log) []liveSpan {
	r := &l.r
	spans := []liveSpan{
		{superOff, superOff + metaSize, "superblock"},
		{flipOff, flipOff + 8, "flip word"},
		{identOff, identOff + identSize, "identity"},
		{slotOff(r.seq), slotOff(r.seq) + metaSize, "metadata slot"},
	}
	for pos := r.head; pos < r.tail; {
		left := r.lapLeft(pos)
		if left < recHdrSize {
			pos += left
			continue
		}
		p := r.phys(pos)
		n := uint64(binary.LittleEndian.Uint32(r.m.buf[p:]))
		if binary.LittleEndian.Uint16(r.m.buf[p+4:]) == recPad {
			spans = append(spans, liveSpan{p, p + recHdrSize, "pad header"})
			pos += left
			continue
		}
		size := recHdrSize + align8(n)
		spans = append(spans, liveSpan{p, p + int(size), "record"})
		pos += size
	}
	return spans
}

// flipFixture is a synced log with wrapped, compacted records (so pads and
// a mid-lap head are present) and the state recovery must return.
func flipFixture(t *testing.T, seed uint64, dataSize, maxData int) (img []byte, want modelCommit, m *model, spans []liveSpan) {
	d := newDriver(t, workload{name: "flips", seed: seed, dataSize: dataSize, warmup: 200, maxData: maxData})
	d.sync()
	want = d.m.commits[len(d.m.commits)-1]
	l, err := openOn(media{buf: slices.Clone(d.log.m.buf), method: flushNone}, "flips", DurabilityMemory)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := l.Load()
	if !d.m.matches(p, want) {
		t.Fatal("fixture does not recover to its last commit")
	}
	return l.m.buf, want, &d.m, liveSpans(l)
}

// recoverFlipped recovers img and classifies the outcome; wantOff >= 0 means
// the damage was in live data starting there, which must be detected there.
func recoverFlipped(t *testing.T, img []byte, m *model, want modelCommit, wantOff int, res *flipResult, what string) {
	t.Helper()
	res.trials++
	l, err := openOn(media{buf: img, method: flushNone}, "flipped", DurabilityMemory)
	if err != nil {
		var ce *CorruptError
		if !errors.As(err, &ce) {
			t.Fatalf("%s: recovery failed with %v, not a CorruptError", what, err)
		}
		if wantOff >= 0 && ce.Offset != int64(wantOff) {
			t.Fatalf("%s: detected at offset %d, want %d (%v)", what, ce.Offset, wantOff, err)
		}
		res.detected++
		return
	}
	p, _ := l.Load()
	if wantOff >= 0 {
		res.garbage++
		t.Errorf("%s: damage in live data at %d went undetected", what, wantOff)
		return
	}
	if !m.matches(p, want) {
		res.garbage++
		t.Errorf("%s: recovery returned a different state (hs %+v, %d entries)", what, p.HardState, len(p.Entries))
		return
	}
	res.harmless++
}

// TestBitFlipsDetected flips every bit of every live structure (metadata and
// records) one at a time, pairs of bits inside records, random words of
// garbage, and random bits anywhere in the file: damage to live data is
// always detected and reported at the damaged structure's offset; damage
// elsewhere leaves the recovered state exactly as committed. Recovery never
// returns garbage.
func TestBitFlipsDetected(t *testing.T) {
	var total flipResult
	for _, fx := range []struct {
		seed              uint64
		dataSize, maxData int
	}{{1, 4096, 300}, {2, 4096, 40}, {3, 8192, 1200}} {
		img, want, m, spans := flipFixture(t, fx.seed, fx.dataSize, fx.maxData)
		rng := rand.New(rand.NewPCG(fx.seed, 99))
		var res flipResult
		kinds := map[string]int{}
		live := 0
		// Every single bit of live data.
		for _, s := range spans {
			kinds[s.what]++
			live += s.hi - s.lo
			for b := s.lo; b < s.hi; b++ {
				for bit := range 8 {
					img[b] ^= 1 << bit
					recoverFlipped(t, img, m, want, s.lo, &res, s.what)
					img[b] ^= 1 << bit
				}
			}
		}
		// Two bits in one record; a random word of garbage.
		for range 2000 {
			s := spans[rng.IntN(len(spans))]
			b1, b2 := s.lo+rng.IntN(s.hi-s.lo), s.lo+rng.IntN(s.hi-s.lo)
			m1, m2 := byte(1)<<rng.IntN(8), byte(1)<<rng.IntN(8)
			if b1 == b2 && m1 == m2 {
				continue
			}
			img[b1] ^= m1
			img[b2] ^= m2
			recoverFlipped(t, img, m, want, s.lo, &res, s.what+" (two bits)")
			img[b1] ^= m1
			img[b2] ^= m2

			w := (s.lo + rng.IntN(s.hi-s.lo)) &^ 7
			old := binary.LittleEndian.Uint64(img[w:])
			v := rng.Uint64()
			if v == old {
				continue
			}
			binary.LittleEndian.PutUint64(img[w:], v)
			recoverFlipped(t, img, m, want, s.lo, &res, s.what+" (garbage word)")
			binary.LittleEndian.PutUint64(img[w:], old)
		}
		// Random bits anywhere: detected, or harmless when outside live data.
		for range 4000 {
			b, bit := rng.IntN(len(img)), byte(1)<<rng.IntN(8)
			off := -1
			for _, s := range spans {
				if b >= s.lo && b < s.hi {
					off = s.lo
				}
			}
			img[b] ^= bit
			recoverFlipped(t, img, m, want, off, &res, "random bit")
			img[b] ^= bit
		}
		t.Logf("fixture %d (%d B data area, %d live bytes in %v): %d corrupted images, %d detected, %d harmless, %d garbage",
			fx.seed, fx.dataSize, live, kinds, res.trials, res.detected, res.harmless, res.garbage)
		if kinds["record"] < 3 || kinds["pad header"] < 1 && fx.maxData > 100 {
			t.Errorf("fixture %d has too little to corrupt: %v", fx.seed, kinds)
		}
		total.add(res)
	}
	t.Logf("bit flips total: %d corrupted images, %d detected, %d harmless, %d garbage", total.trials, total.detected, total.harmless, total.garbage)
	suite.Lock()
	suite.flips.add(total)
	suite.Unlock()
}
