//go:build rdma

package verbs

/*
#include "shim.h"
*/
import "C"

import (
	"fmt"
	"unsafe"
)

// SendBatch is a chain of send work requests in C memory. Go fills it with
// Send, SendImm, Write and WriteImm (plain stores into C memory, no cgo
// call) and QP.PostSend posts the whole chain with one cgo call and one
// ibv_post_send. It belongs to the caller and to no device object; Free it
// when done. One goroutine at a time. The data the SGEs name must stay
// registered and unchanged until the WR completes (except SendInline WRs,
// whose data is copied when posted).
type SendBatch struct {
	c   *C.vb_send_batch
	in  []C.vb_send_wr
	sge []C.struct_ibv_sge
	n   int
	ns  int
}

// NewSendBatch allocates a batch of up to maxWR work requests with up to
// maxSGE SGEs among them.
func NewSendBatch(maxWR, maxSGE int) *SendBatch {
	if maxWR <= 0 || maxSGE < 0 {
		panic(fmt.Sprintf("verbs: NewSendBatch(%d, %d)", maxWR, maxSGE))
	}
	c := C.vb_send_batch_new(C.int(maxWR), C.int(max(maxSGE, 1)))
	if c == nil {
		panic("verbs: out of C memory for a send batch")
	}
	return &SendBatch{c: c, in: unsafe.Slice(c.in, maxWR), sge: unsafe.Slice(c.sge, max(maxSGE, 1))}
}

// Len is the number of WRs in the batch; Cap how many fit.
func (b *SendBatch) Len() int { return b.n }

// Cap is how many WRs fit.
func (b *SendBatch) Cap() int { return len(b.in) }

// Reset empties the batch.
func (b *SendBatch) Reset() { b.n, b.ns = 0, 0 }

// Add appends one WR: op with data sge (a zero SGE for none), and for RDMA
// opcodes the remote address and key, for *WithImm ones the immediate data
// (host order). It returns false, adding nothing, when the batch is full.
func (b *SendBatch) Add(op Opcode, wrid uint64, sge SGE, remoteAddr uint64, rkey, imm uint32, flags SendFlags) bool {
	if b.n == len(b.in) {
		return false
	}
	nsge := 0
	if sge != (SGE{}) {
		if b.ns == len(b.sge) {
			return false
		}
		b.sge[b.ns] = C.struct_ibv_sge{addr: C.uint64_t(sge.Addr), length: C.uint32_t(sge.Len), lkey: C.uint32_t(sge.LKey)}
		nsge = 1
	}
	b.in[b.n] = C.vb_send_wr{
		wr_id: C.uint64_t(wrid), remote_addr: C.uint64_t(remoteAddr), rkey: C.uint32_t(rkey),
		imm: C.uint32_t(imm), opcode: C.uint32_t(op), flags: C.uint32_t(flags),
		sge_first: C.uint32_t(b.ns), num_sge: C.uint32_t(nsge),
	}
	b.ns += nsge
	b.n++
	return true
}

// AddSGE gives the last WR one more SGE (gather). It returns false when
// there is no WR or no room.
func (b *SendBatch) AddSGE(sge SGE) bool {
	if b.n == 0 || b.ns == len(b.sge) {
		return false
	}
	w := &b.in[b.n-1]
	if int(w.sge_first)+int(w.num_sge) != b.ns {
		return false // cannot happen: SGEs of the last WR are last
	}
	b.sge[b.ns] = C.struct_ibv_sge{addr: C.uint64_t(sge.Addr), length: C.uint32_t(sge.Len), lkey: C.uint32_t(sge.LKey)}
	b.ns++
	w.num_sge++
	return true
}

// Send appends a SEND of sge (consumes one receive WR at the peer).
func (b *SendBatch) Send(wrid uint64, sge SGE, flags SendFlags) bool {
	return b.Add(OpSend, wrid, sge, 0, 0, 0, flags)
}

// SendImm appends a SEND with immediate data.
func (b *SendBatch) SendImm(wrid uint64, sge SGE, imm uint32, flags SendFlags) bool {
	return b.Add(OpSendWithImm, wrid, sge, 0, 0, imm, flags)
}

// Write appends an RDMA WRITE of sge to remoteAddr (peer's memory, rkey);
// the peer sees no completion.
func (b *SendBatch) Write(wrid uint64, sge SGE, remoteAddr uint64, rkey uint32, flags SendFlags) bool {
	return b.Add(OpRDMAWrite, wrid, sge, remoteAddr, rkey, 0, flags)
}

// WriteImm appends an RDMA WRITE with immediate data: the data lands at
// remoteAddr and the peer consumes one receive WR, whose completion
// (WCRecvRDMAWithImm) carries imm and the length.
func (b *SendBatch) WriteImm(wrid uint64, sge SGE, remoteAddr uint64, rkey, imm uint32, flags SendFlags) bool {
	return b.Add(OpRDMAWriteWithImm, wrid, sge, remoteAddr, rkey, imm, flags)
}

// Free releases the batch's C memory.
func (b *SendBatch) Free() {
	if b.c != nil {
		C.vb_send_batch_free(b.c)
		b.c, b.in, b.sge, b.n, b.ns = nil, nil, nil, 0, 0
	}
}

// PostSend posts the batch's WRs as one chain (one cgo call, one
// ibv_post_send) and empties the batch. On error, posted says how many WRs
// at the front of the chain were posted (they will complete); the rest
// were not.
func (qp *QP) PostSend(b *SendBatch) (posted int, err error) {
	if qp.qp == nil || b.c == nil {
		return 0, ErrClosed
	}
	n := b.n
	b.c.n, b.c.nsge = C.int(b.n), C.int(b.ns)
	b.Reset()
	if rc := C.vb_post_send(qp.qp, b.c); rc != 0 {
		bad := int(b.c.bad)
		return bad, errOf(fmt.Sprintf("ibv_post_send(%d WRs, failed at %d)", n, bad), int(rc))
	}
	return n, nil
}

// RecvBatch is a chain of receive work requests in C memory; see
// SendBatch for ownership. The buffers must stay registered until the
// WRs complete.
type RecvBatch struct {
	c   *C.vb_recv_batch
	in  []C.vb_recv_wr
	sge []C.struct_ibv_sge
	n   int
	ns  int
}

// NewRecvBatch allocates a batch of up to maxWR receive WRs with up to
// maxSGE SGEs among them.
func NewRecvBatch(maxWR, maxSGE int) *RecvBatch {
	if maxWR <= 0 || maxSGE < 0 {
		panic(fmt.Sprintf("verbs: NewRecvBatch(%d, %d)", maxWR, maxSGE))
	}
	c := C.vb_recv_batch_new(C.int(maxWR), C.int(max(maxSGE, 1)))
	if c == nil {
		panic("verbs: out of C memory for a receive batch")
	}
	return &RecvBatch{c: c, in: unsafe.Slice(c.in, maxWR), sge: unsafe.Slice(c.sge, max(maxSGE, 1))}
}

// Len is the number of WRs in the batch.
func (b *RecvBatch) Len() int { return b.n }

// Cap is how many WRs fit.
func (b *RecvBatch) Cap() int { return len(b.in) }

// Reset empties the batch.
func (b *RecvBatch) Reset() { b.n, b.ns = 0, 0 }

// Add appends a receive WR into sge (a zero SGE for a WR that takes no
// data: enough for RDMA WRITE with immediate, whose data goes where the
// writer says). It returns false, adding nothing, when the batch is full.
func (b *RecvBatch) Add(wrid uint64, sge SGE) bool {
	if b.n == len(b.in) {
		return false
	}
	nsge := 0
	if sge != (SGE{}) {
		if b.ns == len(b.sge) {
			return false
		}
		b.sge[b.ns] = C.struct_ibv_sge{addr: C.uint64_t(sge.Addr), length: C.uint32_t(sge.Len), lkey: C.uint32_t(sge.LKey)}
		nsge = 1
	}
	b.in[b.n] = C.vb_recv_wr{wr_id: C.uint64_t(wrid), sge_first: C.uint32_t(b.ns), num_sge: C.uint32_t(nsge)}
	b.ns += nsge
	b.n++
	return true
}

// Free releases the batch's C memory.
func (b *RecvBatch) Free() {
	if b.c != nil {
		C.vb_recv_batch_free(b.c)
		b.c, b.in, b.sge, b.n, b.ns = nil, nil, nil, 0, 0
	}
}

// PostRecv posts the batch's WRs as one chain and empties the batch; see
// PostSend for posted.
func (qp *QP) PostRecv(b *RecvBatch) (posted int, err error) {
	if qp.qp == nil || b.c == nil {
		return 0, ErrClosed
	}
	n := b.n
	b.c.n, b.c.nsge = C.int(b.n), C.int(b.ns)
	b.Reset()
	if rc := C.vb_post_recv(qp.qp, b.c); rc != 0 {
		bad := int(b.c.bad)
		return bad, errOf(fmt.Sprintf("ibv_post_recv(%d WRs, failed at %d)", n, bad), int(rc))
	}
	return n, nil
}
