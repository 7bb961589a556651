package zerocopy

import (
	"math/bits"
	"sync"
	"sync/atomic"

	"github.com/vestalabs/vesta/internal/contract"
)

// Size classes are the powers of two from 64 B to 1 MiB. A request is
// served from the smallest class that holds it, so a buffer wastes less
// than half its capacity; larger requests get an exact, unpooled
// allocation that Release drops for the collector.
const (
	minClassShift = 6
	maxClassShift = 20
	numClasses    = maxClassShift - minClassShift + 1

	// MaxPooled is the largest size served from a pool.
	MaxPooled = 1 << maxClassShift
)

const poisonByte = 0xDB

// classOf returns the size class of an n-byte request, -1 above MaxPooled.
func classOf(n int) int {
	if n <= 1<<minClassShift {
		return 0
	}
	if n > MaxPooled {
		return -1
	}
	return bits.Len(uint(n-1)) - minClassShift
}

// chunk is a buffer and its bookkeeping; handles point at it.
type chunk struct {
	own   owner        // contracts builds only; zero size otherwise
	refs  atomic.Int32 // Frame references; 0 while exclusive or pooled
	n     int          // length of the contents
	data  []byte       // len(data) == capacity
	class int8         // size class, -1 if unpooled
	pool  *Pool
}

// Pool hands out byte buffers in size classes, recycling them through one
// sync.Pool per class (per-P caches: Get and Release take no lock and, in
// steady state, allocate nothing).
//
// The zero Pool is ready to use. A Pool is safe for concurrent use; the
// buffers it hands out are not (see Buf and Frame). Like any sync.Pool, it
// may drop idle buffers at a garbage collection.
type Pool struct {
	classes [numClasses]sync.Pool
	out     counter // outstanding buffers, contracts builds only
}

// Get returns a buffer of length n and capacity at least n, owned by the
// caller, who must Release or Share it. Its contents are unspecified (not
// zeroed): write before reading. It panics if n < 0.
func (p *Pool) Get(n int) Buf {
	if n < 0 {
		panic("zerocopy: negative buffer size")
	}
	var c *chunk
	class := classOf(n)
	if class < 0 {
		c = &chunk{data: make([]byte, n), class: -1}
	} else if x, ok := p.classes[class].Get().(*chunk); ok {
		c = x
	} else {
		c = &chunk{data: make([]byte, 1<<(class+minClassShift)), class: int8(class)}
	}
	c.n = n
	c.pool = p
	p.out.add(1)
	return Buf{s: c.own.acquire(), c: c}
}

// Outstanding returns the number of buffers handed out and not yet returned
// (a Frame counts once, whatever its references). It is counted in
// contracts builds only; without the tag it returns 0, false.
func (p *Pool) Outstanding() (n int64, counted bool) { return p.out.get() }

// recycle takes back a buffer no handle refers to any more.
func (c *chunk) recycle() {
	contract.Invariant(c.refs.Load() == 0, "zerocopy: recycling a buffer with live references")
	if checked {
		poison(c.data)
	}
	p := c.pool
	p.out.add(-1)
	if c.class >= 0 {
		c.pool = nil
		p.classes[c.class].Put(c)
	}
}

// Buf is a pooled byte buffer with one owner. The owner may read and write
// its bytes, and must end its ownership exactly once, by Release or Share;
// after that, neither the Buf (nor any copy of it) nor a slice obtained from
// it may be used. A Buf is not safe for concurrent use: pass it between
// goroutines only along with its ownership.
type Buf struct {
	s stamp // first, so that an empty stamp adds no padding
	c *chunk
}

// Bytes returns the contents: a slice of length Len whose capacity is the
// buffer's (Cap), so the owner may write up to Cap bytes and then record
// the length with SetLen. The slice is valid until Release or Share.
func (b Buf) Bytes() []byte {
	b.c.own.checkBuf(b.s, "Bytes")
	return b.c.data[:b.c.n]
}

// Len returns the length of the contents.
func (b Buf) Len() int {
	b.c.own.checkBuf(b.s, "Len")
	return b.c.n
}

// Cap returns the buffer's capacity: its size class, or the exact size for
// a buffer above MaxPooled.
func (b Buf) Cap() int {
	b.c.own.checkBuf(b.s, "Cap")
	return len(b.c.data)
}

// SetLen sets the length of the contents to n, 0 <= n <= Cap(); bytes
// beyond the old length are whatever was written there.
func (b Buf) SetLen(n int) {
	b.c.own.checkBuf(b.s, "SetLen")
	if n < 0 || n > len(b.c.data) {
		panic("zerocopy: Buf.SetLen out of range")
	}
	b.c.n = n
}

// Release returns the buffer to its pool. The owner calls it exactly once
// (unless it calls Share instead); contracts builds panic on a second call.
func (b Buf) Release() {
	b.c.own.releaseBuf(b.s, "Release", false)
	b.c.recycle()
}

// Share ends the Buf's exclusive ownership and returns the buffer as a
// Frame holding one reference, which the caller now owns. The contents
// (Len bytes) become read-only for every holder.
func (b Buf) Share() Frame {
	s := b.c.own.releaseBuf(b.s, "Share", true)
	b.c.refs.Store(1)
	return Frame{s: s, c: b.c}
}
