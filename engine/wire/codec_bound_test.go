package wire

import (
	"encoding/binary"
	"math"
	"runtime"
	"testing"
)

// The decoder's cost is bounded by its input: a peer cannot make it loop or
// allocate beyond what the bytes it sent pay for. Counts are checked against
// the payload before anything is allocated (CountError), every loop runs at
// most once per entry or range whose fixed part is in the payload, and the
// only allocations are the Entries and Ranges slices. The worst ratio of
// memory to input is a frame of empty entries: 25 wire bytes each become a
// 56-byte Entry (2.24x). These tests and benchmarks pin that down.

// entrySize is the in-memory size of an Entry, the worst case's multiplier.
const entrySize = 56

// worstFrames are crafted frames of about size bytes that each push one
// dimension of the decoder to its limit.
func worstFrames(c Codec, size int) map[string][]byte {
	fixed := func(nEntries, nRanges uint32, extra int) []byte {
		p := make([]byte, msgFixedSize+extra)
		binary.LittleEndian.PutUint32(p[0:], 1)
		binary.LittleEndian.PutUint32(p[4:], 2)
		binary.LittleEndian.PutUint32(p[36:], nEntries)
		binary.LittleEndian.PutUint32(p[40:], nRanges)
		return p
	}
	room := size - HeaderSize - msgFixedSize
	nE := room / entryFixed
	nR := room / rangeSize
	return map[string][]byte{
		// As many empty entries as fit: the most Entry structs per byte.
		"empty_entries": frameWith(c, uint8(MsgPromise), fixed(uint32(nE), 0, nE*entryFixed)),
		// As many ranges as fit: the most loop iterations per byte.
		"ranges": frameWith(c, uint8(MsgAccepted), fixed(0, uint32(nR), nR*rangeSize)),
		// One entry holding everything: CRC only, no per-entry work.
		"one_value": func() []byte {
			p := fixed(1, 0, room)
			binary.LittleEndian.PutUint32(p[msgFixedSize+21:], uint32(room-entryFixed))
			return frameWith(c, uint8(MsgAccept), p)
		}(),
		// Counts claiming 4 G entries and ranges in a payload that holds
		// none: refused before any allocation.
		"count_claim": frameWith(c, uint8(MsgAccept), fixed(math.MaxUint32, math.MaxUint32, room)),
		// Entries whose last one claims data past the payload: all are
		// parsed, then the frame is refused.
		"entries_then_truncated": func() []byte {
			p := fixed(uint32(nE), 0, nE*entryFixed)
			binary.LittleEndian.PutUint32(p[msgFixedSize+(nE-1)*entryFixed+21:], 1)
			return frameWith(c, uint8(MsgPromise), p)
		}(),
	}
}

// bytesAllocated returns how many bytes fn allocates, on average over runs.
func bytesAllocated(runs int, fn func()) float64 {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	fn() // warm up
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range runs {
		fn()
	}
	runtime.ReadMemStats(&after)
	return float64(after.TotalAlloc-before.TotalAlloc) / float64(runs)
}

// TestDecodeAllocationIsBoundedByInput: for every crafted worst case, at the
// default 16 MiB frame limit, Decode makes at most two allocations (Entries
// and Ranges) plus an error's few, and allocates at most entrySize per
// entryFixed input bytes (plus a little for an error), never more.
func TestDecodeAllocationIsBoundedByInput(t *testing.T) {
	c := Codec{ClusterID: testCluster}
	for name, f := range worstFrames(c, 1<<20) {
		t.Run(name, func(t *testing.T) {
			decode := func() { c.Decode(f) }
			// The Entries and Ranges slices, and an error's few: a handful,
			// whatever the frame's size. The bound has room for the odd
			// allocation the race detector's runtime adds (it made 6 of 5
			// now and then).
			if allocs := testing.AllocsPerRun(20, decode); allocs > 8 {
				t.Errorf("Decode of a %d-byte frame made %.0f allocations, want at most 8", len(f), allocs)
			}
			limit := float64(len(f))*entrySize/entryFixed + 16<<10 // slack: size classes round up
			if got := bytesAllocated(5, decode); got > limit {
				t.Errorf("Decode of a %d-byte frame allocated %.0f bytes, more than the bound %.0f (%.2fx the input)",
					len(f), got, limit, got/float64(len(f)))
			}
		})
	}
	// A claim of more than the payload holds allocates nothing for it.
	f := worstFrames(c, 1<<10)["count_claim"]
	if got := bytesAllocated(10, func() { c.Decode(f) }); got > 256 {
		t.Errorf("a count claim the payload cannot hold allocated %.0f bytes", got)
	}
}

// TestDecoderSlabIsBoundedByInput: over a stream, a Decoder's slabs hold at
// most twice the entries decoded plus one slab, even for the message sizes
// that waste the most of each slab.
func TestDecoderSlabIsBoundedByInput(t *testing.T) {
	c := Codec{ClusterID: testCluster}
	frame := func(entries int) []byte {
		return worstFrames(c, HeaderSize+msgFixedSize+entries*entryFixed)["empty_entries"]
	}
	for name, pattern := range map[string][]int{
		"just_over_half":  {slabEntries/2 + 1},       // one per slab, the rest given up
		"small_then_slab": {1, slabEntries},          // a slab-sized message after a small one
		"mixed":           {3, slabEntries - 2, 200}, // each overflows the last one's slab
	} {
		t.Run(name, func(t *testing.T) {
			d := Decoder{Codec: c}
			frames := make([][]byte, len(pattern))
			entries := 0
			for i, n := range pattern {
				frames[i] = frame(n)
				entries += n
			}
			const rounds = 50
			got := bytesAllocated(rounds, func() {
				for _, f := range frames {
					if _, _, err := d.Decode(f); err != nil {
						t.Fatal(err)
					}
				}
			})
			// Size classes (and the malloc header of pointerful objects)
			// round an allocation up by at most 1/8.
			limit := (float64(2*entries*entrySize)+float64(slabEntries*entrySize)/rounds)*9/8 + 1024
			if got > limit {
				t.Errorf("a Decoder allocated %.0f bytes per round of %d entries, want at most %.0f", got, entries, limit)
			}
		})
	}
}

// BenchmarkDecodeWorst times the crafted worst cases at the default frame
// limit; MB/s is per input byte, so the cases compare per byte.
func BenchmarkDecodeWorst(b *testing.B) {
	c := Codec{ClusterID: testCluster}
	for name, f := range worstFrames(c, DefaultMaxFrameSize) {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(f)))
			b.ReportAllocs()
			for b.Loop() {
				c.Decode(f)
			}
		})
	}
}
