package session

import (
	"bytes"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"

	"pgregory.net/rapid"
)

// sampleTable returns a table with sessions whose results sit in rings, in
// far maps and at the top of the sequence space, a long result, a nil one,
// and an evicted session.
func sampleTable(t testing.TB) *Table[[]byte] {
	tb := newBytesTable(Options{MaxSessions: 3, MaxSessionResults: 8})
	tb.New()
	tb.Open(7)
	a, _ := tb.New()
	b, _ := tb.New() // evicts the first
	for _, w := range []struct {
		id, seq, low uint64
		r            []byte
	}{
		{a, 1, 1, []byte("one")}, {a, 3, 1, nil}, {a, 1 << 40, 1, bytes.Repeat([]byte("x"), 300)},
		{b, 5, 2, []byte{}}, {b, math.MaxUint64, 2, []byte("top")}, {7, 1, 1, bytes.Repeat([]byte("L"), readBuf+7)},
	} {
		if st, _ := tb.Begin(w.id, w.seq, w.low); st != Fresh {
			t.Fatalf("write %d: %v", w.seq, st)
		}
		tb.Record(w.id, w.seq, w.r)
	}
	if tb.Evicted() != 1 || len(tb.sessions[a].far) == 0 {
		t.Fatal("sample table")
	}
	return tb
}

func encode(t fataler, tb *Table[[]byte]) []byte {
	t.Helper()
	b, err := tb.AppendBinary(nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestEncodingRoundTrip(t *testing.T) {
	for _, tb := range []*Table[[]byte]{newBytesTable(Options{}), sampleTable(t)} {
		img := encode(t, tb)
		// What follows the table in the stream is left to be read.
		r := bytes.NewReader(append(bytes.Clone(img), "rest"...))
		got, err := ReadTable(r, tb.opts, Bytes{})
		if err != nil {
			t.Fatal(err)
		}
		mustCheck(t, got)
		if rest := make([]byte, 10); r.Len() != 4 {
			t.Fatalf("read past the table: %d bytes left", r.Len())
		} else if n, _ := r.Read(rest); string(rest[:n]) != "rest" {
			t.Fatal("rest")
		}
		if again := encode(t, got); !bytes.Equal(again, img) {
			t.Fatal("the table read back encodes differently")
		}
		var buf bytes.Buffer
		if _, err := tb.WriteTo(&buf); err != nil || !bytes.Equal(buf.Bytes(), img) {
			t.Fatal("WriteTo differs from AppendBinary")
		}
		// The same calls give the same results on both.
		var infos []Info
		for in := range tb.All() {
			infos = append(infos, in)
		}
		for _, in := range infos {
			s1, r1 := tb.Begin(in.ID, 3, in.Low)
			s2, r2 := got.Begin(in.ID, 3, in.Low)
			if s1 != s2 || !bytes.Equal(r1, r2) {
				t.Fatalf("session %#x: %v %q and %v %q", in.ID, s1, r1, s2, r2)
			}
		}
	}
}

// TestEncodingCanonical: tables that saw the same calls encode alike,
// whatever their rings' sizes and their maps' orders.
func TestEncodingCanonical(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		opts := Options{MaxSessions: rapid.IntRange(1, 4).Draw(t, "maxS"), MaxSessionResults: rapid.IntRange(1, 40).Draw(t, "maxR")}
		a, b := newBytesTable(opts), newBytesTable(opts)
		for range rapid.IntRange(0, 200).Draw(t, "steps") {
			switch rapid.IntRange(0, 5).Draw(t, "op") {
			case 0:
				a.New()
				b.New()
			case 1:
				id := rapid.Uint64Range(1, 5).Draw(t, "id")
				a.Open(id)
				b.Open(id)
			default:
				id := rapid.SampledFrom([]uint64{1, 2, IssuedBase, IssuedBase + 1}).Draw(t, "client")
				seq := rapid.OneOf(rapid.Uint64Range(1, 60), rapid.Uint64Range(1, 1<<30)).Draw(t, "seq")
				low := rapid.Uint64Range(0, 50).Draw(t, "low")
				r := []byte(rapid.StringN(0, 5, -1).Draw(t, "r"))
				s1, r1 := a.Begin(id, seq, low)
				s2, r2 := b.Begin(id, seq, low)
				if s1 != s2 || !bytes.Equal(r1, r2) {
					t.Fatalf("%v %v", s1, s2)
				}
				if s1 == Fresh {
					a.Record(id, seq, r)
					b.Record(id, seq, bytes.Clone(r))
				}
			}
			if err := a.Check(); err != nil {
				t.Fatal(err)
			}
		}
		img := encode(t, a)
		if !bytes.Equal(img, encode(t, b)) {
			t.Fatal("equal tables encode differently")
		}
		c, err := ReadTable(bytes.NewReader(img), opts, Bytes{})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(encode(t, c), img) {
			t.Fatal("round trip")
		}
	})
}

func TestEncodingRefusesInFlight(t *testing.T) {
	tb := newBytesTable(Options{})
	id, _ := tb.New()
	tb.Begin(id, 1, 1)
	if _, err := tb.AppendBinary(nil); err == nil || !strings.Contains(err.Error(), "in flight") {
		t.Fatalf("encoding with a write in flight: %v", err)
	}
}

func mustRefuse(t *testing.T, img []byte, opts Options, want string) {
	t.Helper()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	before := ms.TotalAlloc
	_, err := ReadTable(bytes.NewReader(img), opts, Bytes{})
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("read: %v, want an error with %q", err, want)
	}
	if !strings.HasPrefix(err.Error(), "session: table: ") {
		t.Fatalf("error without the package's prefix: %v", err)
	}
	runtime.ReadMemStats(&ms)
	if grew := ms.TotalAlloc - before; grew > 8<<20 {
		t.Fatalf("refusing a %d-byte encoding allocated %d bytes", len(img), grew)
	}
}

func TestReadRefusesMalformed(t *testing.T) {
	src := sampleTable(t)
	img := encode(t, src)
	for i := 0; i < len(img); i += 1 + i/1000 { // every cut in the sessions, some in the long result
		if _, err := ReadTable(bytes.NewReader(img[:i]), src.opts, Bytes{}); err == nil || !strings.Contains(err.Error(), "truncated") {
			t.Fatalf("%d of %d bytes: %v", i, len(img), err)
		}
	}
	mustRefuse(t, img, Options{MaxSessions: 4, MaxSessionResults: 8}, "MaxSessions")
	// A body length that claims more than the sessions hold.
	longer := append(bytes.Clone(img), 0)
	binary.LittleEndian.PutUint64(longer[16:], binary.LittleEndian.Uint64(longer[16:])+1)
	mustRefuse(t, longer, src.opts, "1 bytes after the last session")

	// Any change of bytes is refused or reads to a valid table: no panic.
	rng := rand.New(rand.NewPCG(1, 2))
	accepted := 0
	for range 2000 {
		bad := bytes.Clone(img)
		for range 1 + rng.IntN(3) {
			bad[rng.IntN(len(bad))] ^= byte(1 + rng.IntN(255))
		}
		tb, err := ReadTable(bytes.NewReader(bad), src.opts, Bytes{})
		if err != nil {
			if !strings.HasPrefix(err.Error(), "session: table: ") {
				t.Fatalf("error without the package's prefix: %v", err)
			}
			continue
		}
		accepted++
		mustCheck(t, tb)
		if _, err := ReadTable(bytes.NewReader(encode(t, tb)), src.opts, Bytes{}); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d of 2000 changed encodings read to a valid table", accepted)

	u64 := binary.LittleEndian.AppendUint64
	uv := binary.AppendUvarint
	const n = IssuedBase + 5
	enc := func(maxS, maxR, next, nsess uint64, sessions ...[]byte) []byte {
		body := u64(u64(u64(u64(nil, maxS), maxR), next), nsess)
		body = append(body, bytes.Join(sessions, nil)...)
		b := []byte(tableMagic)
		b = binary.LittleEndian.AppendUint32(b, tableVersion)
		b = binary.LittleEndian.AppendUint32(b, 0)
		return append(u64(b, uint64(len(body))), body...)
	}
	sess := func(id, low uint64, results ...uint64) []byte { // results: gap, length pairs (the bytes are x)
		b := u64(u64(nil, id), low)
		b = uv(b, uint64(len(results)/2))
		for i := 0; i < len(results); i += 2 {
			b = uv(uv(b, results[i]), results[i+1])
			b = append(b, bytes.Repeat([]byte("x"), int(min(results[i+1], 100)))...)
		}
		return b
	}
	o := Options{MaxSessions: 3, MaxSessionResults: 8}
	for _, tc := range []struct {
		name, want string
		img        []byte
	}{
		{"valid", "", enc(3, 8, n, 2, sess(7, 1), sess(n-1, 4, 0, 0, 5, 1))},
		{"magic", "magic", append([]byte("X"), enc(3, 8, n, 0)[1:]...)},
		{"version", "version 2", func() []byte { b := enc(3, 8, n, 0); b[8] = 2; return b }()},
		{"flags", "flags", func() []byte { b := enc(3, 8, n, 0); b[12] = 1; return b }()},
		{"length", "length 3", func() []byte { b := enc(3, 8, n, 0); b[16], b[17] = 3, 0; return b }()},
		{"huge length", "truncated", func() []byte { b := enc(3, 8, n, 0); b[22] = 0x7f; return b }()},
		{"options", "MaxSessionResults 9", enc(3, 9, n, 0)},
		{"next issued below", "next issued", enc(3, 8, 5, 0)},
		{"next issued above", "next issued", enc(3, 8, IssuedBase+IssuedSpan+1, 0)},
		{"too many sessions", "4 sessions", enc(3, 8, n, 4)},
		{"sessions missing", "truncated", enc(3, 8, n, 3, sess(7, 1))},
		{"session ID 0", "ID 0", enc(3, 8, n, 1, sess(0, 1))},
		{"session twice", "appears twice", enc(3, 8, n, 2, sess(7, 1), sess(7, 1))},
		{"unissued ID", "not issued yet", enc(3, 8, n, 1, sess(n, 1))},
		{"low 0", "low mark 0", enc(3, 8, n, 1, sess(7, 0))},
		{"too many results", "9 results", enc(3, 8, n, 1, sess(7, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0))},
		{"sequence past 2^64", "past 2^64", enc(3, 8, n, 1, sess(7, math.MaxUint64, 0, 0, 0, 0))},
		{"gap past 2^64", "past 2^64", enc(3, 8, n, 1, sess(7, 5, math.MaxUint64-4, 0))},
		{"uvarint overflow", "overflows", enc(3, 8, n, 1, append(u64(u64(nil, 7), 1), bytes.Repeat([]byte{0xff}, 11)...))},
		{"huge result, few bytes", "truncated", enc(3, 8, n, 1, append(uv(uv(u64(u64(nil, 7), 1), 1), 0), uv(nil, 1<<62)...))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.want == "" {
				tb, err := ReadTable(bytes.NewReader(tc.img), o, Bytes{})
				if err != nil {
					t.Fatalf("a valid encoding was refused: %v", err)
				}
				mustCheck(t, tb)
				return
			}
			mustRefuse(t, tc.img, o, tc.want)
		})
	}
}

// FuzzReadTable: no input panics ReadTable; an accepted one is a valid
// table that round-trips.
func FuzzReadTable(f *testing.F) {
	f.Add(encode(f, newBytesTable(Options{MaxSessions: 3, MaxSessionResults: 8})))
	f.Add(encode(f, sampleTable(f)))
	f.Fuzz(func(t *testing.T, img []byte) {
		tb, err := ReadTable(bytes.NewReader(img), Options{MaxSessions: 3, MaxSessionResults: 8}, Bytes{})
		if err != nil {
			return
		}
		mustCheck(t, tb)
		again := encode(t, tb)
		if !bytes.Equal(again, img[:len(again)]) {
			t.Fatal("an accepted encoding does not round-trip")
		}
	})
}
