package session

import (
	"testing"

	"pgregory.net/rapid"
)

// fataler is what testing.TB and *rapid.T share.
type fataler interface {
	Fatal(...any)
	Fatalf(string, ...any)
	Helper()
}

func newBytesTable(opts Options) *Table[[]byte] { return NewTable[[]byte](opts, Bytes{}) }

func mustCheck(t fataler, tb *Table[[]byte]) {
	t.Helper()
	if err := tb.Check(); err != nil {
		t.Fatal(err)
	}
}

func TestTableStatuses(t *testing.T) {
	tb := newBytesTable(Options{MaxSessions: 2, MaxSessionResults: 3})
	if st, _ := tb.Begin(7, 1, 1); st != Expired {
		t.Fatalf("write of an unknown session: %v", st)
	}
	id, ok := tb.New()
	if !ok || id != IssuedBase || !IsIssued(id) {
		t.Fatalf("New: %#x %v", id, ok)
	}
	if st, _ := tb.Begin(id, 2, 1); st != Fresh {
		t.Fatalf("first write: %v", st)
	}
	if st, _ := tb.Begin(id, 2, 1); st != InFlight {
		t.Fatalf("a copy before Record: %v", st)
	}
	tb.Record(id, 2, []byte("two"))
	if st, r := tb.Begin(id, 2, 1); st != Duplicate || string(r) != "two" {
		t.Fatalf("a retry: %v %q", st, r)
	}
	for seq := uint64(3); seq <= 4; seq++ {
		if st, _ := tb.Begin(id, seq, 1); st != Fresh {
			t.Fatalf("write %d: %v", seq, st)
		}
		tb.Record(id, seq, []byte{byte(seq)})
	}
	if st, _ := tb.Begin(id, 5, 1); st != Full {
		t.Fatalf("a fourth result: %v", st)
	}
	// Acknowledging below 4 frees 2 and 3; 2 is stale now.
	if st, _ := tb.Begin(id, 5, 4); st != Fresh {
		t.Fatalf("write 5 with low 4: %v", st)
	}
	if st, _ := tb.Begin(id, 2, 1); st != Stale {
		t.Fatalf("write 2 below the mark: %v", st)
	}
	// A result whose write fell below the mark before its Record is dropped.
	if st, _ := tb.Begin(id, 9, 4); st != Fresh {
		t.Fatal(st)
	}
	if st, _ := tb.Begin(id, 10, 10); st != Fresh {
		t.Fatal(st)
	}
	tb.Record(id, 9, []byte("dropped"))
	tb.Record(id, 10, nil)
	if _, ok := tb.Result(id, 9); ok {
		t.Fatal("a result below the mark kept")
	}
	if r, ok := tb.Result(id, 10); !ok || r != nil {
		t.Fatalf("a nil result: %q %v", r, ok)
	}
	mustCheck(t, tb)

	// Open: a chosen ID opens; an issued ID not held is refused.
	if !tb.Open(99) || tb.Open(0) || tb.Open(IssuedBase+1) {
		t.Fatal("Open")
	}
	// Two sessions held: a third evicts the least recently used (id: 99
	// was opened after it).
	id2, _ := tb.New()
	if tb.Has(id) || !tb.Has(99) || !tb.Has(id2) || tb.Evicted() != 1 {
		t.Fatalf("eviction: %v %v %v %d", tb.Has(id), tb.Has(99), tb.Has(id2), tb.Evicted())
	}
	if tb.Open(id) {
		t.Fatal("an evicted issued session reopened")
	}
	if st, _ := tb.Begin(id, 11, 10); st != Expired {
		t.Fatalf("a write of an evicted session: %v", st)
	}
	// Begin touches: 99 becomes the most recently used, so id2 goes next.
	if st, _ := tb.Begin(99, 1, 1); st != Fresh {
		t.Fatal(st)
	}
	tb.Record(99, 1, []byte("x"))
	var order []uint64
	for in := range tb.All() {
		order = append(order, in.ID)
	}
	if len(order) != 2 || order[0] != 99 || order[1] != id2 {
		t.Fatalf("LRU order %#x", order)
	}
	tb.New()
	if tb.Has(id2) || !tb.Has(99) {
		t.Fatal("evicted the wrong session")
	}
	mustCheck(t, tb)
}

func TestNewRunsOut(t *testing.T) {
	tb := newBytesTable(Options{})
	tb.nextIssued = IssuedBase + IssuedSpan - 1
	if id, ok := tb.New(); !ok || id != IssuedBase+IssuedSpan-1 {
		t.Fatal("the last ID")
	}
	if _, ok := tb.New(); ok {
		t.Fatal("issued past the range")
	}
}

// TestSessionMatchesMap checks a session's ring and far map against a map.
func TestSessionMatchesMap(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		ss := &sess[int]{low: rapid.SampledFrom([]uint64{1, 12345, 1<<64 - 50000}).Draw(t, "low")}
		model := map[uint64]int{}
		for range rapid.IntRange(1, 300).Draw(t, "steps") {
			seq := ss.low + rapid.OneOf(
				rapid.Uint64Range(0, 40), rapid.Uint64Range(0, 3000),
				rapid.Uint64Range(ringMax-40, ringMax+40), rapid.Uint64Range(0, 1<<40),
			).Draw(t, "ahead")
			switch rapid.IntRange(0, 3).Draw(t, "step") {
			case 0, 1:
				if _, ok := model[seq]; !ok && seq >= ss.low {
					r := rapid.Int().Draw(t, "r")
					ss.save(seq, entry[int]{pending, 0})
					if !ss.set(seq, r) {
						t.Fatalf("set %d", seq)
					}
					model[seq] = r
				}
			case 2:
				if seq > ss.low {
					ss.advance(seq)
					for q := range model {
						if q < seq {
							delete(model, q)
						}
					}
				}
			}
			if ss.n != len(model) {
				t.Fatalf("%d results, want %d", ss.n, len(model))
			}
			if err := ss.check(); err != nil {
				t.Fatal(err)
			}
			want, has := model[seq]
			if got, ok := ss.get(seq); seq >= ss.low && (ok != has || got.r != want) {
				t.Fatalf("result of %d: %+v %v, want %+v", seq, got, ok, want)
			}
		}
		for q, r := range model {
			if got, ok := ss.get(q); !ok || got.r != r || got.st != recorded {
				t.Fatalf("result of %d: %+v %v, want %+v", q, got, ok, r)
			}
		}
		var prev uint64
		n := 0
		ss.each(nil, func(seq uint64, e entry[int]) {
			if n > 0 && seq <= prev || model[seq] != e.r {
				t.Fatalf("each: %d after %d", seq, prev)
			}
			prev = seq
			n++
		})
		if n != len(model) {
			t.Fatalf("each saw %d of %d", n, len(model))
		}
	})
}

// TestRingGrows: a client keeping many writes unacknowledged grows its
// session's ring to its largest.
func TestRingGrows(t *testing.T) {
	tb := newBytesTable(Options{MaxSessionResults: 1 << 20})
	id, _ := tb.New()
	for seq := uint64(1); seq <= 3*ringMax; seq++ {
		low := uint64(1)
		if seq > ringMax {
			low = seq - ringMax + 100
		}
		if st, _ := tb.Begin(id, seq, low); st != Fresh {
			t.Fatalf("write %d: %v", seq, st)
		}
		tb.Record(id, seq, nil)
	}
	if n := len(tb.sessions[id].ring); n != ringMax {
		t.Fatalf("ring of %d, want %d", n, ringMax)
	}
	mustCheck(t, tb)
}
