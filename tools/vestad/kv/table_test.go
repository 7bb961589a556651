package kv

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"
)

// tableModel drives a table and a map with the same operations, hashing
// with hash, and compares them.
type tableModel struct {
	t    *testing.T
	tab  *table
	m    map[string]string
	hash func([]byte) uint64
}

func newTableModel(t *testing.T, hash func(*table, []byte) uint64) *tableModel {
	tm := &tableModel{t: t, tab: newTable(), m: map[string]string{}}
	tm.hash = func(k []byte) uint64 { return hash(tm.tab, k) }
	return tm
}

func (tm *tableModel) put(k, v string) {
	tm.tab.Put([]byte(k), []byte(v), tm.hash([]byte(k)))
	tm.m[k] = v
}

func (tm *tableModel) del(k string) {
	_, want := tm.m[k]
	if got := tm.tab.Delete([]byte(k), tm.hash([]byte(k))); got != want {
		tm.t.Fatalf("delete %q: %v, want %v", k, got, want)
	}
	delete(tm.m, k)
}

func (tm *tableModel) get(k string) {
	v, ok := tm.tab.Get([]byte(k), tm.hash([]byte(k)))
	if want, wantOK := tm.m[k]; ok != wantOK || string(v) != want {
		tm.t.Fatalf("get %q: %q %v, want %q %v", k, v, ok, want, wantOK)
	}
}

// verify checks the table's invariants and that it holds what the map holds.
func (tm *tableModel) verify() {
	tm.t.Helper()
	if err := tm.tab.check(tm.hash); err != nil {
		tm.t.Fatal(err)
	}
	if tm.tab.Len() != len(tm.m) {
		tm.t.Fatalf("%d keys, want %d", tm.tab.Len(), len(tm.m))
	}
	for k := range tm.m {
		tm.get(k)
	}
}

func realHash(t *table, k []byte) uint64 { return t.hash(k) }

func TestTableGrow(t *testing.T) {
	tm := newTableModel(t, realHash)
	for i := range 20_000 {
		tm.put(fmt.Sprint(i), fmt.Sprint("v", i))
		if i&(i+1) == 0 { // at every power of two, around the growth points
			tm.verify()
		}
	}
	tm.verify()
	if len(tm.tab.slots) != 1<<15 {
		t.Errorf("%d slots for 20 000 keys", len(tm.tab.slots))
	}
	// Missing keys end their probe at an empty slot.
	for i := range 1000 {
		tm.get(fmt.Sprint("missing", i))
	}
}

// Deletes shift entries back; keys stay reachable after many deletes and
// reinserts in a crowded table, and probing for missing keys terminates.
func TestTableDeleteReinsert(t *testing.T) {
	for _, h := range []struct {
		name string
		fn   func(*table, []byte) uint64
	}{
		{"maphash", realHash},
		// Few distinct hashes: long runs of equal hashes and homes.
		{"collisions", func(_ *table, k []byte) uint64 { return uint64(len(k)%3) * 0x9e3779b97f4a7c15 }},
		// Homes clustered at the end of the slot array: runs wrap around.
		{"wrap", func(t *table, k []byte) uint64 { return t.hash(k)&^511 | 511 - uint64(len(k)%4) }},
	} {
		t.Run(h.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(5, 6))
			tm := newTableModel(t, h.fn)
			for i := range 20_000 {
				k := fmt.Sprint(rng.IntN(300))
				switch rng.IntN(3) {
				case 0:
					tm.del(k)
				case 1:
					tm.put(k, string(bytes.Repeat([]byte{byte(i)}, rng.IntN(20))))
				default:
					tm.get(k)
				}
				if i%997 == 0 {
					tm.verify()
				}
			}
			tm.verify()
			for k := range tm.m {
				tm.del(k)
			}
			tm.verify()
			for _, sl := range tm.tab.slots {
				if sl.ref != 0 {
					t.Fatal("a slot still used after deleting every key")
				}
			}
		})
	}
}

// Values that grow move to the arena's end; the arena is rebuilt once
// waste passes half of it, so it stays within about twice the live bytes.
func TestTableCompaction(t *testing.T) {
	tm := newTableModel(t, realHash)
	rng := rand.New(rand.NewPCG(7, 8))
	maxArena := 0
	for i := range 50_000 {
		k := fmt.Sprint(rng.IntN(500))
		switch rng.IntN(10) {
		case 0:
			tm.del(k)
		default:
			// Growing, shrinking and equal-length values: moves, in-place
			// writes leaving unused capacity, and plain overwrites.
			tm.put(k, string(bytes.Repeat([]byte{byte(i)}, rng.IntN(200))))
		}
		maxArena = max(maxArena, len(tm.tab.arena))
		if waste := len(tm.tab.arena) - arenaBase - tm.tab.live; waste > minCompact && waste > len(tm.tab.arena)/2 {
			t.Fatalf("after op %d: %d of the arena's %d bytes wasted", i, waste, len(tm.tab.arena))
		}
	}
	tm.verify()
	if maxArena > 2*tm.tab.live+2*minCompact+1<<16 {
		t.Errorf("arena reached %d bytes for ~%d live", maxArena, tm.tab.live)
	}
	// A put that fits its entry neither allocates nor grows the arena.
	tm.put("fixed", "0123456789")
	n := len(tm.tab.arena)
	key, val := []byte("fixed"), []byte("abcdefghij")
	h := tm.hash(key)
	if allocs := testing.AllocsPerRun(100, func() { tm.tab.Put(key, val, h) }); allocs != 0 || len(tm.tab.arena) != n {
		t.Errorf("in-place put: %v allocations, arena %d -> %d bytes", allocs, n, len(tm.tab.arena))
	}
	tm.m["fixed"] = string(val)
	tm.verify()
}

func TestTableEmptyAndLong(t *testing.T) {
	tm := newTableModel(t, realHash)
	long := string(bytes.Repeat([]byte("x"), 100_000))
	tm.put("", "")
	tm.put("e", "")
	tm.put(long, long)
	tm.put("k", long)
	tm.verify()
	tm.put("k", "")
	tm.put(long, "short")
	tm.verify()
	tm.del("")
	tm.get("")
	tm.verify()
}
