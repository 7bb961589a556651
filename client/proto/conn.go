package proto

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/vestalabs/vesta/internal/nbwrite"
)

// ErrBadPreamble means a connection did not start with Preamble.
var ErrBadPreamble = errors.New("vesta proto: connection does not start with the vesta client preamble (wrong port or protocol?)")

// ReadPreamble reads the first 8 bytes of a connection and checks them: the
// magic, and a version this package speaks (OldestVersion to
// CurrentVersion).
func ReadPreamble(r io.Reader) error {
	_, err := ReadPreambleVersion(r)
	return err
}

// ReadPreambleVersion is ReadPreamble that also returns the version the
// preamble named, which says how to answer the connection (Version.HasSlots).
// A version outside OldestVersion..CurrentVersion is an error that names
// both sides' versions.
func ReadPreambleVersion(r io.Reader) (Version, error) {
	var b [len(Preamble)]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return 0, fmt.Errorf("vesta proto: reading the preamble: %w", err)
	}
	if b[0] != Preamble[0] || b[1] != Preamble[1] || b[2] != Preamble[2] || b[3] != Preamble[3] ||
		b[4] != Preamble[4] || b[5] != Preamble[5] {
		return 0, ErrBadPreamble
	}
	v := Version(b[6])<<8 | Version(b[7])
	if v < OldestVersion || v > CurrentVersion {
		return v, &VersionError{Client: v}
	}
	return v, nil
}

// VersionError is a preamble's version that this side does not speak.
type VersionError struct {
	Client Version // the version the preamble named
}

func (e *VersionError) Error() string {
	what := "upgrade the client"
	if e.Client > CurrentVersion {
		what = "upgrade the server"
	}
	return fmt.Sprintf("vesta proto: client protocol version %v, this server speaks %v to %v: %s",
		e.Client, OldestVersion, CurrentVersion, what)
}

// Reader reads frames from a stream. Frames that fit its buffer are returned
// in place, without copying.
type Reader struct {
	br       *bufio.Reader
	maxFrame int
	discard  int    // bytes of the frame returned last, still in br
	big      []byte // frames larger than br's buffer
}

// NewReader reads frames of at most maxFrame bytes (0: DefaultMaxFrameSize)
// from r through a buffer of bufSize bytes (0: 64 KiB).
func NewReader(r io.Reader, bufSize, maxFrame int) *Reader {
	if bufSize <= 0 {
		bufSize = 64 << 10
	}
	if maxFrame <= 0 {
		maxFrame = DefaultMaxFrameSize
	}
	return &Reader{br: bufio.NewReaderSize(r, bufSize), maxFrame: maxFrame}
}

// Next returns the next frame's body, valid until the next call of Next. At
// a clean end of stream between frames it returns io.EOF; a stream that ends
// inside a frame gives io.ErrUnexpectedEOF; a frame length of zero or above
// the maximum gives a *DecodeError (the stream cannot be resynchronized
// after it).
func (r *Reader) Next() ([]byte, error) {
	if r.discard > 0 {
		if _, err := r.br.Discard(r.discard); err != nil {
			return nil, err // cannot happen: the bytes were buffered
		}
		r.discard = 0
	}
	hdr, err := r.br.Peek(lenSize)
	if err != nil {
		if errors.Is(err, io.EOF) && len(hdr) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	n := binary.LittleEndian.Uint32(hdr)
	if n == 0 {
		return nil, &DecodeError{"frame length", "zero"}
	}
	if uint64(n) > uint64(r.maxFrame) {
		return nil, &DecodeError{"frame length", fmt.Sprintf("%d above the limit %d", n, r.maxFrame)}
	}
	total := lenSize + int(n)
	if total <= r.br.Size() {
		b, err := r.br.Peek(total)
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		r.discard = total
		return b[lenSize:], nil
	}
	if _, err := r.br.Discard(lenSize); err != nil {
		return nil, err
	}
	if cap(r.big) < int(n) {
		r.big = make([]byte, n)
	}
	body := r.big[:n]
	if _, err := io.ReadFull(r.br, body); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return body, nil
}

// Buffered returns how many bytes past the frame returned last are already
// buffered: while it is at least a frame's worth, Next will not block.
func (r *Reader) Buffered() int { return r.br.Buffered() - r.discard }

// HasFrame reports whether a whole frame is buffered, so that Next returns
// it without reading from the stream.
func (r *Reader) HasFrame() bool {
	buffered := r.Buffered()
	if buffered < lenSize {
		return false
	}
	hdr, err := r.br.Peek(r.discard + lenSize)
	if err != nil {
		return false
	}
	n := binary.LittleEndian.Uint32(hdr[r.discard:])
	return uint64(buffered) >= uint64(lenSize)+uint64(n)
}

// Writer gathers frames appended by many goroutines and writes everything
// queued with one Write call per wake-up of its own goroutine: under load,
// many frames per system call, and no goroutine per frame.
type Writer struct {
	w       io.Writer
	timeout time.Duration
	onError func(error)

	mu        sync.Mutex
	room      sync.Cond // signalled when the writer takes the buffer
	buf       []byte    // frames queued, not yet handed to w
	limit     int
	queued    int       // see Queued
	onWritten func(int) // WriterOptions.OnWritten
	err       error
	closing   bool
	// writing is the single-writer token: the goroutine or an appender
	// writing directly (see append). lastWrite is the size of the last
	// write, which says whether the stream is busy. blockedSince is when
	// the goroutine's write under way began (zero: none; see Writing).
	writing      bool
	lastWrite    int
	direct       int // direct writes made, for tests
	blockedSince time.Time

	// For direct writes: w's raw descriptor (nil if it has none), a spare
	// buffer, and the write's arguments and callback, built once so that a
	// direct write allocates nothing. Guarded by the token.
	raw     syscall.RawConn
	dspare  []byte
	dbuf    []byte
	dn      int
	derr    error
	writeFn func(fd uintptr) bool

	signal chan struct{}
	quit   chan struct{}
	done   chan struct{}
}

// WriterOptions configure a Writer.
type WriterOptions struct {
	// WriteTimeout bounds one Write when w has SetWriteDeadline (a
	// net.Conn); 0: no bound.
	WriteTimeout time.Duration
	// MaxQueued bounds the bytes queued: appends wait while more are (0: 16 MiB).
	MaxQueued int
	// OnError is called once, from the writer's goroutine, when a Write fails.
	OnError func(error)
	// DirectWrites lets WriteRequestAlone and WriteResponseAlone write a
	// lone frame to an idle stream themselves, one non-blocking system call
	// on the caller's goroutine, instead of waking the writer's goroutine.
	// It needs w to be a net.Conn (a syscall.Conn) on a Unix system.
	DirectWrites bool
	// OnWritten, if set, is called with the bytes of queued frames that
	// leave the queue (see Queued): n written, once the write of them
	// returns, or n dropped after a failed write. It is called from the
	// writer's goroutine, or an appender writing directly, without the
	// Writer's lock; it must be quick.
	OnWritten func(n int)
}

// keepBuf is the largest buffer a Writer keeps for reuse once nothing is
// queued: a burst's larger buffer is let go when the stream goes idle, so
// an idle connection does not hold the memory of its largest burst (a
// 1 MiB response, say) for as long as it stays open. Smaller ones are kept:
// a loaded stream that empties after each write would otherwise grow a
// new buffer for every burst.
const keepBuf = 64 << 10

// NewWriter starts a Writer's goroutine on w. Close stops it.
func NewWriter(w io.Writer, opts WriterOptions) *Writer {
	if opts.MaxQueued <= 0 {
		opts.MaxQueued = 16 << 20
	}
	wr := &Writer{w: w, timeout: opts.WriteTimeout, onError: opts.OnError, limit: opts.MaxQueued, onWritten: opts.OnWritten,
		signal: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{})}
	wr.room.L = &wr.mu
	if sc, ok := w.(syscall.Conn); ok && nbwrite.Supported && opts.DirectWrites {
		if raw, err := sc.SyscallConn(); err == nil {
			wr.raw = raw
			wr.writeFn = func(fd uintptr) bool {
				wr.dn, wr.derr = nbwrite.Once(fd, wr.dbuf)
				return true // one attempt: never wait for the socket
			}
		}
	}
	go wr.run()
	return wr
}

// errWriterClosed is returned by appends after Close.
var errWriterClosed = errors.New("vesta proto: writer closed")

// WriteRequest queues r's frame. It fails once a Write has failed or the
// Writer is closed.
func (w *Writer) WriteRequest(r *Request) error { return w.append(r, nil, false) }

// WriteResponse queues r's frame. It fails once a Write has failed or the
// Writer is closed.
func (w *Writer) WriteResponse(r *Response) error { return w.append(nil, r, false) }

// WriteRequestAlone is WriteRequest for a frame no other will follow soon
// (the caller has nothing else in flight on this stream): with
// WriterOptions.DirectWrites, when nothing is queued or being written, the
// frame is written at once on the caller's goroutine, one non-blocking system
// call, instead of by the writer's goroutine after a wake-up. Frames that
// others follow must not use it: written one by one, they would reach the
// peer one by one, and it batches what arrives together.
func (w *Writer) WriteRequestAlone(r *Request) error { return w.append(r, nil, true) }

// WriteResponseAlone is WriteResponse for a frame no other will follow soon;
// see WriteRequestAlone.
func (w *Writer) WriteResponseAlone(r *Response) error { return w.append(nil, r, true) }

// append queues the frame of req, or else of resp; alone: see
// WriteRequestAlone.
func (w *Writer) append(req *Request, resp *Response, alone bool) error {
	w.mu.Lock()
	for len(w.buf) >= w.limit && w.err == nil && !w.closing {
		w.room.Wait()
	}
	if err := w.errLocked(); err != nil {
		w.mu.Unlock()
		return err
	}
	n := len(w.buf)
	wasEmpty := n == 0
	if req != nil {
		w.buf = AppendRequest(w.buf, req)
	} else {
		w.buf = AppendResponse(w.buf, resp)
	}
	w.queued += len(w.buf) - n
	if alone && wasEmpty && !w.writing && w.raw != nil {
		// Idle stream and a lone frame: write it here, sparing the wake-up
		// of the writer's goroutine on an unloaded request's path
		// (docs/PERFORMANCE.md step 20).
		w.writeDirectLocked()
		return nil
	}
	w.mu.Unlock()
	if wasEmpty {
		w.wake()
	}
	return nil
}

func (w *Writer) wake() {
	select {
	case w.signal <- struct{}{}:
	default:
	}
}

// writeDirectLocked writes the queued frames with one non-blocking write,
// holding the token; called with mu held, returns with it released.
// Whatever the write leaves (a full socket buffer, a partial write, an
// error) goes back in front of the queue for the writer's goroutine, which
// may wait for the socket and reports errors.
func (w *Writer) writeDirectLocked() {
	w.writing = true
	out := w.buf
	w.buf = w.dspare[:0]
	w.dspare = nil
	w.mu.Unlock()

	w.dbuf, w.dn, w.derr = out, 0, nil
	err := w.raw.Write(w.writeFn)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		// A deadline the goroutine set for an earlier write has passed;
		// this write cannot block, and the goroutine sets its own.
		if d, ok := w.w.(deadliner); ok {
			_ = d.SetWriteDeadline(time.Time{})
		}
		_ = w.raw.Write(w.writeFn)
	}
	n := w.dn
	w.dbuf, w.dn, w.derr = nil, 0, nil

	w.mu.Lock()
	w.writing = false
	w.lastWrite = n
	w.direct++
	w.queued -= n
	if n < len(out) {
		// Not all written (a full socket buffer, or an error, which the
		// goroutine's own write then meets and reports): the rest goes
		// first, by the goroutine.
		rest := append(make([]byte, 0, len(out)-n+len(w.buf)), out[n:]...)
		w.buf = append(rest, w.buf...)
	} else if cap(out) <= keepBuf {
		w.dspare = out[:0]
	}
	more := len(w.buf) > 0
	w.mu.Unlock()
	w.room.Broadcast()
	if n > 0 && w.onWritten != nil {
		w.onWritten(n)
	}
	if more {
		w.wake()
	}
}

// Queued returns the bytes of the frames queued and not yet written: those
// waiting and those of a write under way (they are memory until it returns).
func (w *Writer) Queued() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.queued
}

// Writing returns how long the writer's goroutine has been in its write
// under way, 0 if it is in none: a peer that reads nothing holds a write up
// to WriteTimeout. (A direct write never waits.)
func (w *Writer) Writing() time.Duration {
	w.mu.Lock()
	since := w.blockedSince
	w.mu.Unlock()
	if since.IsZero() {
		return 0
	}
	return time.Since(since)
}

func (w *Writer) errLocked() error {
	if w.err != nil {
		return w.err
	}
	if w.closing {
		return errWriterClosed
	}
	return nil
}

// busyWriteBytes is the write size above which the writer counts the
// stream as busy and batches (a handful of small frames).
const busyWriteBytes = 512

type deadliner interface{ SetWriteDeadline(time.Time) error }

func (w *Writer) run() {
	defer close(w.done)
	var spare []byte
	for {
		quitting := false
		select {
		case <-w.signal:
		case <-w.quit:
			quitting = true // flush what is queued, then stop
		}
		// While busy (the previous write carried several frames' worth),
		// let the goroutines about to append do so first: that turns many
		// small writes into one. While idle, write at once: the yield
		// would add the rest of the waker's work to a lone frame's latency.
		w.mu.Lock()
		busy := w.lastWrite > busyWriteBytes
		w.mu.Unlock()
		if busy {
			runtime.Gosched()
		}
		w.mu.Lock()
		if w.writing {
			// An appender is writing directly; it wakes this goroutine if
			// it leaves anything behind.
			w.mu.Unlock()
			if quitting {
				w.waitDirect()
				w.mu.Lock()
			} else {
				continue
			}
		}
		out := w.buf
		w.buf = spare[:0]
		if len(out) > 0 {
			w.writing = true
			w.lastWrite = len(out)
			w.blockedSince = time.Now()
		}
		w.mu.Unlock()
		w.room.Broadcast()
		if len(out) > 0 {
			if d, ok := w.w.(deadliner); ok && w.timeout > 0 {
				_ = d.SetWriteDeadline(time.Now().Add(w.timeout))
			}
			_, err := w.w.Write(out)
			w.mu.Lock()
			w.writing = false
			w.blockedSince = time.Time{}
			if err != nil {
				w.err = fmt.Errorf("vesta proto: write: %w", err)
				dropped := w.queued
				w.queued = 0
				w.buf = nil
				w.mu.Unlock()
				w.room.Broadcast()
				if w.onWritten != nil {
					w.onWritten(dropped)
				}
				if w.onError != nil {
					w.onError(err)
				}
				return
			}
			w.queued -= len(out)
			again := len(w.buf) > 0
			if !again && cap(w.buf) > keepBuf {
				w.buf = nil // idle: see keepBuf
			}
			w.mu.Unlock()
			if w.onWritten != nil {
				w.onWritten(len(out))
			}
			if again && !quitting {
				// Appends that came while this write ran found the token
				// taken and left their wake-up for this goroutine.
				w.wake()
			} else if cap(out) > keepBuf {
				out = nil // idle: see keepBuf
			}
		}
		if cap(out) > 4<<20 {
			out = nil // do not keep a burst's buffer forever
		}
		spare = out
		if quitting {
			return
		}
	}
}

// Close flushes the frames queued so far (a Write that blocks is bounded
// only by WriteTimeout, or by closing the stream) and stops the writer's
// goroutine. Appends fail afterwards. Close is idempotent.
func (w *Writer) Close() {
	w.mu.Lock()
	already := w.closing
	w.closing = true
	w.mu.Unlock()
	w.room.Broadcast()
	if !already {
		close(w.quit)
	}
	<-w.done
}

// waitDirect waits, without the lock, for an appender's direct write to
// finish: it never blocks on the socket, so this is short.
func (w *Writer) waitDirect() {
	for {
		w.mu.Lock()
		writing := w.writing
		w.mu.Unlock()
		if !writing {
			return
		}
		runtime.Gosched()
	}
}
