package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"

	"github.com/vestalabs/vesta/client/proto"
)

// readBufSize is the size of the read buffer a connection takes when it has
// bytes to read: what one read system call may bring.
const readBufSize = 64 << 10

// smallKeep bounds the incomplete frame a connection keeps in a small buffer
// of its own while it waits, giving the read buffer back.
const smallKeep = 4 << 10

// Buffers come in classes: the read buffer, doublings of it, and the
// largest frame; each class has a pool. A frame's buffer grows through
// them, and what a closed connection held goes back to its pool for the
// next: under an attack that keeps the budget full, the memory in use
// stays about the budget, instead of the budget plus the garbage of every
// buffer outgrown or closed, which the collector would let pile up to
// about the live heap's size again before it ran.
var (
	// The read buffer's doublings up to half the largest frame, then the
	// largest frame (a doubling any closer to it would be copied again at once).
	bufClasses = func() []int {
		c := []int{readBufSize}
		for 4*c[len(c)-1] <= lenSize+maxRequestFrame {
			c = append(c, 2*c[len(c)-1])
		}
		return append(c, lenSize+maxRequestFrame)
	}()
	bufPools = func() []sync.Pool {
		p := make([]sync.Pool, len(bufClasses))
		for i := range p {
			size := bufClasses[i]
			p[i].New = func() any { b := make([]byte, size); return &b }
		}
		return p
	}()
)

// bufClass returns the smallest class of at least size bytes, and -1 if
// there is none.
func bufClass(size int) int {
	for i, c := range bufClasses {
		if c >= size {
			return i
		}
	}
	return -1
}

// errClosedByLimit ends the reading of a connection that a limit closed
// (the reason is in serverConn.closing).
var errClosedByLimit = errors.New("vestad: connection closed by a client limit")

// connReader reads the client protocol's frames (package proto's format)
// from one connection for the server, holding memory only for what it has
// received and not yet handed on, and charging all it holds to the
// server's bufferBudget:
//
//   - No buffer while nothing is pending: it reads through the socket's raw
//     descriptor, and when a read finds nothing it gives its read buffer
//     back before it waits. (Where raw reads are not supported it reads with
//     Read, and keeps the buffer while it waits.)
//   - While it waits with an incomplete frame of at most smallKeep bytes, it
//     keeps them in a small buffer of their size.
//   - A frame larger than the read buffer gets a buffer that grows as its
//     bytes arrive, at most doubling, never sized from its header alone.
//   - A frame above maxFrame is refused from its header.
//
// Next and HasFrame are called from the connection's goroutine only.
type connReader struct {
	c        *serverConn
	nc       net.Conn
	raw      syscall.RawConn // nil: reads with nc.Read
	maxFrame int

	buf    []byte  // nil while nothing is held; buf[r:w] is received, unprocessed
	pooled *[]byte // buf's entry of bufPools[class], if it has one
	class  int
	r, w   int

	n      int   // the raw read's result
	err    error // the raw read's error, or why the reader stopped in it
	readFn func(fd uintptr) bool
}

func newConnReader(c *serverConn, maxFrame int) *connReader {
	cr := &connReader{c: c, nc: c.nc, maxFrame: maxFrame}
	if sc, ok := c.nc.(syscall.Conn); ok && rawReadSupported {
		if raw, err := sc.SyscallConn(); err == nil {
			cr.raw = raw
			cr.readFn = cr.readOnce
		}
	}
	return cr
}

// Next returns the next frame's body, valid until the next call. A frame
// length of zero or above the maximum gives a *proto.DecodeError; a stream
// that ends inside a frame, io.ErrUnexpectedEOF; between frames, io.EOF; a
// connection a limit closed, errClosedByLimit.
func (cr *connReader) Next() ([]byte, error) {
	for {
		avail := cr.w - cr.r
		need := lenSize
		if avail >= lenSize {
			n := binary.LittleEndian.Uint32(cr.buf[cr.r:])
			if n == 0 {
				return nil, &proto.DecodeError{Field: "frame length", Reason: "zero"}
			}
			if uint64(n) > uint64(cr.maxFrame) {
				return nil, &proto.DecodeError{Field: "frame length",
					Reason: fmt.Sprintf("%d above the limit %d (the largest request)", n, cr.maxFrame)}
			}
			need = lenSize + int(n)
			if avail >= need {
				body := cr.buf[cr.r+lenSize : cr.r+need : cr.r+need]
				cr.r += need
				if cr.c.frameStart.Load() != 0 {
					cr.c.frameStart.Store(0)
				}
				if cr.c.incomplete.Load() {
					cr.c.incomplete.Store(false)
				}
				return body, nil
			}
		}
		if err := cr.makeRoom(need); err != nil {
			return nil, err
		}
		if err := cr.fill(); err != nil {
			if errors.Is(err, io.EOF) && cr.w > cr.r {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
}

// HasFrame reports whether a whole frame is buffered, so that Next returns
// it without reading from the connection. A bad length counts as a frame:
// Next returns its error at once.
func (cr *connReader) HasFrame() bool {
	avail := cr.w - cr.r
	if avail < lenSize {
		return false
	}
	n := binary.LittleEndian.Uint32(cr.buf[cr.r:])
	return n == 0 || uint64(n) > uint64(cr.maxFrame) || uint64(avail) >= uint64(lenSize)+uint64(n)
}

// makeRoom makes buf able to take more bytes of a frame of need bytes
// (length prefix included) starting at r: it moves the frame to the front,
// or grows the buffer, at most doubling what it holds.
func (cr *connReader) makeRoom(need int) error {
	if cr.buf == nil {
		return nil // fill takes a read buffer
	}
	if cr.r == cr.w {
		cr.r, cr.w = 0, 0
	}
	if cr.w < len(cr.buf) {
		return nil
	}
	if cr.r > 0 && need <= len(cr.buf) {
		cr.w = copy(cr.buf, cr.buf[cr.r:cr.w])
		cr.r = 0
		return nil
	}
	have := cr.w - cr.r
	return cr.replace(min(need, max(readBufSize, 2*len(cr.buf))), have)
}

// replace moves the unprocessed bytes (have of them) into a new buffer of
// at least size bytes (the least class that holds it). The old buffer's
// charge is given back first and the new one charged before it is taken:
// what the connection will hold is what the budget weighs.
func (cr *connReader) replace(size, have int) error {
	class := bufClass(size)
	if class >= 0 {
		size = bufClasses[class]
	}
	b := cr.c.s.budget
	b.release(cr.c, len(cr.buf))
	if have > 0 {
		cr.c.incomplete.Store(true)
	}
	if !b.reserve(cr.c, size, have > 0) {
		cr.free()
		return errClosedByLimit
	}
	var nb []byte
	var pooled *[]byte
	if class >= 0 {
		pooled = bufPools[class].Get().(*[]byte)
		nb = *pooled
	} else {
		nb = make([]byte, size)
	}
	copy(nb, cr.buf[cr.r:cr.w])
	cr.free()
	cr.buf, cr.pooled, cr.class, cr.r, cr.w = nb, pooled, class, 0, have
	return nil
}

// drop gives back buf (its bytes are no longer wanted) and its charge.
func (cr *connReader) drop() {
	cr.c.s.budget.release(cr.c, len(cr.buf))
	cr.free()
}

// free lets go of buf, whose charge was given back.
func (cr *connReader) free() {
	if cr.c.incomplete.Load() {
		cr.c.incomplete.Store(false)
	}
	if cr.pooled != nil {
		bufPools[cr.class].Put(cr.pooled)
	}
	cr.buf, cr.pooled, cr.r, cr.w = nil, nil, 0, 0
}

// fill reads once into buf[w:], taking a read buffer first if it holds none.
func (cr *connReader) fill() error {
	if cr.raw != nil {
		cr.n, cr.err = 0, nil
		if err := cr.raw.Read(cr.readFn); err != nil {
			return err // the read deadline (stop, or a limit), or a closed connection
		}
		if cr.err != nil {
			return cr.err
		}
	} else {
		if cr.buf == nil {
			if err := cr.replace(readBufSize, 0); err != nil {
				return err
			}
		}
		if cr.w > cr.r {
			cr.waitingForRest()
		}
		cr.c.waiting.Store(true)
		n, err := cr.nc.Read(cr.buf[cr.w:])
		cr.c.waiting.Store(false)
		if cr.c.closing.Load() != 0 {
			return errClosedByLimit
		}
		cr.n = n
		if n == 0 {
			if err == nil {
				err = io.ErrNoProgress
			}
			return err
		}
	}
	cr.w += cr.n
	cr.c.lastActive.Store(cr.c.s.now())
	return nil
}

// readOnce is the raw read: called by raw.Read until it returns true, and
// again each time the socket becomes readable after it returned false.
func (cr *connReader) readOnce(fd uintptr) bool {
	c := cr.c
	c.waiting.Store(false)
	if c.closing.Load() != 0 {
		cr.err = errClosedByLimit
		return true
	}
	if cr.buf == nil {
		if err := cr.replace(readBufSize, 0); err != nil {
			cr.err = err
			return true
		}
	}
	n, again, err := rawRead(fd, cr.buf[cr.w:])
	switch {
	case again:
		if !cr.park() {
			cr.err = errClosedByLimit
			return true
		}
		c.waiting.Store(true)
		return false
	case err != nil:
		cr.err = os.NewSyscallError("read", err)
	case n == 0:
		cr.err = io.EOF
	}
	cr.n = n
	return true
}

// park readies the reader to wait for the socket: it gives back its read
// buffer if nothing is pending, or keeps a small incomplete frame in a
// buffer of its size, and starts the frame's read timeout. It returns false
// if a limit closed the connection.
func (cr *connReader) park() bool {
	have := cr.w - cr.r
	if have == 0 {
		cr.drop()
		return true
	}
	cr.waitingForRest()
	cr.c.incomplete.Store(true)
	if cr.c.evicted.Load() {
		return false // the budget chose it while it read
	}
	if cr.pooled == nil || cr.class != 0 || have > smallKeep {
		return true
	}
	size := 256
	for size < 2*have {
		size *= 2
	}
	// A shrink: charged without a check, as it gives back more at once.
	cr.c.s.budget.charge(cr.c, size)
	nb := make([]byte, size)
	copy(nb, cr.buf[cr.r:cr.w])
	cr.drop()
	cr.buf, cr.r, cr.w = nb, 0, have
	return true
}

// waitingForRest starts the read timeout of the incomplete frame buffered,
// if it has not started.
func (cr *connReader) waitingForRest() {
	if cr.c.frameStart.Load() == 0 {
		cr.c.frameStart.Store(cr.c.s.now())
	}
}

// close gives back everything the reader holds.
func (cr *connReader) close() {
	cr.drop()
	cr.c.s.budget.done(cr.c)
}
