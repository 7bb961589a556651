//go:build rdma

package verbs

/*
#include <stdlib.h>
#include "shim.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// CompChannel is a completion channel (struct ibv_comp_channel): a file
// descriptor that becomes readable when a CQ attached to it, armed with
// ReqNotify, gets a completion. Its descriptor is non-blocking and
// registered with the Go runtime's poller, so Wait parks the goroutine, not
// an OS thread. Close it after every CQ attached to it.
type CompChannel struct {
	ch  *C.struct_ibv_comp_channel
	ctx *Context
	f   *os.File // a duplicate of the channel's fd, in the poller
	rc  syscall.RawConn

	interrupted atomic.Bool

	mu  sync.Mutex
	cqs map[*C.struct_ibv_cq]*CQ
}

// NewCompChannel creates a completion channel.
func (c *Context) NewCompChannel() (*CompChannel, error) {
	if c.c == nil {
		return nil, ErrClosed
	}
	ch, err := C.ibv_create_comp_channel(c.c)
	if ch == nil {
		return nil, errnoOf("ibv_create_comp_channel", err)
	}
	fail := func(e error) (*CompChannel, error) {
		C.ibv_destroy_comp_channel(ch)
		return nil, e
	}
	fd := int(ch.fd)
	if rc := C.vb_set_nonblock(ch.fd); rc != 0 {
		return fail(errOf("fcntl(O_NONBLOCK)", int(rc)))
	}
	// A duplicate for the poller, so that closing the os.File never closes
	// the descriptor libibverbs owns (ibv_destroy_comp_channel does). Both
	// share one open file description: readiness is the same.
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return fail(&Error{Op: "fcntl(F_DUPFD_CLOEXEC)", Errno: err.(unix.Errno)})
	}
	f := os.NewFile(uintptr(dup), "ibv_comp_channel")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return fail(fmt.Errorf("verbs: completion channel: %w", err))
	}
	return &CompChannel{ch: ch, ctx: c, f: f, rc: rc, cqs: map[*C.struct_ibv_cq]*CQ{}}, nil
}

// Fd is the channel's descriptor (non-blocking), for callers that poll it
// themselves; read events with TryEvent when it is readable.
func (ch *CompChannel) Fd() int { return int(ch.ch.fd) }

// TryEvent takes one completion event without waiting (ibv_get_cq_event):
// the CQ it is for, or nil when there is none. The CQ is disarmed until
// ReqNotify; the event must be acknowledged (CQ.AckEvents), which may be
// batched.
func (ch *CompChannel) TryEvent() (*CQ, error) {
	if ch.ch == nil {
		return nil, ErrClosed
	}
	p, err := C.vb_get_cq_event(ch.ch)
	if p == nil {
		if errors.Is(err, syscall.EAGAIN) {
			return nil, nil
		}
		return nil, errnoOf("ibv_get_cq_event", err)
	}
	return ch.gotEvent(p)
}

func (ch *CompChannel) gotEvent(p *C.struct_ibv_cq) (*CQ, error) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	cq := ch.cqs[p]
	if cq == nil {
		// Not ours: libibverbs hands out only CQs on this channel, so this
		// is a CQ closed meanwhile; the event is acked by nobody, which
		// ibv_destroy_cq would have waited for. Cannot happen through
		// this package (CQ.Close unregisters first, under ch.mu).
		return nil, fmt.Errorf("verbs: completion event for an unknown CQ %p", p)
	}
	cq.unacked++
	return cq, nil
}

// Wait takes one completion event, sleeping up to timeout for one
// (negative: no limit). It returns (nil, nil) when the timeout passed, and
// an error wrapping os.ErrClosed when the channel is closed meanwhile. See
// TryEvent.
func (ch *CompChannel) Wait(timeout time.Duration) (*CQ, error) {
	if ch.ch == nil {
		return nil, ErrClosed
	}
	if ch.interrupted.Load() {
		return nil, fmt.Errorf("verbs: waiting on the completion channel: interrupted: %w", os.ErrClosed)
	}
	if cq, err := ch.TryEvent(); cq != nil || err != nil || timeout == 0 {
		return cq, err
	}
	dl := time.Time{}
	if timeout > 0 {
		dl = time.Now().Add(timeout)
	}
	if err := ch.f.SetReadDeadline(dl); err != nil {
		return nil, fmt.Errorf("verbs: completion channel deadline: %w", err)
	}
	var got *C.struct_ibv_cq
	var gerr error
	err := ch.rc.Read(func(uintptr) bool {
		p, err := C.vb_get_cq_event(ch.ch)
		if p == nil {
			if errors.Is(err, syscall.EAGAIN) {
				return false
			}
			gerr = errnoOf("ibv_get_cq_event", err)
			return true
		}
		got = p
		return true
	})
	switch {
	case got != nil:
		return ch.gotEvent(got)
	case gerr != nil:
		return nil, gerr
	case errors.Is(err, os.ErrDeadlineExceeded):
		return nil, nil
	case ch.interrupted.Load():
		return nil, fmt.Errorf("verbs: waiting on the completion channel: interrupted: %w", os.ErrClosed)
	default:
		return nil, fmt.Errorf("verbs: waiting on the completion channel: %w", err)
	}
}

// Interrupt makes a Wait in progress return an error; the channel is
// unusable for waiting afterwards (Close it). It is how a poller that
// sleeps on the channel is told to stop.
func (ch *CompChannel) Interrupt() error {
	ch.interrupted.Store(true)
	return ch.f.Close()
}

// Close destroys the channel (ibv_destroy_comp_channel). Every CQ attached
// to it must be closed first.
func (ch *CompChannel) Close() error {
	if ch.ch == nil {
		return ErrClosed
	}
	ch.mu.Lock()
	n := len(ch.cqs)
	ch.mu.Unlock()
	if n > 0 {
		return fmt.Errorf("verbs: completion channel still has %d CQs", n)
	}
	ch.f.Close() // may be closed by Interrupt already
	if rc := C.ibv_destroy_comp_channel(ch.ch); rc != 0 {
		return errOf("ibv_destroy_comp_channel", int(rc))
	}
	ch.ch = nil
	return nil
}

// CQ is a completion queue (struct ibv_cq). Close it after the QPs that use
// it and before its completion channel.
type CQ struct {
	cq      *C.struct_ibv_cq
	ch      *CompChannel
	size    int
	unacked int // events taken (under ch.mu) and not acknowledged
}

// NewCQ creates a CQ with room for at least cqe completions, attached to ch
// (nil for a CQ that is only polled).
func (c *Context) NewCQ(cqe int, ch *CompChannel) (*CQ, error) {
	if c.c == nil {
		return nil, ErrClosed
	}
	var chp *C.struct_ibv_comp_channel
	if ch != nil {
		if ch.ch == nil {
			return nil, ErrClosed
		}
		chp = ch.ch
	}
	p, err := C.ibv_create_cq(c.c, C.int(cqe), nil, chp, 0)
	if p == nil {
		return nil, errnoOf(fmt.Sprintf("ibv_create_cq(%d)", cqe), err)
	}
	cq := &CQ{cq: p, ch: ch, size: int(p.cqe)}
	if ch != nil {
		ch.mu.Lock()
		ch.cqs[p] = cq
		ch.mu.Unlock()
	}
	return cq, nil
}

// Size is the number of completions the CQ holds (at least what was asked).
func (cq *CQ) Size() int { return cq.size }

// ReqNotify arms the CQ: the next completion (the next solicited one, if
// solicitedOnly) raises one event on its channel. Poll after arming to
// catch completions that arrived before it.
func (cq *CQ) ReqNotify(solicitedOnly bool) error {
	if cq.cq == nil {
		return ErrClosed
	}
	so := C.int(0)
	if solicitedOnly {
		so = 1
	}
	if rc := C.vb_req_notify(cq.cq, so); rc != 0 {
		return errOf("ibv_req_notify_cq", int(rc))
	}
	return nil
}

// AckEvents acknowledges n events taken for this CQ (ibv_ack_cq_events,
// which takes a lock: batch it). More than were taken are not acked.
func (cq *CQ) AckEvents(n int) {
	if cq.ch == nil || cq.cq == nil || n <= 0 {
		return
	}
	cq.ch.mu.Lock()
	n = min(n, cq.unacked)
	cq.unacked -= n
	cq.ch.mu.Unlock()
	if n > 0 {
		C.ibv_ack_cq_events(cq.cq, C.uint(n))
	}
}

// Poll moves up to w.Cap() completions into w with one cgo call and returns
// how many.
func (cq *CQ) Poll(w *Completions) (int, error) { return cq.PollN(w, len(w.wc)) }

// PollN is Poll for at most max completions.
func (cq *CQ) PollN(w *Completions, max int) (int, error) {
	if cq.cq == nil || w.p == nil {
		return 0, ErrClosed
	}
	max = min(max, len(w.wc))
	if max <= 0 {
		return 0, nil
	}
	n := int(C.vb_poll(cq.cq, w.p, C.int(max)))
	if n < 0 {
		return 0, errOf("ibv_poll_cq", n)
	}
	return n, nil
}

// Close destroys the CQ (ibv_destroy_cq), first acknowledging any events
// taken for it and not yet acknowledged (destroy would wait for them).
func (cq *CQ) Close() error {
	if cq.cq == nil {
		return ErrClosed
	}
	if cq.ch != nil {
		cq.ch.mu.Lock()
		n := cq.unacked
		cq.unacked = 0
		delete(cq.ch.cqs, cq.cq)
		cq.ch.mu.Unlock()
		if n > 0 {
			C.ibv_ack_cq_events(cq.cq, C.uint(n))
		}
	}
	if rc := C.ibv_destroy_cq(cq.cq); rc != 0 {
		if cq.ch != nil {
			cq.ch.mu.Lock()
			cq.ch.cqs[cq.cq] = cq
			cq.ch.mu.Unlock()
		}
		return errOf("ibv_destroy_cq", int(rc))
	}
	cq.cq = nil
	return nil
}

// Completions is an array of completions in C memory that CQ.Poll fills;
// At copies one out. It belongs to the caller and to no device object:
// Free it when done. One goroutine at a time.
type Completions struct {
	p  *C.vb_wc
	wc []C.vb_wc // view of p
}

// NewCompletions allocates room for n completions.
func NewCompletions(n int) *Completions {
	if n <= 0 {
		panic("verbs: NewCompletions needs n > 0")
	}
	p := (*C.vb_wc)(C.calloc(C.size_t(n), C.size_t(unsafe.Sizeof(C.vb_wc{}))))
	if p == nil {
		panic("verbs: out of C memory for completions")
	}
	return &Completions{p: p, wc: unsafe.Slice(p, n)}
}

// Cap is how many completions one Poll can return.
func (w *Completions) Cap() int { return len(w.wc) }

// At returns completion i of the last Poll.
func (w *Completions) At(i int) WC {
	c := &w.wc[i]
	return WC{
		WRID:      uint64(c.wr_id),
		Status:    WCStatus(c.status),
		Opcode:    WCOpcode(c.opcode),
		VendorErr: uint32(c.vendor_err),
		ByteLen:   uint32(c.byte_len),
		Imm:       uint32(c.imm),
		HasImm:    c.wc_flags&wcWithImm != 0,
		QPNum:     uint32(c.qp_num),
	}
}

// Free releases the array.
func (w *Completions) Free() {
	if w.p != nil {
		C.free(unsafe.Pointer(w.p))
		w.p, w.wc = nil, nil
	}
}
