package kv

import (
	"encoding/binary"
	"fmt"
	"hash/maphash"
	"math"

	"github.com/vestalabs/vesta/internal/contract"
)

// table maps byte-string keys to byte-string values. It replaces a Go
// map[string]string, whose every put allocated a key and a value string,
// whose lookups chased a string header to the key's own allocation (one
// more cache miss), and whose strings the collector scanned.
//
// Layout: an open-addressing slot array (power-of-two length, linear probing,
// backward-shift deletion, so there are no tombstones) whose slots hold a key's
// full 64-bit hash and the offset of its entry in one byte arena. The full
// hash makes a key comparison (a miss into the arena) all but certain to
// match, gives deletion each entry's home slot and lets a rebuild place
// entries without rehashing. An entry is
//
//	klen u32 | vlen u32 | vcap u32 | key (klen bytes) | value (vcap bytes, the first vlen used)
//
// Neither slice holds pointers, so the collector never scans them, and a put
// to an existing key whose value fits its entry writes in place and allocates
// nothing. A value that outgrows its entry moves to the arena's end; the bytes
// the arena holds beyond the live entries' headers, keys and values (dead
// entries and unused value capacity) are reclaimed by a rebuild once they
// exceed half the arena.
//
// Hashes come from hash/maphash with a seed chosen per table, so hash order
// differs between replicas and runs: nothing observable may depend on it (the
// store never iterates the table for results; only rebuilds do, and they
// preserve contents, not order).
//
// A table is not safe for concurrent use.
type table struct {
	slots []slot // len is a power of two; ref 0 marks an empty slot
	mask  uint64 // len(slots) - 1
	arena []byte // arenaBase reserved bytes, then entries back to back
	n     int    // keys stored
	live  int    // arena bytes in live entries' headers, keys and values
	seed  maphash.Seed
}

type slot struct {
	hash uint64 // the key's hash
	ref  uint64 // the entry's offset in the arena; 0: empty slot
}

const (
	entryHeader = 12
	// arenaBase reserves the arena's first bytes so that no entry sits at
	// offset 0, which marks an empty slot.
	arenaBase = 8
	minSlots  = 16
	// maxLen bounds a key's and a value's length, which the entry header
	// holds in 32 bits. Commands arrive in frames far smaller.
	maxLen = math.MaxUint32
	// minCompact: arenas smaller than this are not worth rebuilding for
	// their waste.
	minCompact = 4 << 10
)

func newTable() *table {
	t := &table{seed: maphash.MakeSeed()}
	t.slots = make([]slot, minSlots)
	t.mask = minSlots - 1
	t.arena = make([]byte, arenaBase, 1<<10)
	return t
}

// Len returns the number of keys.
func (t *table) Len() int { return t.n }

// hash returns key's hash, to pass to the other methods.
func (t *table) hash(key []byte) uint64 { return maphash.Bytes(t.seed, key) }

// touchSlot and touchEntry read, for a key with hash h, its home slot and
// the first two cache lines of the entry that slot points to (an entry of a
// 7-byte key and a 64-byte value, 83 bytes, spans two or three), and return
// what they read. They change nothing: calling touchSlot for a group of
// keys, then touchEntry, before working on them lets their cache misses
// overlap instead of being taken one after another.
func (t *table) touchSlot(h uint64) uint64 { return t.slots[h&t.mask].ref }

func (t *table) touchEntry(h uint64) uint64 {
	if ref := t.slots[h&t.mask].ref; ref != 0 {
		v := uint64(t.arena[ref])
		if far := ref + 64; far < uint64(len(t.arena)) {
			v |= uint64(t.arena[far])
		}
		return v
	}
	return 0
}

// find returns the slot index of key (hash h) and whether it is there; when
// it is not, the index is the empty slot that ends its probe sequence.
func (t *table) find(key []byte, h uint64) (uint64, bool) {
	mask := t.mask
	for i := h & mask; ; i = (i + 1) & mask {
		sl := &t.slots[i]
		if sl.ref == 0 {
			return i, false
		}
		if sl.hash == h && t.keyIs(sl.ref, key) {
			return i, true
		}
	}
}

func (t *table) keyIs(off uint64, key []byte) bool {
	e := t.arena[off:]
	klen := uint64(binary.LittleEndian.Uint32(e))
	return klen == uint64(len(key)) && string(e[entryHeader:entryHeader+klen]) == string(key)
}

// Get returns key's value (aliasing the table: valid until its next change)
// and whether key is present.
func (t *table) Get(key []byte, h uint64) ([]byte, bool) {
	i, ok := t.find(key, h)
	if !ok {
		return nil, false
	}
	return t.value(t.slots[i].ref), true
}

func (t *table) value(off uint64) []byte {
	e := t.arena[off:]
	klen := uint64(binary.LittleEndian.Uint32(e))
	vlen := uint64(binary.LittleEndian.Uint32(e[4:]))
	start := entryHeader + klen
	return e[start : start+vlen : start+vlen]
}

// Put sets key's value to a copy of val.
func (t *table) Put(key, val []byte, h uint64) {
	if uint64(len(key)) > maxLen || uint64(len(val)) > maxLen {
		panic(fmt.Sprintf("kv: key of %d bytes or value of %d bytes: the store keeps at most %d", len(key), len(val), uint64(maxLen)))
	}
	i, ok := t.find(key, h)
	if ok {
		off := t.slots[i].ref
		e := t.arena[off:]
		klen := uint64(binary.LittleEndian.Uint32(e))
		vlen := int(binary.LittleEndian.Uint32(e[4:]))
		vcap := uint64(binary.LittleEndian.Uint32(e[8:]))
		t.live += len(val) - vlen
		if uint64(len(val)) <= vcap {
			binary.LittleEndian.PutUint32(e[4:], uint32(len(val)))
			copy(e[entryHeader+klen:], val)
			// A shrinking value leaves unused capacity: waste to reclaim.
			t.maybeCompact()
			return
		}
		t.slots[i].ref = t.appendEntry(key, val)
		t.maybeCompact()
		return
	}
	if (t.n+1)*4 > len(t.slots)*3 {
		t.rebuild(len(t.slots) * 2)
		i, _ = t.find(key, h)
	}
	t.slots[i] = slot{hash: h, ref: t.appendEntry(key, val)}
	t.n++
	t.live += entryHeader + len(key) + len(val)
	t.checkCounts()
}

// appendEntry appends an entry holding key and val, with no spare capacity,
// and returns its offset.
func (t *table) appendEntry(key, val []byte) uint64 {
	off := uint64(len(t.arena))
	var hdr [entryHeader]byte
	binary.LittleEndian.PutUint32(hdr[0:], uint32(len(key)))
	binary.LittleEndian.PutUint32(hdr[4:], uint32(len(val)))
	binary.LittleEndian.PutUint32(hdr[8:], uint32(len(val)))
	t.arena = append(t.arena, hdr[:]...)
	t.arena = append(t.arena, key...)
	t.arena = append(t.arena, val...)
	return off
}

// Delete removes key and reports whether it was present.
func (t *table) Delete(key []byte, h uint64) bool {
	i, ok := t.find(key, h)
	if !ok {
		return false
	}
	e := t.arena[t.slots[i].ref:]
	t.live -= entryHeader + int(binary.LittleEndian.Uint32(e)) + int(binary.LittleEndian.Uint32(e[4:]))
	t.n--
	// Backward-shift deletion: pull later entries of the probe run into
	// the hole when that keeps them at or after their home slot, so every
	// key stays reachable from its home without tombstones.
	mask := t.mask
	for j := (i + 1) & mask; t.slots[j].ref != 0; j = (j + 1) & mask {
		home := t.slots[j].hash & mask
		if (j-home)&mask >= (j-i)&mask {
			t.slots[i] = t.slots[j]
			i = j
		}
	}
	t.slots[i] = slot{}
	t.maybeCompact()
	return true
}

// checkCounts states, in contract builds, what every change keeps: the counts
// within what the arrays can hold.
func (t *table) checkCounts() {
	// The message is built (and allocates) only on failure.
	if contract.Enabled && !(t.n >= 0 && t.n*4 <= len(t.slots)*3 && t.live >= 0 && t.live <= len(t.arena)-arenaBase) {
		contract.Invariantf(false, "kv: table counts %d keys in %d slots, %d live bytes in an arena of %d", t.n, len(t.slots), t.live, len(t.arena))
	}
}

// maybeCompact rebuilds the arena once more than half of it is waste, so the
// arena stays within twice the live bytes (plus minCompact). Every wasted
// byte was written by some put, so rebuilds cost O(1) amortized per byte put.
func (t *table) maybeCompact() {
	t.checkCounts()
	if waste := len(t.arena) - arenaBase - t.live; waste > minCompact && waste > len(t.arena)/2 {
		t.rebuild(len(t.slots))
	}
}

// rebuild moves every entry into a new slot array of nslots and a new arena
// without waste (each value's capacity is its length).
func (t *table) rebuild(nslots int) {
	if contract.Enabled {
		contract.Requiref(nslots&(nslots-1) == 0 && nslots*3 >= t.n*4, "kv: table rebuild to %d slots for %d keys", nslots, t.n)
	}
	slots := make([]slot, nslots)
	mask := uint64(nslots - 1)
	arena := make([]byte, arenaBase, arenaBase+t.live+t.live/4+1<<10)
	n := 0
	for _, sl := range t.slots {
		if sl.ref == 0 {
			continue
		}
		e := t.arena[sl.ref:]
		klen := int(binary.LittleEndian.Uint32(e))
		vlen := int(binary.LittleEndian.Uint32(e[4:]))
		off := uint64(len(arena))
		arena = append(arena, e[:entryHeader+klen]...)
		binary.LittleEndian.PutUint32(arena[off+8:], uint32(vlen))
		start := entryHeader + klen
		arena = append(arena, e[start:start+vlen]...)
		i := sl.hash & mask
		for slots[i].ref != 0 {
			i = (i + 1) & mask
		}
		slots[i] = slot{hash: sl.hash, ref: off}
		n++
	}
	t.slots, t.mask, t.arena = slots, mask, arena
	if contract.Enabled {
		contract.Invariantf(n == t.n, "kv: table rebuild found %d keys, counted %d", n, t.n)
		contract.Invariantf((t.n)*4 <= len(slots)*3, "kv: table of %d slots holds %d keys", len(slots), t.n)
		contract.Invariantf(len(arena)-arenaBase == t.live, "kv: table rebuild wrote %d bytes, counted %d live", len(arena)-arenaBase, t.live)
	}
}

// check verifies the table's invariants in full (for tests): the counts,
// that each slot's hash is its key's (by hash, normally t.hash), and that
// every key is found from its home slot.
func (t *table) check(hash func([]byte) uint64) error {
	n, live := 0, 0
	for i, sl := range t.slots {
		if sl.ref == 0 {
			continue
		}
		n++
		if sl.ref < arenaBase || sl.ref >= uint64(len(t.arena)) {
			return fmt.Errorf("slot %d: offset %d outside the arena of %d bytes", i, sl.ref, len(t.arena))
		}
		e := t.arena[sl.ref:]
		klen := int(binary.LittleEndian.Uint32(e))
		vlen := int(binary.LittleEndian.Uint32(e[4:]))
		vcap := int(binary.LittleEndian.Uint32(e[8:]))
		if vlen > vcap || int(sl.ref)+entryHeader+klen+vcap > len(t.arena) {
			return fmt.Errorf("slot %d: entry klen %d vlen %d vcap %d at %d overruns the arena of %d", i, klen, vlen, vcap, sl.ref, len(t.arena))
		}
		live += entryHeader + klen + vlen
		key := e[entryHeader : entryHeader+klen]
		if h := hash(key); h != sl.hash {
			return fmt.Errorf("slot %d: hash %#x, key %q hashes to %#x", i, sl.hash, key, h)
		}
		if j, ok := t.find(key, sl.hash); !ok || j != uint64(i) {
			return fmt.Errorf("slot %d: key %q found at %d (%v)", i, key, j, ok)
		}
	}
	if n != t.n || live != t.live {
		return fmt.Errorf("%d keys and %d live bytes, counted %d and %d", n, live, t.n, t.live)
	}
	if (t.n)*4 > len(t.slots)*3 {
		return fmt.Errorf("%d keys in %d slots", t.n, len(t.slots))
	}
	return nil
}

// each calls f for every key and value, in no particular order (for tests).
func (t *table) each(f func(key, val []byte)) {
	for _, sl := range t.slots {
		if sl.ref != 0 {
			e := t.arena[sl.ref:]
			klen := uint64(binary.LittleEndian.Uint32(e))
			f(e[entryHeader:entryHeader+klen], t.value(sl.ref))
		}
	}
}
