//go:build contracts

package zerocopy

import (
	"sync"
	"sync/atomic"

	"github.com/vestalabs/vesta/internal/contract"
)

// In contracts builds every buffer tracks who may use it, and every handle
// carries a stamp: the buffer's generation when the handle was issued, and
// for a Frame a token naming that one reference. A buffer's generation
// moves on whenever its handles stop being valid (release, Share), so a
// stale handle fails its check even after the buffer went back to the pool
// and out again to a new owner, and a Frame reference released twice fails
// even while other references keep the buffer alive.

const checked = true

type stamp struct{ gen, tok uint32 }

type state uint8

const (
	pooled    state = iota // in a pool, or dropped: no valid handle
	exclusive              // one Buf handle
	shared                 // Frame references, one token each
)

type owner struct {
	mu    sync.Mutex
	gen   uint32
	state state
	next  uint32              // next Frame token
	live  map[uint32]struct{} // live Frame tokens
}

func (o *owner) acquire() stamp {
	o.mu.Lock()
	defer o.mu.Unlock()
	contract.Invariant(o.state == pooled, "zerocopy: a pooled buffer was handed out while still in use")
	o.gen++
	o.state = exclusive
	return stamp{gen: o.gen}
}

func (o *owner) checkBuf(s stamp, op string) {
	o.mu.Lock()
	ok := o.state == exclusive && o.gen == s.gen
	o.mu.Unlock()
	if !ok { // not Requiref(ok, …): its arguments would allocate on every call
		contract.Requiref(false, "zerocopy: Buf.%s on a buffer released or shared (use after release)", op)
	}
}

// releaseBuf ends the exclusive handle s: Release, or Share (then toFrame).
func (o *owner) releaseBuf(s stamp, op string, toFrame bool) stamp {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.state != exclusive || o.gen != s.gen {
		contract.Requiref(false, "zerocopy: Buf.%s on a buffer already released or shared (double release)", op)
	}
	o.gen++
	if !toFrame {
		o.state = pooled
		return stamp{}
	}
	o.state = shared
	if o.live == nil {
		o.live = map[uint32]struct{}{}
	}
	o.next++
	o.live[o.next] = struct{}{}
	return stamp{gen: o.gen, tok: o.next}
}

func (o *owner) liveRef(s stamp) bool {
	_, ok := o.live[s.tok]
	return o.state == shared && o.gen == s.gen && ok
}

func (o *owner) checkFrame(s stamp, op string) {
	o.mu.Lock()
	ok := o.liveRef(s)
	o.mu.Unlock()
	if !ok {
		contract.Requiref(false, "zerocopy: Frame.%s through a reference already released (use after release)", op)
	}
}

func (o *owner) ref(s stamp) stamp {
	o.mu.Lock()
	defer o.mu.Unlock()
	contract.Require(o.liveRef(s), "zerocopy: Frame.Ref through a reference already released")
	o.next++
	o.live[o.next] = struct{}{}
	return stamp{gen: o.gen, tok: o.next}
}

// unref ends one Frame reference. The buffer's reference count, not this
// bookkeeping, decides who recycles it; every unref happens before its
// caller's decrement, so when the count reaches zero the state is pooled.
func (o *owner) unref(s stamp) {
	o.mu.Lock()
	defer o.mu.Unlock()
	contract.Require(o.liveRef(s), "zerocopy: Frame.Release of a reference already released (over-release)")
	delete(o.live, s.tok)
	if len(o.live) == 0 {
		o.gen++
		o.state = pooled
	}
}

// poison overwrites a released buffer so that a reader holding on to its
// bytes sees garbage rather than plausible data.
func poison(b []byte) {
	for i := range b {
		b[i] = poisonByte
	}
}

// counter counts a pool's outstanding buffers, for leak checks in tests.
type counter struct{ n atomic.Int64 }

func (c *counter) add(d int64)        { c.n.Add(d) }
func (c *counter) get() (int64, bool) { return c.n.Load(), true }
