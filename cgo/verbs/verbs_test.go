//go:build rdma

package verbs

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// The tests that need a device skip without one, unless
// VESTA_RDMA_REQUIRE=1 (set by tools/vmlab test-rdma, where a missing
// device is a failure). VESTA_RDMA_DEVICE names the device ("" = first).
// Timeouts are generous: under QEMU's TCG a round trip can take
// milliseconds.
const waitLimit = 60 * time.Second

func openDevice(t *testing.T) *Context {
	t.Helper()
	skip := func(format string, args ...any) {
		t.Helper()
		msg := fmt.Sprintf(format, args...)
		if os.Getenv("VESTA_RDMA_REQUIRE") == "1" {
			t.Fatalf("%s (VESTA_RDMA_REQUIRE=1)", msg)
		}
		t.Skipf("%s: run them in the soft-RoCE guest, `go run ./tools/vmlab test-rdma`", msg)
	}
	devs, err := Devices()
	if err != nil {
		skip("no RDMA devices: %v", err)
	}
	if len(devs) == 0 {
		skip("no RDMA device")
	}
	ctx, err := Open(os.Getenv("VESTA_RDMA_DEVICE"))
	if err != nil {
		skip("cannot open an RDMA device: %v", err)
	}
	t.Cleanup(func() {
		if err := ctx.Close(); err != nil {
			t.Errorf("Context.Close: %v", err)
		}
	})
	pa, err := ctx.QueryPort(1)
	if err != nil {
		t.Fatal(err)
	}
	if pa.State != PortActive {
		skip("%s port 1 is %v, not ACTIVE", ctx.Name(), pa.State)
	}
	return ctx
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// side is one end of a loopback pair: a QP with one CQ for sends and
// receives (on a completion channel) and 1 MiB of registered memory.
type side struct {
	qp  *QP
	cq  *CQ
	ch  *CompChannel
	reg *Region
	mr  *MR
	ep  Endpoint
	wc  *Completions
}

type pair struct {
	ctx  *Context
	pd   *PD
	path Path
	a, b *side
}

const fullAccess = AccessLocalWrite | AccessRemoteWrite | AccessRemoteRead

// newPair connects two RC QPs of one device to each other. Receives posted
// by the caller go in after; RNR retries (infinite by default) cover the
// gap. Everything is freed in the documented order at cleanup.
func newPair(t *testing.T, ctx *Context, cfg QPConfig) *pair {
	t.Helper()
	gidx, gid, err := ctx.RoCEv2IPv4GID(1)
	must(t, err)
	t.Logf("%s: RoCE v2 GID index %d: %v", ctx.Name(), gidx, gid)
	pd, err := ctx.AllocPD()
	must(t, err)
	p := &pair{ctx: ctx, pd: pd, path: Path{Port: 1, GIDIndex: gidx}}
	mk := func(psn uint32) *side {
		s := &side{}
		s.ch, err = ctx.NewCompChannel()
		must(t, err)
		s.cq, err = ctx.NewCQ(1024, s.ch)
		must(t, err)
		c := cfg
		c.SendCQ, c.RecvCQ = s.cq, s.cq
		s.qp, err = pd.NewRCQP(c)
		must(t, err)
		s.reg, err = AllocRegion(1 << 20)
		must(t, err)
		s.mr, err = pd.Register(s.reg, fullAccess)
		must(t, err)
		s.ep, err = s.qp.LocalEndpoint(p.path, psn)
		must(t, err)
		s.wc = NewCompletions(64)
		return s
	}
	p.a, p.b = mk(0x1000), mk(0x2000)
	t.Cleanup(func() {
		for _, s := range []*side{p.a, p.b} {
			if err := s.qp.Close(); err != nil {
				t.Errorf("QP.Close: %v", err)
			}
		}
		for _, s := range []*side{p.a, p.b} {
			for _, err := range []error{s.mr.Deregister(), s.reg.Free(), s.cq.Close(), s.ch.Close()} {
				if err != nil {
					t.Errorf("cleanup: %v", err)
				}
			}
			s.wc.Free()
		}
		if err := pd.Close(); err != nil {
			t.Errorf("PD.Close: %v", err)
		}
	})
	must(t, p.a.qp.Connect(p.path, fullAccess, p.a.ep, p.b.ep))
	must(t, p.b.qp.Connect(p.path, fullAccess, p.b.ep, p.a.ep))
	for _, s := range []*side{p.a, p.b} {
		st, err := s.qp.State()
		must(t, err)
		if st != QPRTS {
			t.Fatalf("QP %#x is %v after Connect, want RTS", s.qp.Num(), st)
		}
	}
	return p
}

// pollStats counts the cgo calls a collection took.
type pollStats struct {
	calls, nonEmpty, maxPerCall int
}

// collect polls cq until n completions arrived (or waitLimit passed),
// sleeping between empty polls so that completions pile up.
func collect(t *testing.T, cq *CQ, w *Completions, n int, st *pollStats) []WC {
	t.Helper()
	var out []WC
	deadline := time.Now().Add(waitLimit)
	for len(out) < n {
		k, err := cq.PollN(w, n-len(out))
		must(t, err)
		if st != nil {
			st.calls++
			if k > 0 {
				st.nonEmpty++
				st.maxPerCall = max(st.maxPerCall, k)
			}
		}
		for i := range k {
			out = append(out, w.At(i))
		}
		if k == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("got %d of %d completions in %v", len(out), n, waitLimit)
			}
			time.Sleep(time.Millisecond)
		}
	}
	return out
}

func TestDeviceAndPort(t *testing.T) {
	ctx := openDevice(t)
	devs, err := Devices()
	must(t, err)
	found := false
	for _, d := range devs {
		t.Logf("device %s guid %#x node type %d transport %d", d.Name, d.GUID, d.NodeType, d.TransportType)
		found = found || d.Name == ctx.Name()
	}
	if !found {
		t.Fatalf("the open device %s is not among %v", ctx.Name(), devs)
	}
	pa, err := ctx.QueryPort(1)
	must(t, err)
	t.Logf("port 1: %+v", pa)
	if pa.ActiveMTU.Bytes() == 0 || pa.GIDTableLen == 0 {
		t.Fatalf("port 1: implausible attributes %+v", pa)
	}
	idx, gid, err := ctx.RoCEv2IPv4GID(1)
	must(t, err)
	if !gid.IsIPv4Mapped() {
		t.Fatalf("GID %d %v is not IPv4-mapped", idx, gid)
	}
	if pa.LinkLayer == LinkLayerEthernet {
		g, typ, err := ctx.QueryGID(1, idx)
		must(t, err)
		if g != gid || (typ != GIDTypeRoCEv2 && typ != GIDTypeUnknown) {
			t.Fatalf("QueryGID(1, %d) = %v/%v, RoCEv2IPv4GID said %v", idx, g, typ, gid)
		}
	}
	if _, err := ctx.QueryPort(200); err == nil {
		t.Error("QueryPort(200) succeeded")
	} else if !strings.Contains(err.Error(), "ibv_query_port") {
		t.Errorf("QueryPort(200): %v does not name the call", err)
	}
	if _, err := Open("no-such-device"); err == nil {
		t.Error(`Open("no-such-device") succeeded`)
	} else {
		t.Logf("Open(no-such-device): %v", err)
	}
}

func TestRegionAndMR(t *testing.T) {
	ctx := openDevice(t)
	pd, err := ctx.AllocPD()
	must(t, err)
	defer func() { must(t, pd.Close()) }()
	r, err := AllocRegion(10000)
	must(t, err)
	if r.Len() != 12288 || len(r.Bytes()) != r.Len() || r.Addr()%4096 != 0 {
		t.Fatalf("region: len %d addr %#x", r.Len(), r.Addr())
	}
	mr, err := pd.RegisterRange(r, 4096, 4096, AccessLocalWrite|AccessRemoteWrite)
	must(t, err)
	if mr.Addr() != r.Addr()+4096 || mr.Len() != 4096 || len(mr.Bytes()) != 4096 {
		t.Fatalf("MR: addr %#x len %d", mr.Addr(), mr.Len())
	}
	mr.Bytes()[0] = 0x5a
	if r.Bytes()[4096] != 0x5a {
		t.Fatal("MR.Bytes is not a view of the region")
	}
	if sge := mr.SGE(10, 20); sge.Addr != mr.Addr()+10 || sge.Len != 20 || sge.LKey != mr.LKey() {
		t.Fatalf("SGE %+v", sge)
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("SGE outside the MR did not panic")
			}
		}()
		mr.SGE(4000, 200)
	}()
	if _, err := pd.RegisterRange(r, 8192, 8192, AccessLocalWrite); err == nil {
		t.Error("registering past the region's end succeeded")
	}
	// Remote write without local write is refused by the verbs.
	if _, err := pd.Register(r, AccessRemoteWrite); err == nil {
		t.Error("AccessRemoteWrite without AccessLocalWrite registered")
	} else if !strings.Contains(err.Error(), "ibv_reg_mr") {
		t.Errorf("error %v does not name ibv_reg_mr", err)
	}
	if err := pd.Close(); err == nil {
		t.Fatal("PD.Close with a registered MR succeeded")
	}
	// The device may write a registered region: Free refuses to unmap it.
	if err := r.Free(); err == nil || !strings.Contains(err.Error(), "registered") {
		t.Fatalf("Free with a registered MR: %v", err)
	}
	mr.Bytes()[1] = 1 // still mapped
	must(t, mr.Deregister())
	if err := mr.Deregister(); !errors.Is(err, ErrClosed) {
		t.Errorf("second Deregister: %v", err)
	}
	must(t, r.Free())
	if err := r.Free(); !errors.Is(err, ErrClosed) {
		t.Errorf("second Free: %v", err)
	}
}

func TestSendRecv(t *testing.T) {
	p := newPair(t, openDevice(t), QPConfig{})
	const n, slot = 8, 4096
	rb := NewRecvBatch(n, n)
	defer rb.Free()
	for i := range n {
		if !rb.Add(uint64(100+i), p.b.mr.SGE(i*slot, slot)) {
			t.Fatal("recv batch full")
		}
	}
	if k, err := p.b.qp.PostRecv(rb); err != nil || k != n {
		t.Fatalf("PostRecv: %d, %v", k, err)
	}
	sb := NewSendBatch(n, n)
	defer sb.Free()
	var want [][]byte
	for i := range n {
		msg := bytes.Repeat([]byte{byte('a' + i)}, 1+i*300)
		copy(p.a.mr.Bytes()[i*slot:], msg)
		want = append(want, msg)
		ok := false
		if i == n-1 {
			ok = sb.SendImm(uint64(i), p.a.mr.SGE(i*slot, len(msg)), 0xfeed0000+uint32(i), SendSignaled)
		} else {
			ok = sb.Send(uint64(i), p.a.mr.SGE(i*slot, len(msg)), SendSignaled)
		}
		if !ok {
			t.Fatal("send batch full")
		}
	}
	if k, err := p.a.qp.PostSend(sb); err != nil || k != n {
		t.Fatalf("PostSend: %d, %v", k, err)
	}
	recvs := collect(t, p.b.cq, p.b.wc, n, nil)
	for i, wc := range recvs {
		must(t, wc.Err())
		if wc.Opcode != WCRecv || wc.WRID != uint64(100+i) || int(wc.ByteLen) != len(want[i]) || wc.QPNum != p.b.qp.Num() {
			t.Fatalf("receive %d: %+v", i, wc)
		}
		if got := p.b.mr.Bytes()[i*slot : i*slot+int(wc.ByteLen)]; !bytes.Equal(got, want[i]) {
			t.Fatalf("receive %d: data differs", i)
		}
		if hasImm := i == n-1; wc.HasImm != hasImm || (hasImm && wc.Imm != 0xfeed0000+uint32(i)) {
			t.Fatalf("receive %d: imm %v %#x", i, wc.HasImm, wc.Imm)
		}
	}
	sends := collect(t, p.a.cq, p.a.wc, n, nil)
	for i, wc := range sends {
		if wc.Err() != nil || wc.Opcode != WCSend || wc.WRID != uint64(i) {
			t.Fatalf("send completion %d: %+v", i, wc)
		}
	}
}

func TestWriteWithImmIntoRing(t *testing.T) {
	p := newPair(t, openDevice(t), QPConfig{})
	// B's ring is its whole MR; A writes records back to back and tells B
	// each record's offset in the immediate data. B's receive WRs take no
	// data: the write says where it goes.
	const n = 32
	rb := NewRecvBatch(n, 1)
	defer rb.Free()
	for i := range n {
		rb.Add(uint64(i), SGE{})
	}
	_, err := p.b.qp.PostRecv(rb)
	must(t, err)
	sb := NewSendBatch(n, n)
	defer sb.Free()
	type rec struct{ off, n int }
	var recs []rec
	off := 0
	for i := range n {
		m := 17 + 131*i
		for j := range m {
			p.a.mr.Bytes()[off+j] = byte(i + j)
		}
		recs = append(recs, rec{off, m})
		flags := SendFlags(0)
		if i == n-1 {
			flags = SendSignaled // one completion covers the chain
		}
		sb.WriteImm(uint64(i), p.a.mr.SGE(off, m), p.b.mr.Addr()+uint64(off), p.b.mr.RKey(), uint32(off), flags)
		off += (m + 63) &^ 63
	}
	_, err = p.a.qp.PostSend(sb)
	must(t, err)
	got := collect(t, p.b.cq, p.b.wc, n, nil)
	for i, wc := range got {
		must(t, wc.Err())
		if wc.Opcode != WCRecvRDMAWithImm || !wc.HasImm || int(wc.Imm) != recs[i].off || int(wc.ByteLen) != recs[i].n {
			t.Fatalf("completion %d: %+v, want imm %d len %d", i, wc, recs[i].off, recs[i].n)
		}
		r := recs[i]
		if !bytes.Equal(p.b.mr.Bytes()[r.off:r.off+r.n], p.a.mr.Bytes()[r.off:r.off+r.n]) {
			t.Fatalf("record %d differs in the ring", i)
		}
	}
	s := collect(t, p.a.cq, p.a.wc, 1, nil)
	if s[0].Err() != nil || s[0].WRID != n-1 || s[0].Opcode != WCRDMAWrite {
		t.Fatalf("the signaled write's completion: %+v", s[0])
	}
}

func TestBatchOfManyWRs(t *testing.T) {
	const n = 256
	p := newPair(t, openDevice(t), QPConfig{MaxSendWR: n, MaxRecvWR: n, MaxInline: 64})
	if c := p.a.qp.Caps(); c.MaxSendWR < n || c.MaxRecvWR < n {
		t.Fatalf("caps %+v", c)
	}
	rb := NewRecvBatch(n, n)
	defer rb.Free()
	for i := range n {
		rb.Add(uint64(i), p.b.mr.SGE(i*64, 64))
	}
	if k, err := p.b.qp.PostRecv(rb); err != nil || k != n {
		t.Fatalf("PostRecv of %d in one call: %d, %v", n, k, err)
	}
	sb := NewSendBatch(n, n)
	defer sb.Free()
	for i := range n {
		msg := fmt.Appendf(nil, "message %03d", i)
		copy(p.a.mr.Bytes()[i*64:], msg)
		flags := SendSignaled
		if i%2 == 0 {
			flags |= SendInline // data copied at post time
		}
		sb.Send(uint64(i), p.a.mr.SGE(i*64, len(msg)), flags)
	}
	if sb.Send(999, SGE{}, 0) {
		t.Fatal("a full batch took one more WR")
	}
	t0 := time.Now()
	if k, err := p.a.qp.PostSend(sb); err != nil || k != n {
		t.Fatalf("PostSend of %d in one call: %d, %v", n, k, err)
	}
	w := NewCompletions(n)
	defer w.Free()
	var st pollStats
	got := collect(t, p.b.cq, w, n, &st)
	for i, wc := range got {
		want := fmt.Sprintf("message %03d", i)
		if wc.Err() != nil || wc.WRID != uint64(i) || string(p.b.mr.Bytes()[i*64:i*64+int(wc.ByteLen)]) != want {
			t.Fatalf("receive %d: %+v %q", i, wc, p.b.mr.Bytes()[i*64:i*64+int(wc.ByteLen)])
		}
	}
	var sst pollStats
	sent := collect(t, p.a.cq, w, n, &sst)
	for i, wc := range sent {
		if wc.Err() != nil || wc.WRID != uint64(i) {
			t.Fatalf("send completion %d: %+v", i, wc)
		}
	}
	t.Logf("%d sends in 1 post call in %v; receiver polled %d times (%d non-empty, up to %d a call), sender %d times (%d non-empty, up to %d a call)",
		n, time.Since(t0), st.calls, st.nonEmpty, st.maxPerCall, sst.calls, sst.nonEmpty, sst.maxPerCall)
	if st.maxPerCall < 2 && sst.maxPerCall < 2 {
		t.Fatalf("no poll call returned more than one completion")
	}
	if st.nonEmpty+sst.nonEmpty >= 2*n {
		t.Fatalf("%d non-empty poll calls for %d completions: not batched", st.nonEmpty+sst.nonEmpty, 2*n)
	}
}

func TestCQEventSleepWake(t *testing.T) {
	p := newPair(t, openDevice(t), QPConfig{})
	rb := NewRecvBatch(4, 4)
	defer rb.Free()
	for i := range 4 {
		rb.Add(uint64(i), p.b.mr.SGE(i*128, 128))
	}
	_, err := p.b.qp.PostRecv(rb)
	must(t, err)

	must(t, p.b.cq.ReqNotify(false))
	// Nothing happened yet: a short wait times out.
	if cq, err := p.b.ch.Wait(50 * time.Millisecond); cq != nil || err != nil {
		t.Fatalf("Wait on an idle CQ: %v, %v", cq, err)
	}
	sb := NewSendBatch(1, 1)
	defer sb.Free()
	copy(p.a.mr.Bytes(), "wake up")

	type result struct {
		cq  *CQ
		err error
		at  time.Time
	}
	done := make(chan result, 1)
	go func() {
		cq, err := p.b.ch.Wait(waitLimit)
		done <- result{cq, err, time.Now()}
	}()
	time.Sleep(100 * time.Millisecond) // the waiter is asleep by now
	select {
	case r := <-done:
		t.Fatalf("Wait returned before anything was sent: %+v", r)
	default:
	}
	posted := time.Now()
	sb.Send(1, p.a.mr.SGE(0, 7), SendSignaled)
	_, err = p.a.qp.PostSend(sb)
	must(t, err)
	r := <-done
	if r.err != nil || r.cq != p.b.cq {
		t.Fatalf("Wait: cq %p (want %p), %v", r.cq, p.b.cq, r.err)
	}
	t.Logf("woken %v after the post", r.at.Sub(posted))
	p.b.cq.AckEvents(1)
	got := collect(t, p.b.cq, p.b.wc, 1, nil)
	if got[0].Err() != nil || string(p.b.mr.Bytes()[:got[0].ByteLen]) != "wake up" {
		t.Fatalf("completion after the wake-up: %+v", got[0])
	}
	// Not re-armed: no event for the next completion.
	sb.Send(2, p.a.mr.SGE(0, 7), SendSignaled)
	_, err = p.a.qp.PostSend(sb)
	must(t, err)
	collect(t, p.b.cq, p.b.wc, 1, nil)
	if cq, err := p.b.ch.Wait(50 * time.Millisecond); cq != nil || err != nil {
		t.Fatalf("Wait on a disarmed CQ: %v, %v", cq, err)
	}
	// An event taken and never acked is acked by CQ.Close (newPair's
	// cleanup would hang in ibv_destroy_cq otherwise).
	must(t, p.b.cq.ReqNotify(false))
	sb.Send(3, p.a.mr.SGE(0, 7), SendSignaled)
	_, err = p.a.qp.PostSend(sb)
	must(t, err)
	if cq, err := p.b.ch.Wait(waitLimit); cq != p.b.cq || err != nil {
		t.Fatalf("second Wait: %v, %v", cq, err)
	}
	collect(t, p.b.cq, p.b.wc, 1, nil)
	collect(t, p.a.cq, p.a.wc, 3, nil)
}

func TestWaitInterrupted(t *testing.T) {
	ctx := openDevice(t)
	ch, err := ctx.NewCompChannel()
	must(t, err)
	cq, err := ctx.NewCQ(16, ch)
	must(t, err)
	must(t, cq.ReqNotify(false))
	done := make(chan error, 1)
	go func() {
		_, err := ch.Wait(-1)
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	must(t, ch.Interrupt())
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrClosed) {
			t.Fatalf("interrupted Wait: %v", err)
		}
	case <-time.After(waitLimit):
		t.Fatal("Interrupt did not end Wait")
	}
	if err := ch.Close(); err == nil {
		t.Fatal("closing a channel that still has a CQ succeeded")
	}
	must(t, cq.Close())
	must(t, ch.Close())
}

func TestPostOnResetQP(t *testing.T) {
	ctx := openDevice(t)
	pd, err := ctx.AllocPD()
	must(t, err)
	defer pd.Close()
	cq, err := ctx.NewCQ(16, nil)
	must(t, err)
	defer cq.Close()
	qp, err := pd.NewRCQP(QPConfig{SendCQ: cq, RecvCQ: cq})
	must(t, err)
	defer qp.Close()
	r, err := AllocRegion(4096)
	must(t, err)
	defer r.Free()
	mr, err := pd.Register(r, AccessLocalWrite)
	must(t, err)
	defer mr.Deregister()

	if st, err := qp.State(); err != nil || st != QPReset {
		t.Fatalf("a new QP: %v, %v", st, err)
	}
	sb := NewSendBatch(2, 2)
	defer sb.Free()
	sb.Send(1, mr.SGE(0, 8), SendSignaled)
	sb.Send(2, mr.SGE(8, 8), SendSignaled)
	k, err := qp.PostSend(sb)
	var verr *Error
	if err == nil || !errors.As(err, &verr) || !strings.HasPrefix(verr.Op, "ibv_post_send") || k != 0 {
		t.Fatalf("PostSend on a QP in RESET: posted %d, %v", k, err)
	}
	t.Logf("PostSend in RESET: %v", err)
	// RTR straight from RESET is refused, and the error names the step.
	err = qp.ToRTR(Path{}, Endpoint{MTU: MTU1024}, Endpoint{QPN: 1, MTU: MTU1024})
	if err == nil || !strings.Contains(err.Error(), "ibv_modify_qp(RTR") {
		t.Fatalf("RTR from RESET: %v", err)
	}
	t.Logf("RTR from RESET: %v", err)
}

func TestBadRKeyAndFlush(t *testing.T) {
	p := newPair(t, openDevice(t), QPConfig{})
	rb := NewRecvBatch(4, 1)
	defer rb.Free()
	for i := range 4 {
		rb.Add(uint64(i), SGE{})
	}
	_, err := p.b.qp.PostRecv(rb)
	must(t, err)
	sb := NewSendBatch(2, 2)
	defer sb.Free()
	sb.WriteImm(7, p.a.mr.SGE(0, 64), p.b.mr.Addr(), p.b.mr.RKey()^0x5a5a00, 1, SendSignaled)
	_, err = p.a.qp.PostSend(sb)
	must(t, err)
	wc := collect(t, p.a.cq, p.a.wc, 1, nil)[0]
	if wc.Status == WCSuccess || wc.WRID != 7 {
		t.Fatalf("a write with a bad rkey completed %+v", wc)
	}
	t.Logf("bad rkey: %v", wc.Err())
	if wc.Status != WCRemAccessErr {
		t.Errorf("status %v, want %v", wc.Status, WCRemAccessErr)
	}
	if st, err := p.a.qp.State(); err != nil || st != QPErr {
		t.Errorf("the writer's QP after the error: %v, %v", st, err)
	}
	// A QP in ERR flushes what is posted to it.
	sb.Send(8, p.a.mr.SGE(0, 8), SendSignaled)
	if _, err := p.a.qp.PostSend(sb); err == nil {
		wc := collect(t, p.a.cq, p.a.wc, 1, nil)[0]
		if wc.Status != WCWRFlushErr || wc.WRID != 8 {
			t.Errorf("a send posted in ERR: %+v", wc)
		}
	} else {
		t.Logf("PostSend in ERR refused: %v", err)
	}
	// ToError flushes the receiver's posted receives; the one the bad
	// write may have consumed completes with an error too.
	must(t, p.b.qp.ToError())
	got := collect(t, p.b.cq, p.b.wc, 4, nil)
	for _, wc := range got {
		if wc.Status == WCSuccess {
			t.Errorf("a receive completed successfully after a bad write: %+v", wc)
		}
	}
	// Reset and reconnect: the pair works again.
	for _, s := range []*side{p.a, p.b} {
		must(t, s.qp.Reset())
	}
	p.a.ep.PSN, p.b.ep.PSN = 0x3000, 0x4000
	must(t, p.a.qp.Connect(p.path, fullAccess, p.a.ep, p.b.ep))
	must(t, p.b.qp.Connect(p.path, fullAccess, p.b.ep, p.a.ep))
	rb.Add(20, p.b.mr.SGE(0, 64))
	_, err = p.b.qp.PostRecv(rb)
	must(t, err)
	copy(p.a.mr.Bytes(), "again")
	sb.Send(21, p.a.mr.SGE(0, 5), SendSignaled)
	_, err = p.a.qp.PostSend(sb)
	must(t, err)
	if wc := collect(t, p.b.cq, p.b.wc, 1, nil)[0]; wc.Err() != nil || wc.WRID != 20 || string(p.b.mr.Bytes()[:5]) != "again" {
		t.Fatalf("after reconnecting: %+v", wc)
	}
	collect(t, p.a.cq, p.a.wc, 1, nil)
}

// TestConcurrentPostAndPoll posts from one goroutine while others poll and
// sleep on the channel: the race detector's view of the binding's state.
func TestConcurrentPostAndPoll(t *testing.T) {
	const rounds, per = 20, 16
	p := newPair(t, openDevice(t), QPConfig{MaxSendWR: per, MaxRecvWR: rounds * per})
	rb := NewRecvBatch(rounds*per, rounds*per)
	defer rb.Free()
	for i := range rounds * per {
		rb.Add(uint64(i), p.b.mr.SGE(i*32, 32))
	}
	_, err := p.b.qp.PostRecv(rb)
	must(t, err)
	var wg sync.WaitGroup
	recvd := make(chan int, 1)
	wg.Add(1)
	go func() { // receiver: arm, sleep on the channel, drain
		defer wg.Done()
		w := NewCompletions(32)
		defer w.Free()
		n := 0
		deadline := time.Now().Add(waitLimit)
		for n < rounds*per && time.Now().Before(deadline) {
			if err := p.b.cq.ReqNotify(false); err != nil {
				t.Error(err)
				break
			}
			k, err := p.b.cq.Poll(w)
			if err != nil {
				t.Error(err)
				break
			}
			if k == 0 {
				if cq, err := p.b.ch.Wait(time.Second); err != nil {
					t.Error(err)
					break
				} else if cq != nil {
					cq.AckEvents(1)
				}
				continue
			}
			for i := range k {
				if wc := w.At(i); wc.Err() != nil || wc.WRID != uint64(n+i) {
					t.Errorf("receive %d: %+v", n+i, wc)
				}
			}
			n += k
		}
		recvd <- n
	}()
	sb := NewSendBatch(per, per)
	defer sb.Free()
	for r := range rounds {
		for i := range per {
			sb.Send(uint64(r*per+i), p.a.mr.SGE(0, 32), SendSignaled)
		}
		if _, err := p.a.qp.PostSend(sb); err != nil {
			t.Fatal(err)
		}
		collect(t, p.a.cq, p.a.wc, per, nil) // the send queue holds one round
	}
	wg.Wait()
	if n := <-recvd; n != rounds*per {
		t.Fatalf("received %d of %d", n, rounds*per)
	}
}
