package ringbuf

import (
	"testing"

	"pgregory.net/rapid"
)

// fifo is what SPSC and MPSC (and a one-shard Sharded) have in common.
type fifo interface {
	TryPush(int) bool
	PushBatch([]int) int
	PopBatch([]int) int
	Len() int
	Cap() int
	Arm() bool
	Disarm()
	C() <-chan struct{}
}

// checkFIFO runs a random single-goroutine sequence of operations on q and
// on a slice queue, and checks that they agree at every step.
func checkFIFO(t *rapid.T, q fifo) {
	var model []int
	next := 0
	batch := func(t *rapid.T) []int {
		n := rapid.IntRange(0, 2*q.Cap()+1).Draw(t, "n")
		vs := make([]int, n)
		for i := range vs {
			vs[i] = next + i
		}
		return vs
	}
	t.Repeat(map[string]func(*rapid.T){
		"TryPush": func(t *rapid.T) {
			ok := q.TryPush(next)
			if want := len(model) < q.Cap(); ok != want {
				t.Fatalf("TryPush with %d of %d queued = %v", len(model), q.Cap(), ok)
			}
			if ok {
				model = append(model, next)
				next++
			}
		},
		"PushBatch": func(t *rapid.T) {
			vs := batch(t)
			n := q.PushBatch(vs)
			if want := min(len(vs), q.Cap()-len(model)); n != want {
				t.Fatalf("PushBatch(%d items) with %d of %d queued = %d, want %d", len(vs), len(model), q.Cap(), n, want)
			}
			model = append(model, vs[:n]...)
			next += n
		},
		"PopBatch": func(t *rapid.T) {
			dst := make([]int, rapid.IntRange(0, q.Cap()+2).Draw(t, "dst"))
			for i := range dst {
				dst[i] = -1
			}
			n := q.PopBatch(dst)
			want := min(len(dst), len(model))
			if n != want {
				t.Fatalf("PopBatch(%d) with %d queued = %d", len(dst), len(model), n)
			}
			for i := range n {
				if dst[i] != model[i] {
					t.Fatalf("PopBatch item %d = %d, want %d", i, dst[i], model[i])
				}
			}
			for i := n; i < len(dst); i++ {
				if dst[i] != -1 {
					t.Fatalf("PopBatch wrote dst[%d] past n=%d", i, n)
				}
			}
			model = model[n:]
		},
		"Arm": func(t *rapid.T) {
			armed := q.Arm()
			if armed != (len(model) == 0) {
				t.Fatalf("Arm() = %v with %d queued", armed, len(model))
			}
			if !armed {
				return
			}
			select {
			case <-q.C():
				t.Fatal("C() ready before any push")
			default:
			}
			if len(model) < q.Cap() && rapid.Bool().Draw(t, "push while armed") {
				if !q.TryPush(next) {
					t.Fatal("TryPush into an empty ring failed")
				}
				model = append(model, next)
				next++
				select {
				case <-q.C():
				default:
					t.Fatal("a push while armed did not poke C()")
				}
			}
			q.Disarm()
		},
		"": func(t *rapid.T) {
			if q.Len() != len(model) {
				t.Fatalf("Len() = %d, model has %d", q.Len(), len(model))
			}
		},
	})
}

func TestSPSCModel(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		checkFIFO(t, NewSPSC[int](rapid.IntRange(1, 40).Draw(t, "capacity")))
	})
}

func TestMPSCModel(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		checkFIFO(t, NewMPSC[int](rapid.IntRange(1, 40).Draw(t, "capacity")))
	})
}

func TestShardedOneShardModel(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		checkFIFO(t, NewSharded[int](1, rapid.IntRange(1, 40).Draw(t, "capacity")))
	})
}

// TestShardedModel checks a several-shard Sharded single-threaded: random
// pushes succeed while any shard has room and take min(len, free) of a
// batch; every item pops exactly once; items pushed through one Producer
// handle pop in push order.
func TestShardedModel(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		s := NewSharded[int](rapid.IntRange(1, 5).Draw(t, "shards"), rapid.IntRange(1, 16).Draw(t, "capacity"))
		const handles = 3
		var prods [handles]Producer[int]
		for i := range prods {
			prods[i] = s.Producer()
		}
		// An item is handle*1e6 + seq for handle pushes, or -1-id for random pushes.
		outstanding := map[int]bool{}
		var nextSeq [handles]int
		var lastPopped [handles]int
		for i := range lastPopped {
			lastPopped[i] = -1
		}
		randomID := 0
		push := func(t *rapid.T, vs []int, n int) {
			for _, v := range vs[:n] {
				outstanding[v] = true
			}
		}
		t.Repeat(map[string]func(*rapid.T){
			"TryPush": func(t *rapid.T) {
				v := -1 - randomID
				ok := s.TryPush(v)
				if want := len(outstanding) < s.Cap(); ok != want {
					t.Fatalf("TryPush with %d of %d queued = %v", len(outstanding), s.Cap(), ok)
				}
				if ok {
					randomID++
					push(t, []int{v}, 1)
				}
			},
			"PushBatch": func(t *rapid.T) {
				vs := make([]int, rapid.IntRange(0, s.Cap()+3).Draw(t, "n"))
				for i := range vs {
					vs[i] = -1 - randomID - i
				}
				n := s.PushBatch(vs)
				if want := min(len(vs), s.Cap()-len(outstanding)); n != want {
					t.Fatalf("PushBatch(%d) with %d of %d queued = %d, want %d", len(vs), len(outstanding), s.Cap(), n, want)
				}
				randomID += n
				push(t, vs, n)
			},
			"ProducerPush": func(t *rapid.T) {
				h := rapid.IntRange(0, handles-1).Draw(t, "handle")
				vs := make([]int, rapid.IntRange(1, 5).Draw(t, "n"))
				for i := range vs {
					vs[i] = h*1e6 + nextSeq[h] + i
				}
				var n int
				if len(vs) == 1 && rapid.Bool().Draw(t, "single") {
					if prods[h].TryPush(vs[0]) {
						n = 1
					}
				} else {
					n = prods[h].PushBatch(vs)
				}
				if n > len(vs) || n > s.Cap()-len(outstanding) {
					t.Fatalf("Producer pushed %d of %d with %d free", n, len(vs), s.Cap()-len(outstanding))
				}
				nextSeq[h] += n
				push(t, vs, n)
			},
			"PopBatch": func(t *rapid.T) {
				dst := make([]int, rapid.IntRange(0, s.Cap()+2).Draw(t, "dst"))
				n := s.PopBatch(dst)
				if want := min(len(dst), len(outstanding)); n != want {
					t.Fatalf("PopBatch(%d) with %d queued = %d", len(dst), len(outstanding), n)
				}
				for _, v := range dst[:n] {
					if !outstanding[v] {
						t.Fatalf("popped %d, which is not queued", v)
					}
					delete(outstanding, v)
					if v >= 0 {
						h, seq := v/1e6, v%1e6
						if seq <= lastPopped[h] {
							t.Fatalf("handle %d: popped seq %d after %d", h, seq, lastPopped[h])
						}
						lastPopped[h] = seq
					}
				}
			},
			"": func(t *rapid.T) {
				if s.Len() != len(outstanding) {
					t.Fatalf("Len() = %d, model has %d", s.Len(), len(outstanding))
				}
				if armed := s.Arm(); armed != (len(outstanding) == 0) {
					t.Fatalf("Arm() = %v with %d queued", armed, len(outstanding))
				} else if armed {
					s.Disarm()
				}
			},
		})
	})
}

func TestCapacityRoundsUpToPowerOfTwo(t *testing.T) {
	for _, tc := range []struct{ in, want int }{{1, 1}, {2, 2}, {3, 4}, {64, 64}, {65, 128}} {
		if got := NewSPSC[int](tc.in).Cap(); got != tc.want {
			t.Errorf("NewSPSC(%d).Cap() = %d, want %d", tc.in, got, tc.want)
		}
		if got := NewMPSC[int](tc.in).Cap(); got != tc.want {
			t.Errorf("NewMPSC(%d).Cap() = %d, want %d", tc.in, got, tc.want)
		}
		if got := NewSharded[int](3, tc.in).Cap(); got != 3*tc.want {
			t.Errorf("NewSharded(3, %d).Cap() = %d, want %d", tc.in, got, 3*tc.want)
		}
	}
	for _, bad := range []int{0, -1, maxCapacity + 1} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("NewMPSC(%d) did not panic", bad)
				}
			}()
			NewMPSC[int](bad)
		}()
	}
	if got := NewSharded[int](0, 4).Shards(); got != defaultShards() {
		t.Errorf("NewSharded(0, 4).Shards() = %d, want GOMAXPROCS = %d", got, defaultShards())
	}
}

// TestPopClearsSlots checks that a popped pointer is not kept alive by the
// ring (the engine pushes *call; a ring that kept them would leak results).
func TestPopClearsSlots(t *testing.T) {
	x := new(int)
	dst := make([]*int, 4)
	s := NewSPSC[*int](4)
	s.PushBatch([]*int{x, x, x})
	s.PopBatch(dst)
	for i, p := range s.buf {
		if p != nil {
			t.Fatalf("SPSC slot %d still holds a pointer after pop", i)
		}
	}
	m := NewMPSC[*int](4)
	m.PushBatch([]*int{x, x, x})
	m.PopBatch(dst)
	for i := range m.q.buf {
		if m.q.buf[i] != nil {
			t.Fatalf("MPSC slot %d still holds a pointer after pop", i)
		}
	}
}

// TestPushPopAllocateNothing: the hand-off itself never allocates, in
// contracts builds as in production ones.
func TestPushPopAllocateNothing(t *testing.T) {
	x := new(int)
	in := []*int{x, x, x, x}
	out := make([]*int, 4)
	s := NewSPSC[*int](8)
	m := NewMPSC[*int](8)
	sh := NewSharded[*int](2, 8)
	h := sh.Producer()
	for name, fn := range map[string]func(){
		"SPSC":     func() { s.TryPush(x); s.PushBatch(in); s.PopBatch(out); s.PopBatch(out) },
		"MPSC":     func() { m.TryPush(x); m.PushBatch(in); m.PopBatch(out); m.PopBatch(out) },
		"Sharded":  func() { sh.TryPush(x); sh.PushBatch(in); sh.PopBatch(out); sh.PopBatch(out); sh.PopBatch(out) },
		"Producer": func() { h.TryPush(x); h.PushBatch(in); sh.PopBatch(out); sh.PopBatch(out); sh.PopBatch(out) },
		"Arm": func() {
			s.Arm()
			s.Disarm()
			m.Arm()
			m.Disarm()
			sh.Arm()
			sh.Disarm()
		},
	} {
		if a := testing.AllocsPerRun(100, fn); a != 0 {
			t.Errorf("%s: %v allocs per run, want 0", name, a)
		}
	}
}
