package zerocopy

import "github.com/vestalabs/vesta/internal/contract"

// Frame is one reference to a read-only buffer shared by several holders:
// typically a received frame whose bytes several decoded messages alias.
// Each holder owns one reference and calls Release on it exactly once; the
// last Release returns the buffer to its pool. A holder that hands bytes on
// to a new holder gives it a reference of its own with Ref.
//
// Concurrency: different references to one buffer may be used, Ref'd and
// Released from different goroutines at once (the count is atomic and the
// bytes are read-only). One reference (a Frame value and its copies) is
// used by one holder at a time. Ref and Release must go through a
// reference that is still held: the count can only reach zero when every
// holder has released, so no Ref races the last Release.
//
// Contracts builds give each reference its own token, so releasing a
// reference twice, or using one after its release, panics even while other
// references keep the buffer alive.
type Frame struct {
	s stamp // first, so that an empty stamp adds no padding
	c *chunk
}

// Bytes returns the shared contents. The slice is read-only and valid
// while this reference is held.
func (f Frame) Bytes() []byte {
	f.c.own.checkFrame(f.s, "Bytes")
	return f.c.data[:f.c.n:f.c.n]
}

// Len returns the length of the contents.
func (f Frame) Len() int {
	f.c.own.checkFrame(f.s, "Len")
	return f.c.n
}

// Refs returns the number of references held, for tests and diagnostics;
// with concurrent holders it is stale on return.
func (f Frame) Refs() int {
	f.c.own.checkFrame(f.s, "Refs")
	return int(f.c.refs.Load())
}

// Ref returns a new reference to the same buffer, for a new holder, who
// must Release it. The receiver must be a reference its caller holds.
func (f Frame) Ref() Frame {
	s := f.c.own.ref(f.s)
	n := f.c.refs.Add(1)
	contract.Invariant(n > 1, "zerocopy: Frame.Ref on a buffer with no references")
	return Frame{s: s, c: f.c}
}

// Release gives up this reference; the last one returns the buffer to its
// pool. Each reference is released exactly once: contracts builds panic on
// a second Release of the same reference.
func (f Frame) Release() {
	f.c.own.unref(f.s)
	n := f.c.refs.Add(-1)
	contract.Invariant(n >= 0, "zerocopy: Frame released more times than referenced")
	if n == 0 {
		f.c.recycle()
	}
}
