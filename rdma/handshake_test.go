package rdma

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/vestalabs/vesta/cgo/verbs"
	"github.com/vestalabs/vesta/engine/transport"
	"github.com/vestalabs/vesta/engine/wire"
)

func testHello() hello {
	return hello{From: 1, To: 2, RecvSlots: 32, SlotSize: 65536,
		Endpoint: verbs.Endpoint{QPN: 0x12, PSN: 0x345, MTU: verbs.MTU1024, GID: verbs.GID{15: 1}}}
}

func TestHelloRoundTrip(t *testing.T) {
	h := testHello()
	got, err := parseHello(h.payload())
	if err != nil || got != h {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	// Two receive slots would stall a one-way stream (see minRecvSlots).
	for _, slots := range []uint32{0, 1, minRecvSlots - 1, 1<<16 + 1} {
		bad := h
		bad.RecvSlots = slots
		if _, err := parseHello(bad.payload()); err == nil {
			t.Fatalf("a hello with %d receive slots parsed", slots)
		}
	}
	bad := h
	bad.SlotSize = wire.HeaderSize - 1
	if _, err := parseHello(bad.payload()); err == nil {
		t.Fatal("a hello with slots smaller than a frame header parsed")
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
	pl := transport.RefusalPayload(2, 1, 7, transport.RefuseWrongDirection)
	go writeFrame(a, codec, transport.FrameRefusal, pl[:], time.Second)
	h, p, err := readFrame(b, codec, time.Second, false)
	if err != nil || h.Type != transport.FrameRefusal {
		t.Fatalf("readFrame: %#x, %v", h.Type, err)
	}
	r, err := transport.ParseRefusal(p, 2, "addr", 1, 7)
	if err != nil || r.Reason != ReasonWrongDirection || r.Replica != 2 {
		t.Fatalf("refusal %+v, %v", r, err)
	}
	if !strings.Contains(r.Error(), "dials replica 1, not the other way") {
		t.Errorf("refusal message: %s", r.Error())
	}
	// Another cluster's frame is refused by the codec...
	go writeFrame(a, wire.Codec{ClusterID: 8}, frameReady, nil, time.Second)
	if _, _, err := readFrame(b, codec, time.Second, false); wire.Reason(err) != "foreign_cluster" {
		t.Fatalf("foreign frame: %v", err)
	}
	// ... unless the reader asks for any cluster: then it is checked with
	// its own, which the header says.
	go writeFrame(a, wire.Codec{ClusterID: 8}, frameHello, testHello().payload(), time.Second)
	h, p, err = readFrame(b, codec, time.Second, true)
	if err != nil || h.ClusterID != 8 || h.Type != frameHello {
		t.Fatalf("foreign hello with anyCluster: %+v, %v", h, err)
	}
	if _, err := parseHello(p); err != nil {
		t.Fatal(err)
	}
}

// TestMalformedSideChannelInput feeds readFrame and parseHello truncated,
// corrupted, oversized and random input: each must be an error, never a
// panic or a hang past the deadline.
func TestMalformedSideChannelInput(t *testing.T) {
	codec := wire.Codec{ClusterID: 7}
	good, err := codec.AppendFrame(nil, frameHello, testHello().payload())
	if err != nil {
		t.Fatal(err)
	}
	read := func(in []byte) (wire.FrameHeader, []byte, error) {
		a, b := net.Pipe()
		defer b.Close()
		go func() {
			a.Write(in)
			a.Close()
		}()
		return readFrame(b, codec, time.Second, true)
	}
	if _, p, err := read(good); err != nil {
		t.Fatalf("the good frame: %v", err)
	} else if _, err := parseHello(p); err != nil {
		t.Fatalf("the good hello: %v", err)
	}
	cases := map[string][]byte{
		"empty":           nil,
		"half a header":   good[:wire.HeaderSize/2],
		"header only":     good[:wire.HeaderSize],
		"truncated":       good[:len(good)-1],
		"bad magic":       append([]byte("XXXX"), good[4:]...),
		"http":            []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		"oversized claim": func() []byte { b := bytes.Clone(good); b[16], b[17], b[18] = 0xff, 0xff, 0xff; return b }(),
	}
	for i := wire.HeaderSize; i < len(good); i += 7 {
		b := bytes.Clone(good)
		b[i] ^= 0x40
		cases[fmt.Sprintf("byte %d flipped", i)] = b
	}
	for name, in := range cases {
		_, _, err := read(in)
		if err == nil {
			t.Errorf("%s: read without an error", name)
		}
	}
	// Random bytes, and random mutations of the good frame: errors or a
	// frame that parseHello then judges; never a panic.
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 2000 {
		var in []byte
		if i%2 == 0 {
			in = make([]byte, rng.IntN(2*len(good)))
			for j := range in {
				in[j] = byte(rng.Uint32())
			}
		} else {
			in = bytes.Clone(good)
			for range 1 + rng.IntN(4) {
				in[rng.IntN(len(in))] = byte(rng.Uint32())
			}
		}
		_, p, err := read(in)
		if err == nil {
			parseHello(p)
		} else if errors.Is(err, io.ErrClosedPipe) {
			t.Fatalf("input %d: %v", i, err)
		}
	}
}
