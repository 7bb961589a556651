package proto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

func sampleRequests() []Request {
	return []Request{
		{ID: 1, Op: OpGet, Key: []byte("k")},
		{ID: 2, Client: 7, Seq: 3, Low: 2, Op: OpPut, Key: []byte("key"), Value: []byte("value")},
		{ID: 3, Client: 7, Seq: 4, Low: 4, Op: OpCAS, Key: []byte("key"), Value: []byte("new"), Expect: []byte("old")},
		{ID: 1<<64 - 1, Client: 1<<64 - 1, Seq: 1<<64 - 1, Low: 1, Op: OpDelete, Key: bytes.Repeat([]byte{0xff}, 300)},
		{ID: 5, Client: 9, Op: OpOpenSession},
		{ID: 6, Op: OpStatus},
		{ID: 7, Op: OpGet, Key: []byte("k"), Read: ReadBounded, MinSlot: 1<<64 - 1},
		{ID: 8, Op: OpGet, Key: []byte("k"), Read: ReadBounded, MinSlot: 42, AllowStale: true},
		{ID: 9, Op: OpGet, Key: []byte("k"), Read: ReadBounded}, // min slot 0: sent all the same
	}
}

func sampleResponses() []Response {
	return []Response{
		{ID: 1, Status: StatusOK, Found: true, Value: []byte("v")},
		{ID: 2, Status: StatusOK, Swapped: true},
		{ID: 3, Status: StatusNotLeader, Leader: 2, LeaderAddr: "127.0.0.1:7102"},
		{ID: 4, Status: StatusUnavailable, Value: []byte("leadership lost")},
		{ID: 5, Status: StatusError, Value: []byte("bad")},
		{ID: 6, Status: StatusSessionExpired, Value: []byte("no session")},
		{ID: 8, Status: StatusOK, Swapped: true, Applied: 1},
		{ID: 9, Status: StatusOK, Found: true, Value: []byte("v"), Applied: 1<<64 - 1, Stale: true},
		{ID: 10, Status: StatusOK, Stale: true},                             // stale without a slot: the flag alone
		{ID: 7, Status: StatusOK, Value: bytes.Repeat([]byte("x"), 100000)}, // last: large
	}
}

// norm makes empty and nil slices compare equal.
func normReq(r Request) Request {
	for _, p := range []*[]byte{&r.Key, &r.Value, &r.Expect} {
		if len(*p) == 0 {
			*p = nil
		}
	}
	return r
}

func normResp(r Response) Response {
	if len(r.Value) == 0 {
		r.Value = nil
	}
	return r
}

func TestRoundTrip(t *testing.T) {
	for _, want := range sampleRequests() {
		frame := AppendRequest([]byte("junk"), &want)[4:]
		if n := binary.LittleEndian.Uint32(frame); int(n) != len(frame)-4 {
			t.Fatalf("length prefix %d, frame body %d", n, len(frame)-4)
		}
		got, err := DecodeRequest(frame[4:])
		if err != nil {
			t.Fatalf("%+v: %v", want, err)
		}
		if !reflect.DeepEqual(normReq(got), normReq(want)) {
			t.Fatalf("got %+v, want %+v", got, want)
		}
	}
	for _, want := range sampleResponses() {
		frame := AppendResponse(nil, &want)
		got, err := DecodeResponse(frame[4:])
		if err != nil {
			t.Fatalf("%+v: %v", want.ID, err)
		}
		if !reflect.DeepEqual(normResp(got), normResp(want)) {
			t.Fatalf("got %+v, want %+v", got, want)
		}
	}
}

// Every strict prefix of a valid frame, and every single-byte change, must
// decode to an error or a message, never a panic.
func TestDecodeTruncatedAndMutated(t *testing.T) {
	for _, r := range sampleRequests() {
		body := AppendRequest(nil, &r)[4:]
		for i := 0; i < len(body); i++ {
			if _, err := DecodeRequest(body[:i]); err == nil {
				t.Fatalf("request prefix of %d/%d bytes decoded without error", i, len(body))
			}
		}
		for i := range body {
			m := bytes.Clone(body)
			m[i] ^= 0xa5
			_, _ = DecodeRequest(m)
		}
	}
	resps := sampleResponses()
	for _, r := range resps[:len(resps)-1] { // the last one's value is large
		body := AppendResponse(nil, &r)[4:]
		for i := 0; i < len(body); i++ {
			if _, err := DecodeResponse(body[:i]); err == nil {
				t.Fatalf("response prefix of %d/%d bytes decoded without error", i, len(body))
			}
		}
		for i := range body {
			m := bytes.Clone(body)
			m[i] ^= 0x5a
			_, _ = DecodeResponse(m)
		}
	}
}

func TestDecodeErrorsNameTheField(t *testing.T) {
	good := Request{ID: 1, Client: 2, Seq: 3, Low: 1, Op: OpPut, Key: []byte("k"), Value: []byte("v")}
	body := AppendRequest(nil, &good)[4:]
	cases := []struct {
		name  string
		edit  func([]byte) []byte
		field string
	}{
		{"kind", func(b []byte) []byte { b[0] = KindResponse; return b }, "kind"},
		{"op", func(b []byte) []byte { b[33] = 99; return b }, "op"},
		{"flags", func(b []byte) []byte { b[34] = 1; return b }, "flags"},
		{"trailing", func(b []byte) []byte { return append(b, 0) }, "request"},
		{"low above seq", func(b []byte) []byte { binary.LittleEndian.PutUint64(b[25:], 9); return b }, "low"},
		{"seq without client", func(b []byte) []byte { binary.LittleEndian.PutUint64(b[9:], 0); return b }, "seq"},
		{"key too long", func(b []byte) []byte {
			return binary.AppendUvarint(b[:requestFixed], MaxKeySize+1)
		}, "key"},
		{"key overruns", func(b []byte) []byte { b[requestFixed] = 100; return b }, "key"},
		{"bad uvarint", func(b []byte) []byte {
			return append(b[:requestFixed], 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
		}, "key"},
	}
	for _, c := range cases {
		_, err := DecodeRequest(c.edit(bytes.Clone(body)))
		var de *DecodeError
		if !errors.As(err, &de) || de.Field != c.field {
			t.Errorf("%s: got %v, want a DecodeError on %q", c.name, err, c.field)
		}
	}
	resp := AppendResponse(nil, &Response{ID: 1})[4:]
	resp[9] = 77
	if _, err := DecodeResponse(resp); err == nil || !strings.Contains(err.Error(), "status") {
		t.Errorf("unknown status: got %v", err)
	}
}

func TestReader(t *testing.T) {
	var stream []byte
	reqs := sampleRequests()
	for i := range reqs {
		stream = AppendRequest(stream, &reqs[i])
	}
	// A small buffer forces the large-frame path for some frames.
	r := NewReader(iotestHalfReader{bytes.NewReader(stream)}, 64, 0)
	for i := range reqs {
		body, err := r.Next()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		got, err := DecodeRequest(body)
		if err != nil || !reflect.DeepEqual(normReq(got), normReq(reqs[i])) {
			t.Fatalf("frame %d: %+v %v", i, got, err)
		}
	}
	if _, err := r.Next(); err != io.EOF {
		t.Fatalf("at end: %v, want EOF", err)
	}
	// Cut inside a frame.
	r = NewReader(bytes.NewReader(stream[:len(stream)-1]), 0, 0)
	var err error
	for err == nil {
		_, err = r.Next()
	}
	if err != io.ErrUnexpectedEOF {
		t.Fatalf("cut stream: %v, want ErrUnexpectedEOF", err)
	}
	// Oversized and empty frames.
	for _, n := range []uint32{0, 1 << 30} {
		r = NewReader(bytes.NewReader(binary.LittleEndian.AppendUint32(nil, n)), 0, 1<<20)
		if _, err := r.Next(); err == nil {
			t.Fatalf("frame length %d accepted", n)
		}
	}
}

// iotestHalfReader returns at most half of what is asked (at least 1 byte).
type iotestHalfReader struct{ r io.Reader }

func (h iotestHalfReader) Read(p []byte) (int, error) {
	return h.r.Read(p[:(len(p)+1)/2])
}

func TestHasFrame(t *testing.T) {
	reqs := sampleRequests()
	var stream []byte
	for i := range reqs[:3] {
		stream = AppendRequest(stream, &reqs[i])
	}
	r := NewReader(bytes.NewReader(stream), 0, 0)
	if r.HasFrame() {
		t.Fatal("HasFrame before any read")
	}
	for i := 0; i < 3; i++ {
		if _, err := r.Next(); err != nil {
			t.Fatal(err)
		}
		if want := i < 2; r.HasFrame() != want {
			t.Fatalf("after frame %d: HasFrame %v, want %v", i, !want, want)
		}
	}
}

func TestPreamble(t *testing.T) {
	if err := ReadPreamble(bytes.NewReader(Preamble[:])); err != nil {
		t.Fatal(err)
	}
	if err := ReadPreamble(strings.NewReader("GET / HTTP/1.1\r\n")); !errors.Is(err, ErrBadPreamble) {
		t.Fatalf("HTTP request: %v", err)
	}
	p := Preamble
	p[7] = 9
	if err := ReadPreamble(bytes.NewReader(p[:])); err == nil || !strings.Contains(err.Error(), "version") {
		t.Fatalf("other version: %v", err)
	}
}

// Many goroutines write through one Writer; every frame arrives whole.
func TestWriterConcurrent(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	w := NewWriter(a, WriterOptions{MaxQueued: 1 << 10})
	const writers, each = 8, 200
	var wg sync.WaitGroup
	for g := 0; g < writers; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				r := Request{ID: uint64(g*each + i), Op: OpPut, Client: 1, Seq: 1, Key: []byte("k"), Value: bytes.Repeat([]byte{byte(g)}, i)}
				if err := w.WriteRequest(&r); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	seen := make(map[uint64]bool)
	rd := NewReader(b, 0, 0)
	for len(seen) < writers*each {
		body, err := rd.Next()
		if err != nil {
			t.Fatal(err)
		}
		r, err := DecodeRequest(body)
		if err != nil {
			t.Fatal(err)
		}
		g, i := int(r.ID)/each, int(r.ID)%each
		if !bytes.Equal(r.Value, bytes.Repeat([]byte{byte(g)}, i)) || seen[r.ID] {
			t.Fatalf("frame %d wrong or repeated", r.ID)
		}
		seen[r.ID] = true
	}
	wg.Wait()
	w.Close()
	if err := w.WriteResponse(&Response{}); err == nil {
		t.Fatal("write after Close succeeded")
	}
}

func TestWriterError(t *testing.T) {
	a, b := net.Pipe()
	b.Close()
	errc := make(chan error, 1)
	w := NewWriter(a, WriterOptions{OnError: func(err error) { errc <- err }})
	defer w.Close()
	_ = w.WriteResponse(&Response{ID: 1})
	select {
	case <-errc:
	case <-time.After(10 * time.Second):
		t.Fatal("no write error reported")
	}
	if err := w.WriteResponse(&Response{ID: 2}); err == nil {
		t.Fatal("write after a failed write succeeded")
	}
}

func FuzzDecode(f *testing.F) {
	for _, r := range sampleRequests() {
		f.Add(AppendRequest(nil, &r)[4:])
	}
	for _, r := range sampleResponses()[:6] {
		f.Add(AppendResponse(nil, &r)[4:])
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		// What decodes re-encodes to something that decodes the same (the
		// bytes may differ: a uvarint may be written in more bytes than needed).
		if r, err := DecodeRequest(b); err == nil {
			again, err := DecodeRequest(AppendRequest(nil, &r)[4:])
			if err != nil || !reflect.DeepEqual(normReq(again), normReq(r)) {
				t.Fatalf("request %+v re-decodes as %+v, %v", r, again, err)
			}
		}
		if r, err := DecodeResponse(b); err == nil {
			again, err := DecodeResponse(AppendResponse(nil, &r)[4:])
			if err != nil || !reflect.DeepEqual(normResp(again), normResp(r)) {
				t.Fatalf("response %+v re-decodes as %+v, %v", r, again, err)
			}
		}
	})
}

// With direct writes on a real TCP connection, frames from concurrent
// appenders arrive whole and each appender's in order, whether they went
// out directly (frames written alone to an idle stream) or through the
// writer's goroutine (bursts, large frames that fill the socket buffer,
// alone frames that find the stream busy), and Close flushes the rest.
func TestWriterDirectWritesKeepOrder(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b := <-accepted
	if b == nil {
		t.Fatal("accept failed")
	}
	defer b.Close()
	w := NewWriter(a, WriterOptions{DirectWrites: true})
	if w.raw == nil {
		t.Skip("no raw descriptor on this platform: direct writes are off")
	}
	const writers, each = 4, 300
	var wg sync.WaitGroup
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				size := i % 7
				if i%50 == 0 {
					size = 300 << 10 // larger than the socket buffer takes at once
				}
				r := Request{ID: uint64(g*each + i), Op: OpPut, Key: []byte("k"), Value: bytes.Repeat([]byte{byte(g)}, size)}
				write := w.WriteRequest
				if i%10 == 0 {
					time.Sleep(100 * time.Microsecond) // let the stream go idle
					write = w.WriteRequestAlone
				}
				if err := write(&r); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); w.Close(); close(done) }()
	next := make([]int, writers)
	rd := NewReader(b, 0, 1<<20)
	for n := 0; n < writers*each; n++ {
		body, err := rd.Next()
		if err != nil {
			t.Fatalf("after %d frames: %v", n, err)
		}
		r, err := DecodeRequest(body)
		if err != nil {
			t.Fatal(err)
		}
		g, i := int(r.ID)/each, int(r.ID)%each
		if i != next[g] {
			t.Fatalf("writer %d: frame %d arrived, want %d", g, i, next[g])
		}
		if len(r.Value) > 0 && r.Value[0] != byte(g) {
			t.Fatalf("writer %d frame %d: damaged value", g, i)
		}
		next[g]++
	}
	<-done
	if w.direct == 0 {
		t.Fatal("no append wrote directly")
	}
}

// A get's read mode survives the round trip; a mode on anything else, or an
// unknown one, is refused by name.
func TestReadModeInFlags(t *testing.T) {
	req := Request{ID: 1, Op: OpGet, Key: []byte("k"), Read: ReadIndex}
	frame := AppendRequest(nil, &req)
	got, err := DecodeRequest(frame[lenSize:])
	if err != nil || got.Read != ReadIndex {
		t.Fatalf("decoded %+v, %v", got, err)
	}
	put := Request{ID: 2, Op: OpPut, Key: []byte("k"), Read: ReadIndex}
	frame = AppendRequest(nil, &put)
	if _, err := DecodeRequest(frame[lenSize:]); err == nil || !strings.Contains(err.Error(), "only gets") {
		t.Fatalf("a put with a read mode: %v", err)
	}
	frame = AppendRequest(nil, &req)
	frame[lenSize+34] = 0x08 // no such flag
	if _, err := DecodeRequest(frame[lenSize:]); err == nil || !strings.Contains(err.Error(), "flags") {
		t.Fatalf("an unknown flag: %v", err)
	}
	for _, m := range []ReadMode{ReadThroughLog, ReadIndex, ReadLease, ReadBounded} {
		if p, err := ParseReadMode(m.String()); err != nil || p != m {
			t.Fatalf("ParseReadMode(%q) = %v, %v", m, p, err)
		}
	}
}

// The slot fields' exact layout: a bounded get ends with its min slot, a
// response with its applied slot, each flagged; frames without them are the
// 0.1 layout, byte for byte.
func TestSlotFieldsLayout(t *testing.T) {
	get := Request{ID: 1, Op: OpGet, Key: []byte("k")}
	v1 := AppendRequest(nil, &get)
	b := get
	b.Read, b.MinSlot, b.AllowStale = ReadBounded, 0x0102030405060708, true
	v2 := AppendRequest(nil, &b)
	if len(v2) != len(v1)+SlotSize {
		t.Fatalf("bounded get: %d bytes, want %d", len(v2), len(v1)+SlotSize)
	}
	if flags := v2[lenSize+34]; flags != 0x03|0x04 {
		t.Fatalf("bounded get's flags %#x, want 0x07 (mode 3, allow-stale)", flags)
	}
	if got := binary.LittleEndian.Uint64(v2[len(v2)-SlotSize:]); got != b.MinSlot {
		t.Fatalf("min slot %#x at the end, want %#x", got, b.MinSlot)
	}
	if n := binary.LittleEndian.Uint32(v2); int(n) != len(v2)-lenSize {
		t.Fatalf("length prefix %d, body %d", n, len(v2)-lenSize)
	}

	resp := Response{ID: 1, Status: StatusOK, Found: true, Value: []byte("v")}
	old := AppendResponse(nil, &resp)
	// The 0.1 layout, written out by hand.
	want := []byte{0, 0, 0, 0, KindResponse, 1, 0, 0, 0, 0, 0, 0, 0, byte(StatusOK), flagFound, 0, 0, 0, 0, 1, 'v', 0}
	binary.LittleEndian.PutUint32(want, uint32(len(want)-lenSize))
	if !bytes.Equal(old, want) {
		t.Fatalf("a response without slot fields:\n%x\nwant the 0.1 layout\n%x", old, want)
	}
	resp.Applied, resp.Stale = 0x1122334455667788, true
	withSlot := AppendResponse(nil, &resp)
	if len(withSlot) != len(old)+SlotSize || withSlot[lenSize+10] != flagFound|flagApplied|flagStale {
		t.Fatalf("a response with a slot: %x", withSlot)
	}
	if got := binary.LittleEndian.Uint64(withSlot[len(withSlot)-SlotSize:]); got != resp.Applied {
		t.Fatalf("applied %#x at the end, want %#x", got, resp.Applied)
	}
	got, err := DecodeResponse(withSlot[lenSize:])
	if err != nil || got.Applied != resp.Applied || !got.Stale || !got.Found || string(got.Value) != "v" {
		t.Fatalf("decoded %+v, %v", got, err)
	}
}

// Malformed slot fields give a DecodeError naming the field, never a panic.
func TestSlotFieldsMalformed(t *testing.T) {
	bounded := AppendRequest(nil, &Request{ID: 1, Op: OpGet, Key: []byte("k"), Read: ReadBounded, MinSlot: 9})[lenSize:]
	index := AppendRequest(nil, &Request{ID: 1, Op: OpGet, Key: []byte("k"), Read: ReadIndex})[lenSize:]
	resp := AppendResponse(nil, &Response{ID: 1, Status: StatusOK, Applied: 9})[lenSize:]
	plain := AppendResponse(nil, &Response{ID: 1, Status: StatusOK})[lenSize:]
	cases := []struct {
		name   string
		body   []byte
		decode func([]byte) error
		field  string
	}{
		{"bounded get without its min slot", bounded[:len(bounded)-SlotSize], decReq, "min slot"},
		{"bounded get with half a min slot", bounded[:len(bounded)-3], decReq, "min slot"},
		{"bounded get with a byte more", append(bytes.Clone(bounded), 0), decReq, "request"},
		{"a min slot on an index get", append(bytes.Clone(index), 1, 2, 3, 4, 5, 6, 7, 8), decReq, "request"},
		{"allow-stale on an index get", withByte(index, 34, byte(ReadIndex)|flagAllowStale), decReq, "flags"},
		{"allow-stale on a put", withByte(AppendRequest(nil, &Request{ID: 1, Client: 1, Seq: 1, Low: 1, Op: OpPut})[lenSize:], 34, flagAllowStale), decReq, "flags"},
		{"bounded mode on a put", withByte(AppendRequest(nil, &Request{ID: 1, Client: 1, Seq: 1, Low: 1, Op: OpPut})[lenSize:], 34, byte(ReadBounded)), decReq, "flags"},
		{"request flag 0x80", withByte(index, 34, 0x81), decReq, "flags"},
		{"applied flagged, missing", withByte(plain, 10, flagApplied), decResp, "applied"},
		{"applied cut short", resp[:len(resp)-1], decResp, "applied"},
		{"applied flagged zero", withTail(withByte(plain, 10, flagApplied), make([]byte, SlotSize)), decResp, "applied"},
		{"applied not flagged", withTail(plain, []byte{1, 0, 0, 0, 0, 0, 0, 0}), decResp, "response"},
		{"response flag 0x10", withByte(plain, 10, 0x10), decResp, "flags"},
	}
	for _, c := range cases {
		err := c.decode(c.body)
		var de *DecodeError
		if !errors.As(err, &de) || de.Field != c.field {
			t.Errorf("%s: got %v, want a DecodeError on %q", c.name, err, c.field)
		}
	}
	// Random bytes after a valid prefix: errors or messages, no panic.
	for _, body := range [][]byte{bounded, resp} {
		for cut := 0; cut <= len(body); cut++ {
			for _, tail := range [][]byte{nil, {0xff}, bytes.Repeat([]byte{0x80}, 11)} {
				m := append(bytes.Clone(body[:cut]), tail...)
				_, _ = DecodeRequest(m)
				_, _ = DecodeResponse(m)
			}
		}
	}
}

func decReq(b []byte) error  { _, err := DecodeRequest(b); return err }
func decResp(b []byte) error { _, err := DecodeResponse(b); return err }

func withByte(b []byte, i int, v byte) []byte { b = bytes.Clone(b); b[i] = v; return b }
func withTail(b, tail []byte) []byte          { return append(bytes.Clone(b), tail...) }

// A server speaks 0.1 and 0.2 and says which; other versions are refused
// with both sides' versions and who should upgrade.
func TestPreambleVersions(t *testing.T) {
	if Preamble != PreambleOf(Version2) || CurrentVersion.String() != "0.2" {
		t.Fatalf("preamble %q, version %v", Preamble, CurrentVersion)
	}
	for _, v := range []Version{Version1, Version2} {
		p := PreambleOf(v)
		got, err := ReadPreambleVersion(bytes.NewReader(p[:]))
		if err != nil || got != v {
			t.Fatalf("version %v: got %v, %v", v, got, err)
		}
		if got.HasSlots() != (v == Version2) {
			t.Fatalf("version %v: HasSlots %v", v, got.HasSlots())
		}
	}
	for _, c := range []struct {
		v    Version
		want string
	}{{0x0003, "upgrade the server"}, {0x0100, "upgrade the server"}, {0x0000, "upgrade the client"}} {
		p := PreambleOf(c.v)
		_, err := ReadPreambleVersion(bytes.NewReader(p[:]))
		var ve *VersionError
		if !errors.As(err, &ve) || ve.Client != c.v || !strings.Contains(err.Error(), c.want) ||
			!strings.Contains(err.Error(), "0.1 to 0.2") {
			t.Fatalf("version %v: %v", c.v, err)
		}
	}
	if _, err := ReadPreambleVersion(strings.NewReader("VEST")); err == nil {
		t.Fatal("a short preamble was accepted")
	}
}
