package verbs

import (
	"errors"
	"net/netip"
	"strings"
	"syscall"
	"testing"
)

func TestEndpointRoundTrip(t *testing.T) {
	g := GID(netip.MustParseAddr("::ffff:192.0.2.1").As16())
	e := Endpoint{QPN: 0x11, PSN: 0xabcdef, GID: g, LID: 7, MTU: MTU1024}
	b, err := e.MarshalBinary()
	if err != nil || len(b) != EndpointSize {
		t.Fatalf("MarshalBinary: %d bytes, %v", len(b), err)
	}
	var d Endpoint
	if err := d.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if d != e {
		t.Fatalf("round trip: got %v, want %v", d, e)
	}
	if !d.GID.IsIPv4Mapped() || d.GID.Addr().String() != "192.0.2.1" {
		t.Fatalf("GID %v: mapped=%v addr=%v", d.GID, d.GID.IsIPv4Mapped(), d.GID.Addr())
	}
	for name, mut := range map[string]func([]byte){
		"version": func(b []byte) { b[0] = 9 },
		"mtu":     func(b []byte) { b[1] = 0 },
		"qpn":     func(b []byte) { b[4] = 1 },
	} {
		c := append([]byte(nil), b...)
		mut(c)
		if err := d.UnmarshalBinary(c); err == nil {
			t.Errorf("%s: a bad endpoint decoded", name)
		}
	}
	if err := d.UnmarshalBinary(b[:10]); err == nil {
		t.Error("a short endpoint decoded")
	}
}

func TestMTUAndNames(t *testing.T) {
	if MTU1024.Bytes() != 1024 || MTU4096.Bytes() != 4096 || MTU(0).Bytes() != 0 || MTU(6).Bytes() != 0 {
		t.Fatal("MTU.Bytes")
	}
	if WCRemAccessErr.String() != "REM_ACCESS_ERR" || WCWRFlushErr.String() != "WR_FLUSH_ERR" || WCStatus(99).String() != "WCStatus(99)" {
		t.Fatal("WCStatus names")
	}
	if QPRTS.String() != "RTS" || QPErr.String() != "ERR" {
		t.Fatal("QPState names")
	}
}

func TestError(t *testing.T) {
	var err error = &Error{Op: "ibv_modify_qp(RTR)", Errno: syscall.EINVAL}
	if !errors.Is(err, syscall.EINVAL) {
		t.Fatal("errors.Is(EINVAL) is false")
	}
	if s := err.Error(); !strings.Contains(s, "ibv_modify_qp(RTR)") || !strings.Contains(s, "errno 22") {
		t.Fatalf("message %q names neither the call nor the errno", s)
	}
	wc := WC{WRID: 3, Status: WCRemAccessErr, Opcode: WCRDMAWrite}
	if wc.Err() == nil || !strings.Contains(wc.Err().Error(), "REM_ACCESS_ERR") {
		t.Fatalf("WC.Err: %v", wc.Err())
	}
}
