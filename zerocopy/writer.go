package zerocopy

import (
	"io"
	"net"
)

// Writer gathers many small items into one net.Buffers for a vectored
// write (writev on a *net.TCPConn or *net.UnixConn), copying as little as
// pays:
//
//   - Write copies p into the current pooled chunk; consecutive copies share
//     one iovec. Copying a small item (a header, a 64-byte command) costs a
//     few nanoseconds, less than an iovec entry in the kernel, and frees the
//     caller's buffer at once.
//   - Reserve returns room in the current chunk to encode into directly.
//   - WriteRef and WriteFrame reference the caller's bytes without copying
//     (items shorter than minRef are copied anyway).
//
// Ownership: chunks are the Writer's, from its Pool, and go back to it on
// Reset. A slice passed to WriteRef stays the caller's, who must not modify
// it until Reset (or WriteTo) returns. A Frame passed to WriteFrame is a
// reference the Writer takes over and releases on Reset.
//
// A Writer is for one goroutine at a time. Its zero value is not usable:
// call NewWriter.
type Writer struct {
	pool      *Pool
	chunkSize int
	minRef    int

	bufs   net.Buffers // the gathered iovecs, in order
	wv     net.Buffers // WriteTo's consumable copy of bufs (a field, so &wv does not allocate)
	chunks []Buf       // chunks in use; the last one is being filled
	frames []Frame     // references taken over by WriteFrame
	cur    []byte      // all of the last chunk's bytes
	run    int         // cur[run:fill] is output not yet in bufs (the open run)
	fill   int         // cur[:fill] is output
	n      int64       // bytes gathered
}

// Defaults for NewWriter.
const (
	DefaultChunkSize = 16 << 10
	DefaultMinRef    = 512
)

// NewWriter returns a Writer that copies into chunks of chunkSize bytes
// from p, and references rather than copies items of at least minRef bytes
// passed to WriteRef and WriteFrame. chunkSize <= 0 and minRef < 0 mean the
// defaults; minRef 0 references every item.
func NewWriter(p *Pool, chunkSize, minRef int) *Writer {
	if chunkSize <= 0 {
		chunkSize = DefaultChunkSize
	}
	if minRef < 0 {
		minRef = DefaultMinRef
	}
	return &Writer{pool: p, chunkSize: chunkSize, minRef: minRef}
}

// Len returns the number of bytes gathered since the last Reset.
func (w *Writer) Len() int64 { return w.n }

// seal closes the open run: consecutive copies become one iovec.
func (w *Writer) seal() {
	if w.fill > w.run {
		w.bufs = append(w.bufs, w.cur[w.run:w.fill])
		w.run = w.fill
	}
}

// grow starts a new chunk with room for at least k bytes.
func (w *Writer) grow(k int) {
	w.seal()
	b := w.pool.Get(max(k, w.chunkSize))
	b.SetLen(b.Cap())
	w.chunks = append(w.chunks, b)
	w.cur, w.run, w.fill = b.Bytes(), 0, 0
}

// Write copies p into the Writer's chunks. It never fails; the error is
// for io.Writer.
func (w *Writer) Write(p []byte) (int, error) {
	if len(p) <= len(w.cur)-w.fill { // fast path: fits the current chunk
		w.fill += copy(w.cur[w.fill:], p)
		w.n += int64(len(p))
		return len(p), nil
	}
	return copyIn(w, p), nil
}

// WriteString is Write for a string.
func (w *Writer) WriteString(s string) (int, error) { return copyIn(w, s), nil }

func copyIn[S string | []byte](w *Writer, p S) int {
	total := len(p)
	for len(p) > 0 {
		if w.fill == len(w.cur) {
			w.grow(0)
		}
		k := copy(w.cur[w.fill:], p)
		w.fill += k
		p = p[k:]
	}
	w.n += int64(total)
	return total
}

// WriteByte appends one byte.
func (w *Writer) WriteByte(c byte) error {
	if w.fill == len(w.cur) {
		w.grow(0)
	}
	w.cur[w.fill] = c
	w.fill++
	w.n++
	return nil
}

// Reserve returns n contiguous bytes of chunk space, already part of the
// output at the current position, for the caller to fill (an encoder
// writing in place) before the output is written out; the slice is valid
// until Reset. If the current chunk has less room, the rest of it is
// skipped.
func (w *Writer) Reserve(n int) []byte {
	if n == 0 {
		return nil
	}
	if len(w.cur)-w.fill < n {
		w.grow(n)
	}
	out := w.cur[w.fill : w.fill+n : w.fill+n]
	w.fill += n
	w.n += int64(n)
	return out
}

// WriteRef adds p to the output without copying it if len(p) >= minRef
// (else it copies, like Write). The caller keeps p unchanged until Reset or
// WriteTo returns.
func (w *Writer) WriteRef(p []byte) {
	if len(p) < w.minRef || len(p) == 0 {
		copyIn(w, p)
		return
	}
	w.seal()
	w.bufs = append(w.bufs, p)
	w.n += int64(len(p))
}

// WriteFrame adds f's bytes to the output without copying them if
// f.Len() >= minRef, and takes over the reference f: the Writer releases it
// on Reset (or at once, when it copied the bytes). The caller must not use
// f afterwards; to keep the frame, pass f.Ref().
func (w *Writer) WriteFrame(f Frame) {
	b := f.Bytes()
	if len(b) < w.minRef || len(b) == 0 {
		copyIn(w, b)
		f.Release()
		return
	}
	w.seal()
	w.frames = append(w.frames, f)
	w.bufs = append(w.bufs, b)
	w.n += int64(len(b))
}

// Buffers returns the output gathered so far, for a caller that writes it
// itself; later writes are not in it. It is valid until Reset, and the
// caller must not modify the bytes. Consuming it (net.Buffers.WriteTo
// does) also consumes the Writer's own list: call Reset next. WriteTo does
// all of this.
func (w *Writer) Buffers() net.Buffers {
	w.seal()
	return w.bufs
}

// WriteTo writes the gathered output to dst, in one writev per 1024 iovecs
// when dst is a *net.TCPConn or *net.UnixConn (net.Buffers' rule), and then
// calls Reset, even on error: after a failed write the connection's state is
// unknown and the output cannot be resumed.
func (w *Writer) WriteTo(dst io.Writer) (int64, error) {
	w.seal()
	w.wv = w.bufs
	n, err := w.wv.WriteTo(dst)
	w.wv = nil
	w.Reset()
	return n, err
}

// Reset releases every chunk and frame reference the Writer holds and
// empties it, keeping its slices' capacity for the next round.
func (w *Writer) Reset() {
	for _, b := range w.chunks {
		b.Release()
	}
	for _, f := range w.frames {
		f.Release()
	}
	clear(w.chunks)
	clear(w.frames)
	clear(w.bufs)
	w.chunks = w.chunks[:0]
	w.frames = w.frames[:0]
	w.bufs = w.bufs[:0]
	w.cur, w.run, w.fill = nil, 0, 0
	w.n = 0
}
