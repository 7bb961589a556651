package kv

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"math/rand/v2"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"
)

type fataler interface {
	Fatalf(string, ...any)
	Helper()
}

// imageOf returns the store's image, as Snapshot and WriteTo make it.
func imageOf(t fataler, s *Store) []byte {
	t.Helper()
	var buf bytes.Buffer
	n, err := s.Snapshot().WriteTo(&buf)
	if err != nil || n != int64(buf.Len()) {
		t.Fatalf("WriteTo: %d bytes, %v; buffer holds %d", n, err, buf.Len())
	}
	return buf.Bytes()
}

// restoredFrom returns a store with options opts restored from img.
func restoredFrom(t fataler, opts Options, img []byte) *Store {
	t.Helper()
	s := New(opts)
	if err := s.Restore(bytes.NewReader(img)); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	checkStore(t, s)
	return s
}

// checkStore verifies the store's invariants in full.
func checkStore(t fataler, s *Store) {
	t.Helper()
	if err := s.data.check(s.data.hash); err != nil {
		t.Fatalf("table: %v", err)
	}
	if s.Keys() != s.data.Len() || s.Sessions() != s.sess.Len() {
		t.Fatalf("counts %d keys %d sessions, hold %d and %d", s.Keys(), s.Sessions(), s.data.Len(), s.sess.Len())
	}
	if s.sess.Options() != s.opts.sessionOptions() {
		t.Fatalf("session options %+v, store's %+v", s.sess.Options(), s.opts)
	}
	if err := s.sess.Check(); err != nil {
		t.Fatalf("%v", err)
	}
}

// sessionsImage returns the store's sessions in the session table's
// canonical encoding: equal bytes, equal sessions (IDs, LRU order, low
// marks, results, next issued ID).
func sessionsImage(t fataler, s *Store) []byte {
	t.Helper()
	b, err := s.sess.AppendBinary(nil)
	if err != nil {
		t.Fatalf("encoding the sessions: %v", err)
	}
	return b
}

// sameState requires a and b to hold the same logical state, and to have
// the same Digest.
func sameState(t fataler, a, b *Store) {
	t.Helper()
	if a.opts != b.opts || a.sess.NextIssued() != b.sess.NextIssued() || a.Keys() != b.Keys() || a.Sessions() != b.Sessions() {
		t.Fatalf("options %+v %+v, next issued %#x %#x, keys %d %d, sessions %d %d",
			a.opts, b.opts, a.sess.NextIssued(), b.sess.NextIssued(), a.Keys(), b.Keys(), a.Sessions(), b.Sessions())
	}
	if ca, cb := contents(a.data), contents(b.data); !reflect.DeepEqual(ca, cb) {
		t.Fatalf("contents differ: %d keys and %d", len(ca), len(cb))
	}
	if !bytes.Equal(sessionsImage(t, a), sessionsImage(t, b)) {
		t.Fatalf("sessions differ")
	}
	if a.Digest() != b.Digest() {
		t.Fatalf("equal states, different digests")
	}
}

// applyCmds applies cmds (copies) to s and returns the results.
func applyCmds(s *Store, cmds ...[]byte) [][]byte {
	res := make([][]byte, len(cmds))
	in := make([][]byte, len(cmds))
	for i, c := range cmds {
		in[i] = bytes.Clone(c)
	}
	s.Apply(in, res)
	return res
}

// smallStore returns a store holding a few keys (an empty key, an empty
// value, binary bytes) and sessions with results in their rings, in their
// far maps and at the top of the sequence space, one evicted.
func smallStore(t *testing.T) *Store {
	s := New(Options{MaxSessions: 3, MaxSessionResults: 8})
	apply(t, s, put(0, 0, 0, "", "empty key"), put(0, 0, 0, "e", ""), put(0, 0, 0, "bin\x00\xff", "\x00\x01"),
		Op{Kind: NewSession}, Op{Kind: OpenSession, Client: 7}, Op{Kind: NewSession}, Op{Kind: NewSession})
	a, b := IssuedSessionBase+1, IssuedSessionBase+2 // IssuedSessionBase was evicted
	apply(t, s, put(a, 1, 1, "x", "1"), put(a, 3, 1, "y", "3"), put(a, 1<<40, 1, "z", "far"),
		Op{Kind: Delete, Client: b, Seq: 5, Low: 2, Key: []byte("e")}, Op{Kind: CAS, Client: b, Seq: math.MaxUint64, Low: 2, Key: []byte("y"), Expect: []byte("3"), Value: []byte("4")},
		Op{Kind: Delete, Client: b, Seq: 6, Low: 2, Key: []byte("nothing")})
	if _, far := s.sess.Result(a, 1<<40); s.Evicted() != 1 || s.sess.Has(IssuedSessionBase) || !far {
		t.Fatalf("small store: evicted %d, sessions %d", s.Evicted(), s.sess.Len())
	}
	return s
}

func TestSnapshotRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	large := func(t *testing.T) *Store {
		s := New(Options{MaxSessions: 500})
		var ops []Op
		for i := range 30_000 {
			v := make([]byte, rng.IntN(3)*rng.IntN(200))
			for j := range v {
				v[j] = byte(rng.Uint32())
			}
			ops = append(ops, put(0, 0, 0, fmt.Sprintf("key%d", rng.IntN(40_000)), string(v)))
			if i%7 == 0 {
				ops = append(ops, Op{Kind: Delete, Key: []byte(fmt.Sprintf("key%d", rng.IntN(40_000)))})
			}
		}
		// Larger than Restore's and WriteTo's buffers.
		ops = append(ops, put(0, 0, 0, "big", strings.Repeat("v", 3*imageBufSize+5)),
			put(0, 0, 0, strings.Repeat("k", imageBufSize+1), strings.Repeat("w", imageBufSize-3)))
		for i := range 600 {
			ops = append(ops, Op{Kind: NewSession}, Op{Kind: OpenSession, Client: uint64(i + 1)})
		}
		apply(t, s, ops...)
		ops = ops[:0]
		for i := range 5000 {
			c := uint64(rng.IntN(700) + 1)
			if rng.IntN(2) == 0 {
				c += IssuedSessionBase - 1
			}
			seq := uint64(i/10 + 1)
			if rng.IntN(20) == 0 {
				seq += 50_000
			}
			ops = append(ops, put(c, seq, 1, fmt.Sprintf("key%d", rng.IntN(40_000)), "s"))
		}
		apply(t, s, ops...)
		return s
	}
	for _, tc := range []struct {
		name string
		make func(*testing.T) *Store
	}{
		{"empty", func(*testing.T) *Store { return New(Options{}) }},
		{"small", smallStore},
		{"large", large},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.make(t)
			img := imageOf(t, s)
			if d := s.Digest(); d != sha256.Sum256(img) {
				t.Fatalf("Digest is not the image's SHA-256")
			}
			r := restoredFrom(t, s.opts, img)
			sameState(t, s, r)
			if !bytes.Equal(imageOf(t, r), img) {
				t.Fatalf("the restored store's image differs from the one it was restored from")
			}
			// Restore replaces a store's whole state.
			other := New(s.opts)
			apply(t, other, put(0, 0, 0, "only in other", "x"), Op{Kind: NewSession}, Op{Kind: OpenSession, Client: 99})
			if err := other.Restore(bytes.NewReader(img)); err != nil {
				t.Fatal(err)
			}
			checkStore(t, other)
			sameState(t, s, other)
			// The same next command gives the same results on all three.
			cmd := AppendCommand(nil, []Op{{Kind: NewSession}, put(7, 2, 1, "x", "after"), get("x"), get("big"),
				Op{Kind: OpenSession, Client: 1000}, put(IssuedSessionBase+1, 3, 1, "y", "retried?")})
			want := applyCmds(s, cmd)
			for _, st := range []*Store{r, other} {
				if got := applyCmds(st, cmd); !reflect.DeepEqual(got, want) {
					t.Fatalf("after restore: %s, want %s", describe(got[0]), describe(want[0]))
				}
				sameState(t, s, st)
			}
		})
	}
}

// TestSnapshotSessionsExactlyOnce: a write applied before the snapshot and
// retried to a restored store returns its recorded result and does not apply
// again; an evicted issued session stays refused; the LRU order survives, so
// the restored store evicts the same session next.
func TestSnapshotSessionsExactlyOnce(t *testing.T) {
	opts := Options{MaxSessions: 2}
	s := New(opts)
	newSession := func(s *Store) uint64 {
		r := apply(t, s, Op{Kind: NewSession})
		if r[0].Code != CodeOK {
			t.Fatalf("new-session: %+v", r[0])
		}
		return binary.LittleEndian.Uint64(r[0].Value)
	}
	evicted := newSession(s)
	a := newSession(s)
	cas := Op{Kind: CAS, Client: a, Seq: 1, Low: 1, Key: []byte("k"), Expect: nil, Value: []byte("first")}
	if r := apply(t, s, cas); r[0].Code != CodeOK || !r[0].Swapped {
		t.Fatalf("cas: %+v", r[0])
	}
	apply(t, s, put(0, 0, 0, "k", "second"))
	b := newSession(s) // evicts the least recently used: evicted
	if s.sess.Has(evicted) || s.Evicted() != 1 {
		t.Fatalf("session %#x not evicted", evicted)
	}
	apply(t, s, put(a, 2, 1, "other", "x")) // a is now the most recently used

	r := restoredFrom(t, opts, imageOf(t, s))
	sameState(t, s, r)
	for _, st := range []*Store{s, r} {
		// The retry gets the recorded result (swapped) and changes nothing.
		if res := apply(t, st, cas); res[0].Code != CodeOK || !res[0].Swapped {
			t.Fatalf("retried cas: %+v, want its first result", res[0])
		}
		if res := apply(t, st, get("k")); string(res[0].Value) != "second" {
			t.Fatalf("k = %q: the retried cas applied again", res[0].Value)
		}
		res := apply(t, st, Op{Kind: OpenSession, Client: evicted})
		if res[0].Code != CodeSessionExpired || !strings.Contains(string(res[0].Value), "evicted") {
			t.Fatalf("reopening the evicted session: %+v (%s)", res[0], res[0].Value)
		}
		if res := apply(t, st, put(evicted, 1, 1, "k", "late")); res[0].Code != CodeSessionExpired {
			t.Fatalf("a write of the evicted session: %+v", res[0])
		}
		// b is the least recently used: the next session evicts it, not a.
		c := newSession(st)
		if st.sess.Has(b) || !st.sess.Has(a) || !st.sess.Has(c) {
			t.Fatalf("evicted the wrong session")
		}
	}
	sameState(t, s, r)
}

// TestSnapshotContinuedApply: a store restored from another's image at some
// point, fed the commands the other applied since, then both the same
// further commands, gives byte-identical results and has equal digests. The
// image is written only after the first store applied more commands.
func TestSnapshotContinuedApply(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		opts := Options{
			MaxSessions:       rapid.IntRange(0, 4).Draw(t, "maxSessions"),
			MaxSessionResults: rapid.SampledFrom([]int{0, 1, 3, 8, 40}).Draw(t, "maxSessionResults"),
		}
		a := New(opts)
		a.readCap = rapid.SampledFrom([]int{MaxReadBytes, 1, 3000}).Draw(t, "readCap")
		keys := rapid.SliceOfN(rapid.OneOf(
			rapid.SliceOfN(rapid.ByteRange('a', 'c'), 0, 3),
			rapid.SliceOfN(rapid.Byte(), 0, 40),
		), 1, 40).Draw(t, "keys")
		clients := map[uint64]*client{}
		command := func() []byte {
			ops := make([]Op, rapid.IntRange(1, 20).Draw(t, "ops"))
			for i := range ops {
				ops[i] = genOp(t, clients, keys)
			}
			cmd := AppendCommand(nil, ops)
			if rapid.IntRange(0, 30).Draw(t, "malformed") == 0 {
				cmd = cmd[:rapid.IntRange(0, len(cmd)-1).Draw(t, "truncate")]
			}
			return cmd
		}
		for range rapid.IntRange(0, 30).Draw(t, "before") {
			applyCmds(a, command(), command())
		}
		want := a.Digest()
		im := a.Snapshot()
		var since [][]byte // commands a applied after the snapshot
		var results [][][]byte
		for range rapid.IntRange(0, 10).Draw(t, "between") {
			c := command()
			since = append(since, c)
			results = append(results, applyCmds(a, c))
		}
		var buf bytes.Buffer
		if _, err := im.WriteTo(&buf); err != nil {
			t.Fatal(err)
		}
		if sha256.Sum256(buf.Bytes()) != want {
			t.Fatalf("the image is not the state at Snapshot")
		}
		b := New(opts)
		b.readCap = a.readCap
		applyCmds(b, command()) // a state the restore replaces
		if err := b.Restore(&buf); err != nil {
			t.Fatal(err)
		}
		checkStore(t, b)
		if b.Digest() != want {
			t.Fatalf("restored digest differs from the digest at Snapshot")
		}
		for i, c := range since {
			if got := applyCmds(b, c); !reflect.DeepEqual(got, results[i]) {
				t.Fatalf("command %d after the snapshot: %s, want %s", i, describe(got[0]), describe(results[i][0]))
			}
		}
		sameState(t, a, b)
		for i := range rapid.IntRange(1, 30).Draw(t, "after") {
			c1, c2 := command(), command()
			ra, rb := applyCmds(a, c1, c2), applyCmds(b, c1, c2)
			if !reflect.DeepEqual(ra, rb) {
				t.Fatalf("command %d after catching up: %s, want %s", i, describe(rb[0]), describe(ra[0]))
			}
			if a.Digest() != b.Digest() {
				t.Fatalf("command %d after catching up: digests differ", i)
			}
		}
		sameState(t, a, b)
		checkStore(t, b)
	})
}

// TestSnapshotIsFrozen writes an image from another goroutine while the
// store applies commands that change every part of its state (in place,
// moved entries, compactions, growth, sessions), and requires the image of
// the state at Snapshot.
func TestSnapshotIsFrozen(t *testing.T) {
	s := New(Options{MaxSessions: 50})
	rng := rand.New(rand.NewPCG(7, 8))
	gen := func(n int) []byte {
		ops := make([]Op, n)
		for i := range ops {
			k := fmt.Sprintf("k%d", rng.IntN(3000))
			switch rng.IntN(6) {
			case 0:
				ops[i] = Op{Kind: Delete, Key: []byte(k)}
			case 1:
				ops[i] = Op{Kind: NewSession}
			case 2:
				c := IssuedSessionBase + uint64(rng.IntN(100))
				ops[i] = put(c, uint64(rng.IntN(1000)+1), uint64(rng.IntN(50)+1), k, "s")
			default:
				ops[i] = put(0, 0, 0, k, strings.Repeat("v", rng.IntN(300)))
			}
		}
		return AppendCommand(nil, ops)
	}
	for range 50 {
		applyCmds(s, gen(100))
	}
	want := s.Digest()
	im := s.Snapshot()
	done := make(chan []byte)
	go func() {
		var buf bytes.Buffer
		if _, err := im.WriteTo(&buf); err != nil {
			panic(err)
		}
		done <- buf.Bytes()
	}()
	for range 200 {
		applyCmds(s, gen(100))
	}
	img := <-done
	if sha256.Sum256(img) != want {
		t.Fatalf("the image written while applying is not the state at Snapshot")
	}
	if s.Digest() == want {
		t.Fatalf("the applies changed nothing")
	}
	if r := restoredFrom(t, s.opts, img); r.Digest() != want {
		t.Fatalf("restored digest differs")
	}
	// Written again (concurrently): the same bytes.
	again := make(chan []byte, 2)
	for range 2 {
		go func() {
			var buf bytes.Buffer
			_, _ = im.WriteTo(&buf)
			again <- buf.Bytes()
		}()
	}
	for range 2 {
		if !bytes.Equal(<-again, img) {
			t.Fatalf("a second WriteTo wrote other bytes")
		}
	}
}

// fixCRC recomputes an image's trailing checksum after a test changed it.
func fixCRC(img []byte) []byte {
	img = bytes.Clone(img)
	if len(img) >= 4 {
		binary.LittleEndian.PutUint32(img[len(img)-4:], crc32.Checksum(img[:len(img)-4], castagnoli))
	}
	return img
}

// mustRefuse requires restoring img into s to fail with an error containing
// want, and to leave s as it was.
func mustRefuse(t fataler, s *Store, img []byte, want string) {
	t.Helper()
	before := s.Digest()
	err := s.Restore(bytes.NewReader(img))
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("restore: %v, want an error with %q", err, want)
	}
	if s.Digest() != before {
		t.Fatalf("a refused restore changed the store")
	}
	checkStore(t, s)
}

// restoreAnyway restores img into s, which must either refuse it and stay as
// it was, or hold a valid state that applies commands, writes an image, and
// restores from it. It reports whether img was accepted.
func restoreAnyway(t fataler, s *Store, img []byte) bool {
	t.Helper()
	before := s.Digest()
	if err := s.Restore(bytes.NewReader(img)); err != nil {
		if !strings.HasPrefix(err.Error(), "kv: image") {
			t.Fatalf("error without the package's prefix: %v", err)
		}
		if s.Digest() != before {
			t.Fatalf("a refused restore changed the store")
		}
		return false
	}
	checkStore(t, s)
	r := restoredFrom(t, s.opts, imageOf(t, s))
	sameState(t, s, r)
	cmd := AppendCommand(nil, []Op{{Kind: NewSession}, {Kind: OpenSession, Client: 7}, put(7, 2, 1, "x", "y"),
		put(IssuedSessionBase+1, 3, 2, "k", "v"), get("x"), {Kind: Delete, Key: []byte("e")}})
	applyCmds(s, cmd)
	checkStore(t, s)
	return true
}

func TestRestoreRefusesMalformed(t *testing.T) {
	src := smallStore(t)
	img := imageOf(t, src)
	target := func() *Store {
		s := New(src.opts)
		apply(t, s, put(0, 0, 0, "target", "state"), Op{Kind: NewSession})
		return s
	}
	s := target()
	for i := range len(img) {
		mustRefuse(t, s, img[:i], "kv: image")
	}
	mustRefuse(t, s, append(bytes.Clone(img), 0), "bytes after the image's end")
	mustRefuse(t, New(Options{MaxSessions: 4, MaxSessionResults: 8}), img, "MaxSessions")

	// Any change of bytes is refused (by the checksum at the end, if not by
	// a structural check before); with the checksum fixed, the image is
	// refused or restores to a valid state.
	rng := rand.New(rand.NewPCG(9, 10))
	accepted := 0
	for range 3000 {
		bad := bytes.Clone(img)
		for range 1 + rng.IntN(3) {
			bad[rng.IntN(len(bad)-4)] ^= byte(1 + rng.IntN(255))
		}
		mustRefuse(t, s, bad, "kv: image")
		if restoreAnyway(t, s, fixCRC(bad)) {
			accepted++
			s = target()
		}
	}
	t.Logf("%d of 3000 changed images (checksum fixed) restored to a valid state", accepted)

	// Structural problems, each with a valid checksum.
	u64 := binary.LittleEndian.AppendUint64
	uv := binary.AppendUvarint
	// hdr is the image's header and its session table's, for a table of
	// nsess sessions that follow (sess); the table's length is fixed up by
	// cat, from the nsess sessions after it.
	hdr := func(maxS, maxR, next, nsess, nkeys uint64) []byte {
		b := []byte(imageMagic)
		b = binary.LittleEndian.AppendUint32(b, imageVersion)
		b = binary.LittleEndian.AppendUint32(b, 0)
		b = u64(b, nkeys)
		b = append(b, "VSESSION"...)
		b = binary.LittleEndian.AppendUint32(b, 1)
		b = binary.LittleEndian.AppendUint32(b, 0)
		b = u64(b, 0) // the table's length
		for _, v := range []uint64{maxS, maxR, next, nsess} {
			b = u64(b, v)
		}
		return b
	}
	const tableLenAt = 8 + 4 + 4 + 8 + 8 + 4 + 4 // where hdr holds the table's length
	const n = IssuedSessionBase + 5
	type section []byte                                       // a session, part of the table
	sess := func(id, low uint64, results ...uint64) section { // results: gap, byte pairs
		b := u64(u64(nil, id), low)
		b = uv(b, uint64(len(results)/2))
		for i := 0; i < len(results); i += 2 {
			b = append(uv(b, results[i]), 1, byte(results[i+1]))
		}
		return b
	}
	kv := func(k, v string) []byte {
		return append(uv(append(uv(nil, uint64(len(k))), k...), uint64(len(v))), v...)
	}
	// cat joins the parts (a hdr first) and sets the table's length to
	// cover the body and the sections (sessions) that follow it.
	cat := func(hdr []byte, parts ...any) []byte {
		img := bytes.Clone(hdr)
		tableLen := uint64(len(hdr) - tableLenAt - 8)
		for _, p := range parts {
			switch p := p.(type) {
			case section:
				tableLen += uint64(len(p))
				img = append(img, p...)
			case []byte:
				img = append(img, p...)
			}
		}
		if len(hdr) > tableLenAt {
			binary.LittleEndian.PutUint64(img[tableLenAt:], tableLen)
		}
		return fixCRC(append(img, 0, 0, 0, 0))
	}
	withHdr := func(f func([]byte)) []byte { h := hdr(3, 8, n, 0, 0); f(h); return cat(h) }
	for _, tc := range []struct {
		name, want string
		img        []byte
	}{
		{"valid", "", cat(hdr(3, 8, n, 2, 2), sess(7, 1), sess(n-1, 4, 0, 0, 5, 1), kv("a", "1"), kv("b", ""))},
		{"magic", "magic", withHdr(func(h []byte) { h[0] = 'X' })},
		{"version", "version 3", withHdr(func(h []byte) { h[8] = 3 })},
		{"table magic", "not a session table", withHdr(func(h []byte) { h[24] = 'X' })},
		{"flags", "flags", withHdr(func(h []byte) { h[12] = 2 })},
		{"options", "MaxSessionResults 9", cat(hdr(3, 9, n, 0, 0))},
		{"next issued below", "next issued", cat(hdr(3, 8, 5, 0, 0))},
		{"next issued above", "next issued", cat(hdr(3, 8, IssuedSessionBase+IssuedSessionSpan+1, 0, 0))},
		{"too many sessions", "4 sessions", cat(hdr(3, 8, n, 4, 0))},
		{"sessions missing", "truncated", cat(hdr(3, 8, n, 3, 0), sess(7, 1))},
		{"keys missing", "truncated", cat(hdr(3, 8, n, 0, math.MaxUint64), kv("a", "1"))},
		{"session ID 0", "ID 0", cat(hdr(3, 8, n, 1, 0), sess(0, 1))},
		{"session twice", "appears twice", cat(hdr(3, 8, n, 2, 0), sess(7, 1), sess(7, 1))},
		{"unissued ID", "not issued yet", cat(hdr(3, 8, n, 1, 0), sess(n, 1))},
		{"low 0", "low mark 0", cat(hdr(3, 8, n, 1, 0), sess(7, 0))},
		{"too many results", "9 results", cat(hdr(3, 8, n, 1, 0), sess(7, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0))},
		{"result byte", "byte 0x10", cat(hdr(3, 8, n, 1, 0), sess(7, 1, 0, 16))},
		{"sequence past 2^64", "past 2^64", cat(hdr(3, 8, n, 1, 0), sess(7, math.MaxUint64, 0, 0, 0, 0))},
		{"gap past 2^64", "past 2^64", cat(hdr(3, 8, n, 1, 0), sess(7, 5, math.MaxUint64-4, 0))},
		{"uvarint overflow", "overflows", cat(hdr(3, 8, n, 1, 0), section(append(u64(u64(nil, 7), 1), bytes.Repeat([]byte{0xff}, 11)...)))},
		{"result length", "result of 2 bytes", cat(hdr(3, 8, n, 1, 0), section(append(uv(u64(u64(nil, 7), 1), 1), 0, 2, 0, 0)))},
		{"keys unsorted", "not above", cat(hdr(3, 8, n, 0, 2), kv("b", "1"), kv("a", "2"))},
		{"key twice", "not above", cat(hdr(3, 8, n, 0, 2), kv("a", "1"), kv("a", "2"))},
		{"table too long", "bytes after the last session", cat(hdr(3, 8, n, 0, 0), section{0})},
		{"key too long", "length 4294967296", cat(hdr(3, 8, n, 0, 1), uv(nil, 1<<32))},
		{"value too long", "value length 4294967296", cat(hdr(3, 8, n, 0, 1), uv(nil, 1), []byte("k"), uv(nil, 1<<32))},
		{"huge key, few bytes", "truncated", cat(hdr(3, 8, n, 0, 1), uv(nil, math.MaxUint32), []byte("abc"))},
		{"huge value, few bytes", "truncated", cat(hdr(3, 8, n, 0, 1), kv("k", "")[:2], uv(nil, math.MaxUint32), bytes.Repeat([]byte("v"), imageBufSize+10))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := target()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			alloc := ms.TotalAlloc
			if tc.want == "" {
				if !restoreAnyway(t, s, tc.img) {
					t.Fatalf("a valid image was refused: %v", s.Restore(bytes.NewReader(tc.img)))
				}
				return
			}
			mustRefuse(t, s, tc.img, tc.want)
			runtime.ReadMemStats(&ms)
			if grew := ms.TotalAlloc - alloc; grew > 16<<20 {
				t.Fatalf("refusing a %d-byte image allocated %d bytes", len(tc.img), grew)
			}
		})
	}
}

// A reader that fails, and one that never makes progress, are reported.
func TestRestoreReadErrors(t *testing.T) {
	img := imageOf(t, smallStore(t))
	s := New(Options{MaxSessions: 3, MaxSessionResults: 8})
	err := s.Restore(io.MultiReader(bytes.NewReader(img[:40]), iotestErrReader{}))
	if err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Fatalf("restore from a failing reader: %v", err)
	}
	if err := s.Restore(zeroReader{}); err == nil || !strings.Contains(err.Error(), io.ErrNoProgress.Error()) {
		t.Fatalf("restore from a reader without progress: %v", err)
	}
	if err := s.Restore(iotestOneByte{bytes.NewReader(img)}); err != nil {
		t.Fatalf("restore one byte at a time: %v", err)
	}
	// A failing writer's error is returned.
	if _, err := smallStore(t).Snapshot().WriteTo(failWriter{}); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("WriteTo a failing writer: %v", err)
	}
}

type iotestErrReader struct{}

func (iotestErrReader) Read([]byte) (int, error) { return 0, fmt.Errorf("disk on fire") }

type zeroReader struct{}

func (zeroReader) Read([]byte) (int, error) { return 0, nil }

type iotestOneByte struct{ r io.Reader }

func (o iotestOneByte) Read(p []byte) (int, error) { return o.r.Read(p[:min(1, len(p))]) }

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, fmt.Errorf("disk full") }

// FuzzRestore: no input panics Restore; an accepted one is a valid state
// that round-trips. `go test` runs the seeds; fuzz with
//
//	go test -tags contracts -run '^$' -fuzz FuzzRestore ./tools/vestad/kv
func FuzzRestore(f *testing.F) {
	s := New(Options{MaxSessions: 3, MaxSessionResults: 8})
	f.Add(imageOf(f, s))
	applyCmds(s, AppendCommand(nil, []Op{put(0, 0, 0, "a", "b"), {Kind: NewSession}, put(IssuedSessionBase, 1, 1, "c", "d")}))
	f.Add(imageOf(f, s))
	f.Fuzz(func(t *testing.T, img []byte) {
		s := New(Options{MaxSessions: 3, MaxSessionResults: 8})
		restoreAnyway(t, s, img)
		restoreAnyway(t, New(Options{MaxSessions: 3, MaxSessionResults: 8}), fixCRC(img))
	})
}

// BenchmarkSnapshot: a store of 100 000 keys with 64-byte values (and 1000
// sessions). hold: the time Snapshot holds the apply goroutine. write: WriteTo
// of a fresh Snapshot, throughput of image bytes (MB/s; the image's key sort
// included); write-arena-order: WriteArenaOrder, what checkpoints write.
// restore: Restore from the image. digest: Digest.
//
//	go test -tags contracts -run '^$' -bench Snapshot ./tools/vestad/kv
func BenchmarkSnapshot(b *testing.B) {
	s := New(Options{})
	val := make([]byte, benchValLen)
	res := make([][]byte, 1)
	ops := make([]Op, 1000)
	for k := 0; k < benchKeys; k += len(ops) {
		for i := range ops {
			key := make([]byte, benchKeyLen)
			benchKey(key, k+i)
			ops[i] = Op{Kind: Put, Key: key, Value: val}
		}
		s.Apply([][]byte{AppendCommand(nil, ops)}, res)
	}
	for i := range ops {
		ops[i] = Op{Kind: NewSession}
	}
	s.Apply([][]byte{AppendCommand(nil, ops)}, res)
	var img bytes.Buffer
	if _, err := s.Snapshot().WriteTo(&img); err != nil {
		b.Fatal(err)
	}
	b.Run("hold", func(b *testing.B) {
		b.SetBytes(int64(len(s.data.arena))) // the bytes copied
		var holds []time.Duration
		for b.Loop() {
			start := time.Now()
			im := s.Snapshot()
			holds = append(holds, time.Since(start))
			runtime.KeepAlive(im)
		}
		slices.Sort(holds)
		b.ReportMetric(float64(holds[len(holds)/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(holds[len(holds)*99/100].Microseconds()), "p99-µs")
		b.ReportMetric(float64(holds[len(holds)-1].Microseconds()), "max-µs")
	})
	b.Run("write", func(b *testing.B) {
		b.SetBytes(int64(img.Len()))
		for range b.N {
			b.StopTimer()
			im := s.Snapshot()
			b.StartTimer()
			if _, err := im.WriteTo(io.Discard); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("write-arena-order", func(b *testing.B) {
		b.SetBytes(int64(img.Len()))
		for range b.N {
			b.StopTimer()
			im := s.Snapshot()
			b.StartTimer()
			if _, err := im.WriteArenaOrder(io.Discard); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("restore", func(b *testing.B) {
		b.SetBytes(int64(img.Len()))
		r := New(Options{})
		for range b.N {
			if err := r.Restore(bytes.NewReader(img.Bytes())); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("digest", func(b *testing.B) {
		b.SetBytes(int64(img.Len()))
		for range b.N {
			s.Digest()
		}
	})
}

// An image in arena order (what checkpoints write) restores the same state
// as the canonical one: the same Digest, the same canonical bytes.
func TestArenaOrderImageRestoresTheSameState(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	s := smallStore(t)
	var ops []Op
	for range 20_000 {
		ops = append(ops, put(0, 0, 0, fmt.Sprintf("k%d", rng.IntN(5000)), strings.Repeat("v", rng.IntN(100))))
		if rng.IntN(9) == 0 {
			ops = append(ops, Op{Kind: Delete, Key: []byte(fmt.Sprintf("k%d", rng.IntN(5000)))})
		}
	}
	apply(t, s, ops...)
	var arena, canon bytes.Buffer
	if _, err := s.Snapshot().WriteArenaOrder(&arena); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Snapshot().WriteTo(&canon); err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(arena.Bytes(), canon.Bytes()) {
		t.Fatal("the arena-order image is the canonical one: nothing was spared")
	}
	r := New(Options{MaxSessions: 3, MaxSessionResults: 8})
	if err := r.Restore(bytes.NewReader(arena.Bytes())); err != nil {
		t.Fatal(err)
	}
	if r.Digest() != s.Digest() {
		t.Fatal("restored from arena order, the state differs")
	}
	var again bytes.Buffer
	if _, err := r.Snapshot().WriteTo(&again); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again.Bytes(), canon.Bytes()) {
		t.Fatal("canonical image after an arena-order restore differs")
	}
}

// An arena-order image holding a key twice is refused by name.
func TestArenaOrderImageWithADuplicateKeyIsRefused(t *testing.T) {
	s := New(Options{})
	apply(t, s, put(0, 0, 0, "a", "1"), put(0, 0, 0, "b", "2"))
	im := s.Snapshot()
	im.refs = append(im.refs, im.refs[0]) // the same entry twice
	im.nkeys++
	var buf bytes.Buffer
	if _, err := im.WriteArenaOrder(&buf); err != nil {
		t.Fatal(err)
	}
	err := New(Options{}).Restore(&buf)
	if err == nil || !strings.Contains(err.Error(), "appears twice") {
		t.Fatalf("restore of a duplicate key: %v", err)
	}
}

func TestSortRefs(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, 2, 3, 100, 5000} {
		refs := make([]uint64, n)
		for i := range refs {
			refs[i] = rng.Uint64N(1 << 30)
		}
		want := slices.Clone(refs)
		slices.Sort(want)
		sortRefs(refs)
		if !slices.Equal(refs, want) {
			t.Fatalf("n=%d: sortRefs differs from slices.Sort", n)
		}
	}
}
