//go:build rdma

package verbs

/*
#include "shim.h"
*/
import "C"

import (
	"encoding/binary"
	"fmt"
)

// QPConfig sizes a reliable-connected queue pair.
type QPConfig struct {
	SendCQ, RecvCQ *CQ // may be the same CQ
	MaxSendWR      int // outstanding send WRs (default 128)
	MaxRecvWR      int // outstanding receive WRs (default 128)
	MaxSendSGE     int // SGEs per send WR (default 1)
	MaxRecvSGE     int // SGEs per receive WR (default 1)
	MaxInline      int // bytes a SendInline WR may carry (default 0)
	// SignalAll makes every send WR produce a completion; otherwise only
	// those with SendSignaled do (keep at least one in every MaxSendWR
	// signaled, or the send queue never drains).
	SignalAll bool
}

// QPCaps is what the device granted (at least what was asked).
type QPCaps struct {
	MaxSendWR, MaxRecvWR, MaxSendSGE, MaxRecvSGE, MaxInline int
}

// QP is a reliable-connected queue pair (struct ibv_qp). It refers to its
// CQs and PD without owning them: Close the QP before them. Work requests
// posted to it name memory by key; the memory must stay registered until
// their completions (or the QP's Close).
type QP struct {
	qp   *C.struct_ibv_qp
	pd   *PD
	num  uint32
	caps QPCaps
}

// NewRCQP creates an RC queue pair in RESET.
func (pd *PD) NewRCQP(cfg QPConfig) (*QP, error) {
	if pd.pd == nil {
		return nil, ErrClosed
	}
	if cfg.SendCQ == nil || cfg.RecvCQ == nil || cfg.SendCQ.cq == nil || cfg.RecvCQ.cq == nil {
		return nil, fmt.Errorf("verbs: NewRCQP needs open send and receive CQs")
	}
	def := func(v, d int) C.uint32_t {
		if v <= 0 {
			v = d
		}
		return C.uint32_t(v)
	}
	// C memory is not needed for a struct of integers: Go memory that
	// holds no Go pointers may be passed for the length of the call.
	var cp C.struct_ibv_qp_cap
	cp.max_send_wr = def(cfg.MaxSendWR, 128)
	cp.max_recv_wr = def(cfg.MaxRecvWR, 128)
	cp.max_send_sge = def(cfg.MaxSendSGE, 1)
	cp.max_recv_sge = def(cfg.MaxRecvSGE, 1)
	cp.max_inline_data = C.uint32_t(max(cfg.MaxInline, 0))
	sig := C.int(0)
	if cfg.SignalAll {
		sig = 1
	}
	p, err := C.vb_create_rc_qp(pd.pd, cfg.SendCQ.cq, cfg.RecvCQ.cq, &cp, sig)
	if p == nil {
		return nil, errnoOf(fmt.Sprintf("ibv_create_qp(RC, send %d, recv %d, inline %d)", cp.max_send_wr, cp.max_recv_wr, cp.max_inline_data), err)
	}
	return &QP{qp: p, pd: pd, num: uint32(p.qp_num), caps: QPCaps{
		MaxSendWR: int(cp.max_send_wr), MaxRecvWR: int(cp.max_recv_wr),
		MaxSendSGE: int(cp.max_send_sge), MaxRecvSGE: int(cp.max_recv_sge),
		MaxInline: int(cp.max_inline_data),
	}}, nil
}

// Num is the queue pair number (24 bits) a peer addresses.
func (qp *QP) Num() uint32 { return qp.num }

// Caps is what the device granted at creation.
func (qp *QP) Caps() QPCaps { return qp.caps }

// State queries the QP's current state (ibv_query_qp). A QP that met an
// error completion is in QPErr.
func (qp *QP) State() (QPState, error) {
	if qp.qp == nil {
		return 0, ErrClosed
	}
	rc := int(C.vb_qp_state(qp.qp))
	if rc < 0 {
		return 0, errOf("ibv_query_qp", rc)
	}
	return QPState(rc), nil
}

// Path holds the parameters of a connection that are not the peer's
// Endpoint. Zero fields take the defaults named.
type Path struct {
	Port     uint8 // local port (1)
	GIDIndex int   // local GID index, e.g. from RoCEv2IPv4GID
	// MTU is the path MTU; 0 means the smaller of the local port's active
	// MTU (taken by LocalEndpoint into Endpoint.MTU) and the peer's.
	MTU         MTU
	HopLimit    uint8 // 64
	Timeout     uint8 // local ACK timeout, 4.096 µs * 2^Timeout (14: 67 ms)
	RetryCount  uint8 // transport retries (7)
	RNRRetry    uint8 // receiver-not-ready retries (7: infinite)
	MinRNRTimer uint8 // RNR NAK delay code (12: 0.64 ms)
	MaxRDAtomic uint8 // outstanding RDMA reads either way (1)
}

func (p Path) withDefaults() Path {
	if p.Port == 0 {
		p.Port = 1
	}
	if p.HopLimit == 0 {
		p.HopLimit = 64
	}
	if p.Timeout == 0 {
		p.Timeout = 14
	}
	if p.RetryCount == 0 {
		p.RetryCount = 7
	}
	if p.RNRRetry == 0 {
		p.RNRRetry = 7
	}
	if p.MinRNRTimer == 0 {
		p.MinRNRTimer = 12
	}
	if p.MaxRDAtomic == 0 {
		p.MaxRDAtomic = 1
	}
	return p
}

// LocalEndpoint is what this QP's peer needs to connect to it: the QP
// number, psn (the first sequence number this side will send), and the
// port's GID at p.GIDIndex, LID and active MTU.
func (qp *QP) LocalEndpoint(p Path, psn uint32) (Endpoint, error) {
	p = p.withDefaults()
	ctx := qp.pd.ctx
	pa, err := ctx.QueryPort(p.Port)
	if err != nil {
		return Endpoint{}, err
	}
	g, _, err := ctx.QueryGID(p.Port, p.GIDIndex)
	if err != nil {
		return Endpoint{}, err
	}
	return Endpoint{QPN: qp.num, PSN: psn & 0xffffff, GID: g, LID: pa.LID, MTU: pa.ActiveMTU}, nil
}

// ToInit moves the QP from RESET to INIT, allowing the peer the given
// access (AccessRemoteWrite for RDMA WRITE into this side's memory).
func (qp *QP) ToInit(p Path, access Access) error {
	if qp.qp == nil {
		return ErrClosed
	}
	p = p.withDefaults()
	if rc := C.vb_qp_to_init(qp.qp, C.uint8_t(p.Port), C.int(access)); rc != 0 {
		return errOf("ibv_modify_qp(INIT)", int(rc))
	}
	return nil
}

// ToRTR moves the QP from INIT to RTR (ready to receive) towards remote.
// local is this side's endpoint (its MTU bounds the path MTU).
func (qp *QP) ToRTR(p Path, local, remote Endpoint) error {
	if qp.qp == nil {
		return ErrClosed
	}
	p = p.withDefaults()
	mtu := p.MTU
	if mtu == 0 {
		mtu = min(local.MTU, remote.MTU)
		if mtu == 0 {
			mtu = max(local.MTU, remote.MTU, MTU1024)
		}
	}
	global := C.int(0)
	if !remote.GID.IsZero() {
		global = 1
	}
	hi := binary.BigEndian.Uint64(remote.GID[:8])
	lo := binary.BigEndian.Uint64(remote.GID[8:])
	rc := C.vb_qp_to_rtr(qp.qp, C.uint32_t(remote.QPN), C.uint32_t(remote.PSN), C.uint64_t(hi), C.uint64_t(lo),
		C.uint16_t(remote.LID), global, C.uint8_t(p.Port), C.uint8_t(p.GIDIndex), C.int(mtu), C.uint8_t(p.HopLimit),
		C.uint8_t(p.MaxRDAtomic), C.uint8_t(p.MinRNRTimer))
	if rc != 0 {
		return errOf(fmt.Sprintf("ibv_modify_qp(RTR to qpn %#x gid %v mtu %v)", remote.QPN, remote.GID, mtu), int(rc))
	}
	return nil
}

// ToRTS moves the QP from RTR to RTS (ready to send); psn is the local
// endpoint's PSN.
func (qp *QP) ToRTS(p Path, psn uint32) error {
	if qp.qp == nil {
		return ErrClosed
	}
	p = p.withDefaults()
	rc := C.vb_qp_to_rts(qp.qp, C.uint32_t(psn&0xffffff), C.uint8_t(p.Timeout), C.uint8_t(p.RetryCount),
		C.uint8_t(p.RNRRetry), C.uint8_t(p.MaxRDAtomic))
	if rc != 0 {
		return errOf("ibv_modify_qp(RTS)", int(rc))
	}
	return nil
}

// Connect takes a QP in RESET through INIT, RTR and RTS towards remote.
// Post receives before the peer can send: after ToInit at the earliest,
// which Connect does not give room for, so post them beforehand into a
// QP in INIT (call ToInit yourself, then Connect, which skips INIT when the
// QP is there), or make sure the peer waits (RNR retries cover a short
// gap).
func (qp *QP) Connect(p Path, access Access, local, remote Endpoint) error {
	st, err := qp.State()
	if err != nil {
		return err
	}
	if st == QPReset {
		if err := qp.ToInit(p, access); err != nil {
			return err
		}
	}
	if err := qp.ToRTR(p, local, remote); err != nil {
		return err
	}
	return qp.ToRTS(p, local.PSN)
}

// Reset moves the QP to RESET from any state, dropping every outstanding
// work request without completions; it can then be connected anew.
func (qp *QP) Reset() error { return qp.setState(QPReset) }

// ToError moves the QP to ERR: outstanding work requests complete with
// WCWRFlushErr, which is how a poller learns that they are over.
func (qp *QP) ToError() error { return qp.setState(QPErr) }

func (qp *QP) setState(s QPState) error {
	if qp.qp == nil {
		return ErrClosed
	}
	if rc := C.vb_qp_set_state(qp.qp, C.int(s)); rc != 0 {
		return errOf("ibv_modify_qp("+s.String()+")", int(rc))
	}
	return nil
}

// Close destroys the QP (ibv_destroy_qp). Its CQs may still hold its
// completions; poll or discard them.
func (qp *QP) Close() error {
	if qp.qp == nil {
		return ErrClosed
	}
	if rc := C.ibv_destroy_qp(qp.qp); rc != 0 {
		return errOf("ibv_destroy_qp", int(rc))
	}
	qp.qp = nil
	return nil
}
