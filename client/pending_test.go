package client

import (
	"testing"

	"pgregory.net/rapid"
)

// The table behaves as a map from ID to request under the connection's use:
// increasing IDs put, taken in any order, expired in sweeps, drained on failure.
func TestPendingTableIsAMap(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		var tab pendingTable
		model := map[uint64]*op{}
		next := uint64(1)
		t.Repeat(map[string]func(*rapid.T){
			"put": func(t *rapid.T) {
				n := rapid.IntRange(1, 600).Draw(t, "n")
				for range n {
					o := &op{}
					o.sentAt = int64(next)
					tab.put(next, o)
					model[next] = o
					next++
				}
			},
			"take": func(t *rapid.T) {
				id := rapid.Uint64Range(0, next).Draw(t, "id")
				if got, want := tab.take(id), model[id]; got != want {
					t.Fatalf("take(%d) = %p, want %p", id, got, want)
				}
				delete(model, id)
			},
			"takeOldest": func(t *rapid.T) {
				// The common case: answers in order.
				for id := next - uint64(len(model)); id < next; id++ {
					if o, ok := model[id]; ok {
						if got := tab.take(id); got != o {
							t.Fatalf("take(%d) = %p, want %p", id, got, o)
						}
						delete(model, id)
						return
					}
				}
			},
			"expire": func(t *rapid.T) {
				before := int64(rapid.Uint64Range(0, next).Draw(t, "before"))
				got := tab.takeIf(func(o *op) bool { return o.sentAt < before }, nil)
				want := 0
				for id, o := range model {
					if o.sentAt < before {
						delete(model, id)
						want++
					}
				}
				if len(got) != want {
					t.Fatalf("expired %d, want %d", len(got), want)
				}
			},
			"drainSometimes": func(t *rapid.T) {
				if !rapid.Bool().Draw(t, "drain") {
					return
				}
				if got := tab.takeAll(); len(got) != len(model) {
					t.Fatalf("drained %d, want %d", len(got), len(model))
				}
				clear(model)
			},
			"": func(t *rapid.T) {
				if tab.len() != len(model) {
					t.Fatalf("len %d, model %d", tab.len(), len(model))
				}
			},
		})
	})
}

func BenchmarkPendingTablePutTake(b *testing.B) {
	var tab pendingTable
	o := &op{}
	const inflight = 512
	for i := range uint64(inflight) {
		tab.put(i, o)
	}
	b.ReportAllocs()
	for i := range uint64(b.N) {
		tab.put(i+inflight, o)
		tab.take(i)
	}
}
