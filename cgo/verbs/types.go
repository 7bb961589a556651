package verbs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"syscall"
)

// Error is a failed verbs call: which call (and, where it helps, which
// step: "ibv_modify_qp(RTR)") and the errno it set or returned.
type Error struct {
	Op    string
	Errno syscall.Errno
}

func (e *Error) Error() string {
	if e.Errno == 0 {
		return "verbs: " + e.Op + ": failed (errno not set)"
	}
	return fmt.Sprintf("verbs: %s: %v (errno %d)", e.Op, e.Errno.Error(), int(e.Errno))
}

// Unwrap lets errors.Is(err, syscall.EINVAL) and the like work.
func (e *Error) Unwrap() error { return e.Errno }

// ErrClosed is returned by methods of an object after its Close.
var ErrClosed = errors.New("verbs: object already closed")

// ErrNotBuilt is what Open returns in a build without the rdma tag.
var ErrNotBuilt = errors.New("verbs: built without the rdma build tag (no libibverbs)")

// GID is a port's global identifier (an IPv6 address; RoCE v2 over IPv4
// uses the IPv4-mapped form ::ffff:a.b.c.d).
type GID [16]byte

// IsZero reports whether the GID is all zero (an empty table slot).
func (g GID) IsZero() bool { return g == GID{} }

// Addr returns the GID as an IP address (IPv4-mapped ones unmapped).
func (g GID) Addr() netip.Addr { return netip.AddrFrom16(g).Unmap() }

// IsIPv4Mapped reports whether the GID is ::ffff:a.b.c.d.
func (g GID) IsIPv4Mapped() bool { return netip.AddrFrom16(g).Is4In6() }

func (g GID) String() string { return netip.AddrFrom16(g).String() }

// GIDType is the kind of a GID table entry.
type GIDType uint32

// The values of enum ibv_gid_type.
const (
	GIDTypeIB GIDType = iota
	GIDTypeRoCEv1
	GIDTypeRoCEv2
)

func (t GIDType) String() string {
	switch t {
	case GIDTypeIB:
		return "IB"
	case GIDTypeRoCEv1:
		return "RoCEv1"
	case GIDTypeRoCEv2:
		return "RoCEv2"
	}
	return fmt.Sprintf("GIDType(%d)", uint32(t))
}

// MTU is a path MTU as verbs encode it (enum ibv_mtu).
type MTU uint32

// The values of enum ibv_mtu.
const (
	MTU256  MTU = 1
	MTU512  MTU = 2
	MTU1024 MTU = 3
	MTU2048 MTU = 4
	MTU4096 MTU = 5
)

// Bytes returns the MTU in bytes, 0 for an invalid value.
func (m MTU) Bytes() int {
	if m < MTU256 || m > MTU4096 {
		return 0
	}
	return 128 << m
}

func (m MTU) String() string {
	if b := m.Bytes(); b != 0 {
		return fmt.Sprint(b)
	}
	return fmt.Sprintf("MTU(%d)", uint32(m))
}

// PortState is enum ibv_port_state.
type PortState uint32

// The values of enum ibv_port_state that matter here.
const (
	PortDown   PortState = 1
	PortInit   PortState = 2
	PortArmed  PortState = 3
	PortActive PortState = 4
)

func (s PortState) String() string {
	switch s {
	case PortDown:
		return "DOWN"
	case PortInit:
		return "INIT"
	case PortArmed:
		return "ARMED"
	case PortActive:
		return "ACTIVE"
	}
	return fmt.Sprintf("PortState(%d)", uint32(s))
}

// Link layers (ibv_port_attr.link_layer).
const (
	LinkLayerUnspecified = 0
	LinkLayerInfiniBand  = 1
	LinkLayerEthernet    = 2
)

// PortAttr is what QueryPort reports.
type PortAttr struct {
	State       PortState
	MaxMTU      MTU
	ActiveMTU   MTU
	GIDTableLen int
	MaxMsgSize  uint32
	LID         uint16 // 0 on RoCE: address by GID
	LinkLayer   uint8
}

// Access flags for memory regions and queue pairs (enum ibv_access_flags).
type Access uint32

// The access flags in use.
const (
	AccessLocalWrite  Access = 1
	AccessRemoteWrite Access = 1 << 1
	AccessRemoteRead  Access = 1 << 2
)

// QPState is enum ibv_qp_state.
type QPState uint32

// The values of enum ibv_qp_state.
const (
	QPReset QPState = iota
	QPInit
	QPRTR
	QPRTS
	QPSQD
	QPSQE
	QPErr
)

func (s QPState) String() string {
	if int(s) < len(qpStateNames) {
		return qpStateNames[s]
	}
	return fmt.Sprintf("QPState(%d)", uint32(s))
}

var qpStateNames = [...]string{"RESET", "INIT", "RTR", "RTS", "SQD", "SQE", "ERR"}

// Opcode is a send work request's operation (enum ibv_wr_opcode).
type Opcode uint32

// The send opcodes in use.
const (
	OpRDMAWrite        Opcode = 0
	OpRDMAWriteWithImm Opcode = 1
	OpSend             Opcode = 2
	OpSendWithImm      Opcode = 3
	OpRDMARead         Opcode = 4
)

// SendFlags modify a send work request (enum ibv_send_flags).
type SendFlags uint32

// The send flags.
const (
	SendFence     SendFlags = 1
	SendSignaled  SendFlags = 1 << 1 // produce a completion (unless the QP signals all)
	SendSolicited SendFlags = 1 << 2
	SendInline    SendFlags = 1 << 3 // copy the data into the WR: the buffer is free on return
)

// WCOpcode is a completion's operation (enum ibv_wc_opcode).
type WCOpcode uint32

// The completion opcodes.
const (
	WCSend            WCOpcode = 0
	WCRDMAWrite       WCOpcode = 1
	WCRDMARead        WCOpcode = 2
	WCRecv            WCOpcode = 128
	WCRecvRDMAWithImm WCOpcode = 129
)

func (o WCOpcode) String() string {
	switch o {
	case WCSend:
		return "SEND"
	case WCRDMAWrite:
		return "RDMA_WRITE"
	case WCRDMARead:
		return "RDMA_READ"
	case WCRecv:
		return "RECV"
	case WCRecvRDMAWithImm:
		return "RECV_RDMA_WITH_IMM"
	}
	return fmt.Sprintf("WCOpcode(%d)", uint32(o))
}

// WCStatus is a completion's status (enum ibv_wc_status).
type WCStatus uint32

// The statuses a transport tells apart; see String for the rest.
const (
	WCSuccess        WCStatus = 0
	WCLocLenErr      WCStatus = 1
	WCLocProtErr     WCStatus = 4
	WCWRFlushErr     WCStatus = 5
	WCRemAccessErr   WCStatus = 10
	WCRetryExcErr    WCStatus = 12
	WCRNRRetryExcErr WCStatus = 13
)

var wcStatusNames = [...]string{
	"SUCCESS", "LOC_LEN_ERR", "LOC_QP_OP_ERR", "LOC_EEC_OP_ERR", "LOC_PROT_ERR",
	"WR_FLUSH_ERR", "MW_BIND_ERR", "BAD_RESP_ERR", "LOC_ACCESS_ERR", "REM_INV_REQ_ERR",
	"REM_ACCESS_ERR", "REM_OP_ERR", "RETRY_EXC_ERR", "RNR_RETRY_EXC_ERR", "LOC_RDD_VIOL_ERR",
	"REM_INV_RD_REQ_ERR", "REM_ABORT_ERR", "INV_EECN_ERR", "INV_EEC_STATE_ERR", "FATAL_ERR",
	"RESP_TIMEOUT_ERR", "GENERAL_ERR", "TM_ERR", "TM_RNDV_INCOMPLETE",
}

func (s WCStatus) String() string {
	if int(s) < len(wcStatusNames) {
		return wcStatusNames[s]
	}
	return fmt.Sprintf("WCStatus(%d)", uint32(s))
}

// WC is one completion, copied out of a Completions array.
type WC struct {
	WRID      uint64
	Status    WCStatus
	Opcode    WCOpcode
	VendorErr uint32
	ByteLen   uint32
	// Imm is the immediate data in host byte order (verbs carry it in
	// network order; the binding converts both ways). Valid when HasImm.
	Imm    uint32
	HasImm bool
	QPNum  uint32
}

// Err returns nil for a successful completion, else an error naming the
// status.
func (w *WC) Err() error {
	if w.Status == WCSuccess {
		return nil
	}
	// The opcode of an error completion is undefined (only wr_id, status,
	// vendor_err and qp_num are), so it is not named.
	return fmt.Errorf("verbs: completion wr_id=%d qp %#x: status %v (vendor_err %#x)", w.WRID, w.QPNum, w.Status, w.VendorErr)
}

// SGE is one scatter/gather element: Len bytes at Addr in memory registered
// with LKey (see MR.SGE).
type SGE struct {
	Addr uint64
	Len  uint32
	LKey uint32
}

// Endpoint is what one side of a reliable connection tells the other out of
// band before the pair can move to RTR: its queue pair number, the first
// packet sequence number it will send, its port's GID (RoCE) and LID (IB),
// and the MTU it can take. Its wire form (MarshalBinary) is a fixed 32
// bytes.
type Endpoint struct {
	QPN uint32 // 24 bits
	PSN uint32 // 24 bits
	GID GID
	LID uint16
	MTU MTU
}

// EndpointSize is the length of an Endpoint's wire form.
const EndpointSize = 32

// endpointVersion tags the wire form so that a later layout is refused, not
// misread.
const endpointVersion = 1

// MarshalBinary encodes the endpoint: u8 version, u8 mtu, u16 lid, u32 qpn,
// u32 psn, 16 bytes gid, 4 zero bytes; integers big-endian.
func (e Endpoint) MarshalBinary() ([]byte, error) {
	b := make([]byte, EndpointSize)
	b[0] = endpointVersion
	b[1] = byte(e.MTU)
	binary.BigEndian.PutUint16(b[2:], e.LID)
	binary.BigEndian.PutUint32(b[4:], e.QPN)
	binary.BigEndian.PutUint32(b[8:], e.PSN)
	copy(b[12:28], e.GID[:])
	return b, nil
}

// UnmarshalBinary decodes what MarshalBinary wrote.
func (e *Endpoint) UnmarshalBinary(b []byte) error {
	if len(b) != EndpointSize {
		return fmt.Errorf("verbs: endpoint is %d bytes, want %d", len(b), EndpointSize)
	}
	if b[0] != endpointVersion {
		return fmt.Errorf("verbs: endpoint version %d, want %d", b[0], endpointVersion)
	}
	ep := Endpoint{
		MTU: MTU(b[1]),
		LID: binary.BigEndian.Uint16(b[2:]),
		QPN: binary.BigEndian.Uint32(b[4:]),
		PSN: binary.BigEndian.Uint32(b[8:]),
	}
	copy(ep.GID[:], b[12:28])
	if ep.QPN >= 1<<24 || ep.PSN >= 1<<24 {
		return fmt.Errorf("verbs: endpoint qpn %#x or psn %#x wider than 24 bits", ep.QPN, ep.PSN)
	}
	if ep.MTU.Bytes() == 0 {
		return fmt.Errorf("verbs: endpoint mtu %d invalid", b[1])
	}
	*e = ep
	return nil
}

func (e Endpoint) String() string {
	return fmt.Sprintf("qpn=%#x psn=%#x gid=%v lid=%d mtu=%v", e.QPN, e.PSN, e.GID, e.LID, e.MTU)
}
