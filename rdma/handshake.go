package rdma

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/vestalabs/vesta/cgo/verbs"
	"github.com/vestalabs/vesta/engine/transport"
	"github.com/vestalabs/vesta/engine/wire"
)

// Side-channel frames: the engine's frame format with control types (so
// magic, version, cluster ID and CRC are checked as for every frame). The
// dialer sends hello; the acceptor answers accept, or refuses with the
// engine's refusal frame (transport.FrameRefusal: the same frame, codes
// and payload as TCP's handshake) and closes; the dialer, its QP ready to
// send, sends ready. TCP's handshake uses FrameControl+0..2; hello, accept
// and ready are apart from them, so neither transport can mistake the
// other's dialer for its own.
const (
	frameHello  = wire.FrameControl + 0x10
	frameAccept = wire.FrameControl + 0x11
	frameReady  = wire.FrameControl + 0x13

	helloSize = 16 + verbs.EndpointSize
	// sideFrameMax bounds side-channel frames.
	sideFrameMax = wire.HeaderSize + max(helloSize, transport.RefusalSize)

	// minRecvSlots is the fewest receives a side may offer: a sender keeps
	// its last credit for credit returns, and a receiver returns credits
	// on their own only once at least 2 are due (fewer would answer every
	// credit-only SEND with another, forever), so with 2 slots a one-way
	// stream would stall after one SEND.
	minRecvSlots = 3
)

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
	if h.RecvSlots < minRecvSlots || h.RecvSlots > 1<<16 || h.SlotSize < wire.HeaderSize || h.SlotSize > 1<<30 {
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
// With anyCluster, a frame of another cluster is read and checked with its
// own cluster ID (the header's ClusterID says which), so that a sound hello
// of another cluster can be told why it is refused.
func readFrame(c net.Conn, codec wire.Codec, timeout time.Duration, anyCluster bool) (wire.FrameHeader, []byte, error) {
	c.SetReadDeadline(time.Now().Add(timeout))
	defer c.SetReadDeadline(time.Time{})
	codec.MaxFrameSize = sideFrameMax
	var head [wire.HeaderSize]byte
	if _, err := io.ReadFull(c, head[:]); err != nil {
		return wire.FrameHeader{}, nil, err
	}
	h, err := codec.ReadHeader(head[:])
	var ce *wire.ClusterError
	if anyCluster && errors.As(err, &ce) {
		codec.ClusterID = h.ClusterID
		h, err = codec.ReadHeader(head[:])
	}
	if err != nil {
		return h, nil, err
	}
	b := make([]byte, h.FrameSize())
	copy(b, head[:])
	if _, err := io.ReadFull(c, b[wire.HeaderSize:]); err != nil {
		return h, nil, fmt.Errorf("reading a frame of type %#x (%d payload bytes): %w", h.Type, h.PayloadLen, err)
	}
	h, p, err := codec.OpenFrame(b)
	if err != nil {
		return h, nil, err
	}
	return h, p, nil
}
