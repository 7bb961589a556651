package zerocopy

import (
	"bytes"
	"sync"
	"testing"

	"github.com/vestalabs/vesta/internal/contract"
	"pgregory.net/rapid"
)

// panics reports whether fn panicked with a contract violation.
func panics(fn func()) (violated bool) {
	defer func() {
		_, violated = recover().(*contract.Violation)
	}()
	fn()
	return false
}

// TestFrameModel runs random Ref/Release/Bytes sequences over the
// references of one frame at a time against a model (which references are
// live), checking the count, the contents, that the last Release returns
// the buffer, and, with contracts, that every misuse of a released
// reference panics while the live ones keep working.
func TestFrameModel(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		var p Pool
		var refs []Frame
		var live []bool
		var content []byte
		nlive := 0
		start := func(t *rapid.T) {
			content = rapid.SliceOfN(rapid.Byte(), 0, 300).Draw(t, "content")
			b := p.Get(len(content))
			copy(b.Bytes(), content)
			refs, live, nlive = []Frame{b.Share()}, []bool{true}, 1
		}
		pick := func(t *rapid.T, want bool) (int, bool) {
			var idx []int
			for i, l := range live {
				if l == want {
					idx = append(idx, i)
				}
			}
			if len(idx) == 0 {
				return 0, false
			}
			return idx[rapid.IntRange(0, len(idx)-1).Draw(t, "ref")], true
		}
		start(t)
		t.Repeat(map[string]func(*rapid.T){
			"Ref": func(t *rapid.T) {
				i, ok := pick(t, true)
				if !ok {
					t.Skip("no live reference")
				}
				refs = append(refs, refs[i].Ref())
				live = append(live, true)
				nlive++
			},
			"Release": func(t *rapid.T) {
				i, ok := pick(t, true)
				if !ok {
					t.Skip("no live reference")
				}
				refs[i].Release()
				live[i] = false
				nlive--
				if nlive == 0 {
					if n, counted := p.Outstanding(); counted && n != 0 {
						t.Fatalf("last Release left %d buffers outstanding", n)
					}
					start(t)
				}
			},
			"Bytes": func(t *rapid.T) {
				i, ok := pick(t, true)
				if !ok {
					t.Skip("no live reference")
				}
				if !bytes.Equal(refs[i].Bytes(), content) {
					t.Fatal("a live reference reads other bytes than were written")
				}
			},
			"Misuse": func(t *rapid.T) {
				if !contract.Enabled {
					t.Skip("checks exist only with -tags contracts")
				}
				i, ok := pick(t, false)
				if !ok {
					t.Skip("no released reference")
				}
				f := refs[i]
				op := rapid.SampledFrom([]string{"Release", "Ref", "Bytes"}).Draw(t, "op")
				fn := map[string]func(){"Release": f.Release, "Ref": func() { f.Ref() }, "Bytes": func() { f.Bytes() }}[op]
				if !panics(fn) {
					t.Fatalf("%s through a released reference did not panic", op)
				}
			},
			"": func(t *rapid.T) {
				i, _ := pick(t, true)
				if got := refs[i].Refs(); got != nlive {
					t.Fatalf("Refs() = %d, model has %d live", got, nlive)
				}
			},
		})
		for i := range refs {
			if live[i] {
				refs[i].Release()
			}
		}
		if n, counted := p.Outstanding(); counted && n != 0 {
			t.Fatalf("%d buffers outstanding at the end", n)
		}
	})
}

// TestFrameOverReleaseWhileOthersHold: a holder releasing its reference
// twice is caught at once, though the buffer is still alive for others.
func TestFrameOverReleaseWhileOthersHold(t *testing.T) {
	var p Pool
	a := p.Get(8).Share()
	b := a.Ref()
	a.Release()
	violates(t, "second Release of one reference", a.Release)
	if b.Refs() != 1 {
		t.Fatalf("the failed over-release changed the count to %d", b.Refs())
	}
	b.Release()
	noLeaks(t, &p)
}

// TestFrameSharedAcrossGoroutines: a frame is Ref'd once per reader, the
// readers check the bytes and release on their own goroutines in any
// order; the buffer returns to the pool exactly once.
func TestFrameSharedAcrossGoroutines(t *testing.T) {
	var p Pool
	rounds := 300
	if race {
		rounds = 100
	}
	for r := range rounds {
		b := p.Get(1000)
		bs := b.Bytes()
		for i := range bs {
			bs[i] = byte(r)
		}
		f := b.Share()
		var wg sync.WaitGroup
		for range 4 {
			g := f.Ref()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer g.Release()
				for _, c := range g.Bytes() {
					if c != byte(r) {
						t.Errorf("round %d: a reader saw %d", r, c)
						return
					}
				}
			}()
		}
		f.Release() // possibly before the readers: they keep it alive
		wg.Wait()
	}
	noLeaks(t, &p)
}
