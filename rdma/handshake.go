package rdma

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/vestalabs/vesta/cgo/verbs"
	"github.com/vestalabs/vesta/engine/wire"
)

// Side-channel frames: the engine's frame format with control types (so
// magic, version, cluster ID and CRC are checked as for every frame). The
// dialer sends hello; the acceptor answers accept (or refuse, then closes);
// the dialer, its QP ready to send, sends ready. TCP's handshake uses
// FrameControl+0..2; these are apart from them, so neither transport can
// mistake the other's dialer for its own.
const (
	frameHello  = wire.FrameControl + 0x10
	frameAccept = wire.FrameControl + 0x11
	frameRefuse = wire.FrameControl + 0x12
	frameReady  = wire.FrameControl + 0x13

	helloSize  = 16 + verbs.EndpointSize
	refuseSize = 8
	// sideFrameMax bounds side-channel frames.
	sideFrameMax = wire.HeaderSize + helloSize
)

// Refusal codes on the wire.
const (
	refuseForeignCluster uint8 = 1
	refuseUnknownPeer    uint8 = 2
	refuseWrongReplica   uint8 = 3
	refuseWrongDirection uint8 = 4
)

func refusalReason(code uint8) string {
	switch code {
	case refuseForeignCluster:
		return ReasonForeignCluster
	case refuseUnknownPeer:
		return ReasonUnknownPeer
	case refuseWrongReplica:
		return ReasonWrongReplica
	case refuseWrongDirection:
		return ReasonWrongDirection
	}
	return ReasonRefusedOther
}

// hello is the payload of hello and accept: who speaks to whom, the
// speaker's queue pair, and its receive slots (the listener's credits).
//
//	0  u32 from
//	4  u32 to
//	8  u32 recv slots
//	12 u32 slot size
//	16 32 bytes verbs.Endpoint
type hello struct {
	From, To  wire.ReplicaID
	RecvSlots uint32
	SlotSize  uint32
	Endpoint  verbs.Endpoint
}

func (h hello) payload() []byte {
	b := make([]byte, 16, helloSize)
	le := binary.LittleEndian
	le.PutUint32(b[0:], uint32(h.From))
	le.PutUint32(b[4:], uint32(h.To))
	le.PutUint32(b[8:], h.RecvSlots)
	le.PutUint32(b[12:], h.SlotSize)
	ep, _ := h.Endpoint.MarshalBinary()
	return append(b, ep...)
}

func parseHello(p []byte) (hello, error) {
	if len(p) != helloSize {
		return hello{}, fmt.Errorf("hello payload is %d bytes, want %d", len(p), helloSize)
	}
	le := binary.LittleEndian
	h := hello{
		From: wire.ReplicaID(le.Uint32(p[0:])), To: wire.ReplicaID(le.Uint32(p[4:])),
		RecvSlots: le.Uint32(p[8:]), SlotSize: le.Uint32(p[12:]),
	}
	if err := h.Endpoint.UnmarshalBinary(p[16:]); err != nil {
		return hello{}, err
	}
	if h.RecvSlots < 2 || h.RecvSlots > 1<<16 || h.SlotSize < wire.HeaderSize || h.SlotSize > 1<<30 {
		return hello{}, fmt.Errorf("hello offers %d slots of %d bytes", h.RecvSlots, h.SlotSize)
	}
	return h, nil
}

// writeFrame writes one side-channel frame.
func writeFrame(c net.Conn, codec wire.Codec, typ uint8, payload []byte, timeout time.Duration) error {
	b, err := codec.AppendFrame(nil, typ, payload)
	if err != nil {
		return err
	}
	c.SetWriteDeadline(time.Now().Add(timeout))
	defer c.SetWriteDeadline(time.Time{})
	_, err = c.Write(b)
	return err
}

// readFrame reads one side-channel frame: header, then payload, checked.
func readFrame(c net.Conn, codec wire.Codec, timeout time.Duration) (uint8, []byte, error) {
	c.SetReadDeadline(time.Now().Add(timeout))
	defer c.SetReadDeadline(time.Time{})
	codec.MaxFrameSize = sideFrameMax
	var head [wire.HeaderSize]byte
	if _, err := io.ReadFull(c, head[:]); err != nil {
		return 0, nil, err
	}
	h, err := codec.ReadHeader(head[:])
	if err != nil {
		return 0, nil, err
	}
	b := make([]byte, h.FrameSize())
	copy(b, head[:])
	if _, err := io.ReadFull(c, b[wire.HeaderSize:]); err != nil {
		return 0, nil, err
	}
	h, p, err := codec.OpenFrame(b)
	if err != nil {
		return 0, nil, err
	}
	return h.Type, p, nil
}

func refusePayload(code uint8) []byte {
	b := make([]byte, refuseSize)
	b[0] = code
	return b
}

func parseRefuse(p []byte) (uint8, error) {
	if len(p) != refuseSize {
		return 0, errors.New("malformed refusal")
	}
	return p[0], nil
}
