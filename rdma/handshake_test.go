package rdma

import (
	"net"
	"testing"
	"time"

	"github.com/vestalabs/vesta/cgo/verbs"
	"github.com/vestalabs/vesta/engine/wire"
)

func TestHelloRoundTrip(t *testing.T) {
	h := hello{From: 1, To: 2, RecvSlots: 32, SlotSize: 65536,
		Endpoint: verbs.Endpoint{QPN: 0x12, PSN: 0x345, MTU: verbs.MTU1024, GID: verbs.GID{15: 1}}}
	got, err := parseHello(h.payload())
	if err != nil || got != h {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	bad := h
	bad.RecvSlots = 1
	if _, err := parseHello(bad.payload()); err == nil {
		t.Fatal("a hello with one receive slot parsed")
	}
	if _, err := parseHello(h.payload()[:20]); err == nil {
		t.Fatal("a short hello parsed")
	}
}

func TestSideChannelFrames(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	codec := wire.Codec{ClusterID: 7}
	go writeFrame(a, codec, frameRefuse, refusePayload(refuseWrongDirection), time.Second)
	typ, p, err := readFrame(b, codec, time.Second)
	if err != nil || typ != frameRefuse {
		t.Fatalf("readFrame: %#x, %v", typ, err)
	}
	code, err := parseRefuse(p)
	if err != nil || refusalReason(code) != ReasonWrongDirection {
		t.Fatalf("refusal %d, %v", code, err)
	}
	// Another cluster's frame is refused by the codec.
	go writeFrame(a, wire.Codec{ClusterID: 8}, frameReady, nil, time.Second)
	if _, _, err := readFrame(b, codec, time.Second); wire.Reason(err) != "foreign_cluster" {
		t.Fatalf("foreign frame: %v", err)
	}
}
