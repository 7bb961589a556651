package kv

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
)

// apply runs one command of ops and returns its results, copied.
func apply(t *testing.T, s *Store, ops ...Op) []Result {
	t.Helper()
	results := make([][]byte, 1)
	s.Apply([][]byte{AppendCommand(nil, ops)}, results)
	out, err := DecodeResults(results[0], nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != len(ops) {
		t.Fatalf("%d results for %d ops: %+v", len(out), len(ops), out)
	}
	return out
}

func put(c, seq, low uint64, k, v string) Op {
	return Op{Kind: Put, Client: c, Seq: seq, Low: low, Key: []byte(k), Value: []byte(v)}
}

func get(k string) Op { return Op{Kind: Get, Key: []byte(k)} }

func TestCommandRoundTrip(t *testing.T) {
	ops := []Op{put(1, 2, 1, "k", "v"), get("x"),
		{Kind: CAS, Client: 9, Seq: 1 << 40, Low: 3, Key: []byte("a"), Value: []byte("b"), Expect: []byte("c")}}
	cmd := AppendCommand(nil, ops)
	got, err := DecodeCommand(cmd, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range ops {
		if fmt.Sprint(got[i]) != fmt.Sprint(ops[i]) {
			t.Fatalf("op %d: got %+v want %+v", i, got[i], ops[i])
		}
	}
	for i := 0; i < len(cmd); i++ {
		if _, err := DecodeCommand(cmd[:i], nil); err == nil {
			t.Fatalf("prefix of %d bytes decoded", i)
		}
	}
}

func TestBasicOps(t *testing.T) {
	s := New(Options{})
	r := apply(t, s, get("a"))
	if r[0].Code != CodeOK || r[0].Found {
		t.Fatalf("get of a missing key: %+v", r[0])
	}
	apply(t, s, Op{Kind: OpenSession, Client: 5})
	r = apply(t, s, put(5, 1, 1, "a", "1"), get("a"),
		Op{Kind: CAS, Client: 5, Seq: 2, Low: 1, Key: []byte("a"), Expect: []byte("0"), Value: []byte("2")},
		Op{Kind: CAS, Client: 5, Seq: 3, Low: 1, Key: []byte("a"), Expect: []byte("1"), Value: []byte("3")},
		get("a"),
		Op{Kind: Delete, Client: 5, Seq: 4, Low: 1, Key: []byte("a")},
		Op{Kind: Delete, Client: 5, Seq: 5, Low: 1, Key: []byte("a")},
		get("a"),
		Op{Kind: CAS, Client: 5, Seq: 6, Low: 1, Key: []byte("b"), Expect: nil, Value: []byte("x")},
	)
	want := []Result{
		{Code: CodeOK}, {Code: CodeOK, Found: true, Value: []byte("1")},
		{Code: CodeOK}, {Code: CodeOK, Swapped: true}, {Code: CodeOK, Found: true, Value: []byte("3")},
		{Code: CodeOK, Found: true}, {Code: CodeOK}, {Code: CodeOK},
		{Code: CodeOK, Swapped: true}, // a missing key's value is empty
	}
	for i := range want {
		if r[i].Code != want[i].Code || r[i].Found != want[i].Found || r[i].Swapped != want[i].Swapped || !bytes.Equal(r[i].Value, want[i].Value) {
			t.Errorf("op %d: got %+v want %+v", i, r[i], want[i])
		}
	}
	if s.Keys() != 1 || s.Sessions() != 1 {
		t.Fatalf("keys %d sessions %d", s.Keys(), s.Sessions())
	}
}

// A pipelined client's writes apply out of order and are retried; each
// applies once and every retry gets the first result.
func TestExactlyOnceWithPipelining(t *testing.T) {
	s := New(Options{})
	apply(t, s, Op{Kind: OpenSession, Client: 1})
	// Writes 1..3 in flight; 3 and 2 apply first.
	apply(t, s, Op{Kind: CAS, Client: 1, Seq: 3, Low: 1, Key: []byte("c"), Expect: nil, Value: []byte("x")})
	apply(t, s, put(1, 2, 1, "k", "two"))
	apply(t, s, put(1, 1, 1, "k", "one"))
	// Another client overwrites k, then write 2 is retried: it must not apply again.
	apply(t, s, put(0, 0, 0, "k", "other"))
	r := apply(t, s, put(1, 2, 1, "k", "two"),
		Op{Kind: CAS, Client: 1, Seq: 3, Low: 1, Key: []byte("c"), Expect: nil, Value: []byte("x")}, get("k"))
	if r[0].Code != CodeOK || !r[1].Swapped || string(r[2].Value) != "other" {
		t.Fatalf("retries re-applied or lost their results: %+v", r)
	}
	// The client saw 1..3 acknowledged: low moves to 4 with write 4.
	apply(t, s, put(1, 4, 4, "k", "four"))
	if in, _ := s.sess.Info(1); in.Results != 1 {
		t.Fatalf("session keeps %d results after the low mark moved, want 1", in.Results)
	}
	// A late duplicate of write 2 is refused, not applied.
	r = apply(t, s, put(1, 2, 1, "k", "two"), get("k"))
	if r[0].Code != CodeStale || string(r[1].Value) != "four" {
		t.Fatalf("late duplicate: %+v", r)
	}
}

func TestSessionExpiryAndEviction(t *testing.T) {
	s := New(Options{MaxSessions: 2})
	r := apply(t, s, put(7, 1, 1, "k", "v"), get("k"))
	if r[0].Code != CodeSessionExpired || r[1].Found {
		t.Fatalf("write without an open session: %+v", r)
	}
	apply(t, s, Op{Kind: OpenSession, Client: 1}, Op{Kind: OpenSession, Client: 2})
	apply(t, s, put(1, 1, 1, "a", "1"))           // 1 is now the most recent
	apply(t, s, Op{Kind: OpenSession, Client: 3}) // evicts 2
	if s.Evicted() != 1 {
		t.Fatalf("evicted %d", s.Evicted())
	}
	r = apply(t, s, put(2, 1, 1, "b", "1"), put(1, 2, 1, "a", "2"), Op{Kind: OpenSession, Client: 1})
	if r[0].Code != CodeSessionExpired || r[1].Code != CodeOK || r[2].Code != CodeOK {
		t.Fatalf("after eviction: %+v", r)
	}
	// Reopening an open session keeps its results.
	r = apply(t, s, put(1, 2, 1, "a", "again"), get("a"))
	if string(r[1].Value) != "2" {
		t.Fatalf("reopen reset the session: %+v", r)
	}
}

func TestSessionResultLimit(t *testing.T) {
	s := New(Options{MaxSessionResults: 3})
	apply(t, s, Op{Kind: OpenSession, Client: 1})
	r := apply(t, s, put(1, 1, 1, "a", "1"), put(1, 2, 1, "a", "2"), put(1, 3, 1, "a", "3"), put(1, 4, 1, "a", "4"), get("a"))
	if r[3].Code != CodeInvalid || string(r[4].Value) != "3" {
		t.Fatalf("over the limit: %+v", r)
	}
	r = apply(t, s, put(1, 4, 2, "a", "4"), get("a"))
	if r[0].Code != CodeOK || string(r[1].Value) != "4" {
		t.Fatalf("after acknowledging: %+v", r)
	}
}

func TestMalformedCommands(t *testing.T) {
	s := New(Options{})
	results := make([][]byte, 4)
	good := AppendCommand(nil, []Op{get("k")})
	s.Apply([][]byte{nil, {9}, good[:len(good)-1], AppendCommand(nil, []Op{{Kind: 77}})}, results)
	for i, res := range results {
		r, err := DecodeResults(res, nil)
		if err != nil || len(r) != 1 || r[0].Code != CodeInvalid || len(r[0].Value) == 0 {
			t.Errorf("command %d: %+v %v", i, r, err)
		}
	}
	if _, err := DecodeResults([]byte{0}, nil); err == nil {
		t.Error("truncated result decoded")
	}
}

// Two stores fed the same random commands end identical (determinism), and
// random bytes never panic.
func TestDeterministic(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	a, b := New(Options{MaxSessions: 4, MaxSessionResults: 8}), New(Options{MaxSessions: 4, MaxSessionResults: 8})
	for i := 0; i < 3000; i++ {
		var ops []Op
		for j := rng.IntN(4) + 1; j > 0; j-- {
			c := rng.Uint64N(6)
			seq := rng.Uint64N(20)
			ops = append(ops, Op{Kind: Kind(rng.IntN(6)), Client: c, Seq: seq, Low: rng.Uint64N(seq + 1),
				Key: []byte{byte('a' + rng.IntN(3))}, Value: []byte{byte(rng.IntN(3))}, Expect: []byte{byte(rng.IntN(3))}})
		}
		cmd := AppendCommand(nil, ops)
		if rng.IntN(20) == 0 {
			cmd[rng.IntN(len(cmd))] ^= byte(rng.IntN(255) + 1)
		}
		ra, rb := make([][]byte, 1), make([][]byte, 1)
		a.Apply([][]byte{cmd}, ra)
		b.Apply([][]byte{bytes.Clone(cmd)}, rb)
		if !bytes.Equal(ra[0], rb[0]) {
			t.Fatalf("command %d: results differ", i)
		}
	}
	if !reflect.DeepEqual(contents(a.data), contents(b.data)) || a.sess.Len() != b.sess.Len() {
		t.Fatal("stores differ")
	}
}

// BenchmarkSessionPuts applies pipelined session writes (256 in flight, the
// low mark trailing) to 1000 keys: the session bookkeeping's cost per write.
func BenchmarkSessionPuts(b *testing.B) {
	s := New(Options{})
	res := make([][]byte, 1)
	s.Apply([][]byte{AppendCommand(nil, []Op{{Kind: OpenSession, Client: 1}})}, res)
	var cmd []byte
	key := []byte("k0000")
	val := make([]byte, 64)
	b.ReportAllocs()
	for i := range b.N {
		seq := uint64(i) + 1
		key[4] = byte('0' + i%10)
		key[3] = byte('0' + (i/10)%10)
		cmd = AppendCommand(cmd[:0], []Op{{Kind: Put, Client: 1, Seq: seq, Low: max(1, seq-256), Key: key, Value: val}})
		s.Apply([][]byte{cmd}, res)
	}
}

// contents returns t's keys and values.
func contents(t *table) map[string]string {
	m := map[string]string{}
	t.each(func(k, v []byte) { m[string(k)] = string(v) })
	return m
}

// TestEvictedSessionIsNotReopened replays what a retrying client and a
// network can deliver late (issue 12 item 10): a session is opened and
// writes, is evicted by other sessions filling the store, and then a
// duplicate of its open and a copy of its old write reach the log. The
// duplicate must not bring the session back empty, and the old write must
// not apply a second time.
func TestEvictedSessionIsNotReopened(t *testing.T) {
	s := New(Options{MaxSessions: 2})
	open := AppendCommand(nil, []Op{{Kind: NewSession}})
	openCmd := func() uint64 {
		t.Helper()
		res := make([][]byte, 1)
		s.Apply([][]byte{bytes.Clone(open)}, res)
		r, err := DecodeResults(res[0], nil)
		if err != nil || len(r) != 1 || r[0].Code != CodeOK || len(r[0].Value) != 8 {
			t.Fatalf("new-session: %+v %v", r, err)
		}
		return binary.LittleEndian.Uint64(r[0].Value)
	}
	id := openCmd()
	if !IsIssuedSessionID(id) {
		t.Fatalf("issued session %#x outside the issued range", id)
	}
	write := AppendCommand(nil, []Op{put(id, 1, 1, "k", "first")})
	res := make([][]byte, 1)
	s.Apply([][]byte{bytes.Clone(write)}, res)
	if r, _ := DecodeResults(res[0], nil); len(r) != 1 || r[0].Code != CodeOK {
		t.Fatalf("first write: %+v", r)
	}
	apply(t, s, Op{Kind: Put, Key: []byte("k"), Value: []byte("second")}) // another writer, later

	// Two more sessions: the store holds two, so id (least recently used) goes.
	other := openCmd()
	third := openCmd()
	if other == id || third == id || other == third {
		t.Fatalf("IDs issued twice: %#x %#x %#x", id, other, third)
	}
	if s.Evicted() != 1 || s.sess.Has(id) {
		t.Fatalf("evicted %d, session %#x held: %v", s.Evicted(), id, s.sess.Has(id))
	}

	// The duplicate open, as it was sent, issues a fresh ID; naming the
	// evicted ID is refused, on every replica alike (replicated state only).
	if again := openCmd(); again == id {
		t.Fatalf("a duplicate new-session reissued the evicted %#x", id)
	}
	r := apply(t, s, Op{Kind: OpenSession, Client: id})
	if r[0].Code != CodeSessionExpired || !strings.Contains(string(r[0].Value), "evicted") {
		t.Fatalf("reopening the evicted session: %+v (%s)", r[0], r[0].Value)
	}
	r = apply(t, s, Op{Kind: OpenSession, Client: IssuedSessionBase + 1000})
	if r[0].Code != CodeSessionExpired || !strings.Contains(string(r[0].Value), "never issued") {
		t.Fatalf("opening an ID never issued: %+v (%s)", r[0], r[0].Value)
	}

	// The old write arrives again: refused, not applied.
	s.Apply([][]byte{bytes.Clone(write)}, res)
	if r, _ := DecodeResults(res[0], nil); len(r) != 1 || r[0].Code != CodeSessionExpired {
		t.Fatalf("the old write replayed after the eviction: %+v, want session-expired", r)
	}
	if r := apply(t, s, get("k")); string(r[0].Value) != "second" {
		t.Fatalf("k = %q: the old write applied twice", r[0].Value)
	}
	if s.sess.Has(id) {
		t.Fatalf("session %#x came back", id)
	}
}

// The gets of one command return at most MaxReadBytes of values, but for
// its first value, whatever its size; a get past it answers CodeRetry, and
// later gets that fit are answered. Two stores fed the same commands, in
// Apply calls cut differently, answer alike, and the same get alone, or
// first in a command, is answered.
func TestReadCap(t *testing.T) {
	big := bytes.Repeat([]byte("b"), MaxReadBytes)      // the largest value
	half := bytes.Repeat([]byte("h"), MaxReadBytes/2+1) // two do not fit
	small := []byte("s")
	rest := big[len(small):] // small and rest fill the cap
	setup := []Op{put(0, 0, 0, "big", string(big)), put(0, 0, 0, "half", string(half)),
		put(0, 0, 0, "small", string(small)), put(0, 0, 0, "rest", string(rest)), put(0, 0, 0, "empty", "")}
	type want struct {
		code  Code
		found bool
		value []byte
	}
	ok := func(v []byte) want { return want{CodeOK, true, v} }
	retry := want{code: CodeRetry}
	cases := []struct {
		ops  []Op
		want []want
	}{
		// The first value comes whatever its size; then nothing fits but
		// empty values and missing keys.
		{[]Op{get("big"), get("big"), get("small"), get("empty"), get("missing"), get("half")},
			[]want{ok(big), retry, retry, ok(nil), {CodeOK, false, nil}, retry}},
		// Missing keys and empty values count for nothing: big is the first value.
		{[]Op{get("missing"), get("empty"), get("big"), get("small")},
			[]want{{CodeOK, false, nil}, ok(nil), ok(big), retry}},
		// A later small value still fits after a half that did not, and
		// values up to the cap exactly.
		{[]Op{get("half"), get("half"), get("small"), get("small")},
			[]want{ok(half), retry, ok(small), ok(small)}},
		{[]Op{get("small"), get("big"), get("rest"), get("small")},
			[]want{ok(small), retry, ok(rest), retry}},
		// A get past the cap changes nothing around it: the writes apply.
		{[]Op{get("big"), put(0, 0, 0, "w", "1"), get("half"), get("w")},
			[]want{ok(big), {CodeOK, false, nil}, retry, retry}},
		// Each command starts afresh.
		{[]Op{get("big")}, []want{ok(big)}},
		{[]Op{get("half"), get("big")}, []want{ok(half), retry}},
	}
	var cmds [][]byte
	for _, c := range cases {
		cmds = append(cmds, AppendCommand(nil, c.ops))
	}
	a, b := New(Options{}), New(Options{})
	for _, s := range []*Store{a, b} {
		apply(t, s, setup...)
	}
	ra := make([][]byte, len(cmds))
	a.Apply(cmds, ra) // all at once
	rb := make([][]byte, len(cmds))
	for i := range cmds { // one at a time
		b.Apply(cmds[i:i+1], rb[i:i+1])
	}
	for i, c := range cases {
		if !bytes.Equal(ra[i], rb[i]) {
			t.Errorf("command %d: the two stores' results differ", i)
		}
		got, err := DecodeResults(ra[i], nil)
		if err != nil || len(got) != len(c.want) {
			t.Fatalf("command %d: %d results, %v", i, len(got), err)
		}
		var values int
		for j, w := range c.want {
			g := got[j]
			if g.Code != w.code || g.Found != w.found || !bytes.Equal(g.Value, w.value) || g.Swapped {
				t.Errorf("command %d op %d: %v found %v %d bytes, want %v found %v %d bytes",
					i, j, g.Code, g.Found, len(g.Value), w.code, w.found, len(w.value))
			}
			if c.ops[j].Kind == Get {
				values += len(g.Value)
			}
		}
		if values > MaxReadBytes {
			t.Errorf("command %d: its gets returned %d bytes", i, values)
		}
	}
	if r := apply(t, a, get("w")); string(r[0].Value) != "1" {
		t.Errorf("the write next to a retried get: %+v", r[0])
	}
}

// Read answers gets exactly as Apply would, and refuses anything else.
func TestReadAnswersGetsLikeApply(t *testing.T) {
	s := New(Options{})
	put := AppendCommand(nil, []Op{{Kind: Put, Key: []byte("a"), Value: []byte("1")}})
	res := make([][]byte, 1)
	s.Apply([][]byte{put}, res)
	get := AppendCommand(nil, []Op{{Kind: Get, Key: []byte("a")}, {Kind: Get, Key: []byte("b")}})
	got, err := s.Read(get)
	if err != nil {
		t.Fatal(err)
	}
	s.Apply([][]byte{get}, res)
	if string(got) != string(res[0]) {
		t.Fatalf("Read %x, Apply %x", got, res[0])
	}
	if _, err := s.Read(put); err == nil {
		t.Fatal("Read took a put")
	}
	if _, err := s.Read([]byte{9, 9}); err == nil {
		t.Fatal("Read took a malformed command")
	}
}
