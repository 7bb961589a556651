package kv

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"

	"pgregory.net/rapid"
)

// client is the test's model of one client: the next sequence number it
// would use and its low mark.
type client struct{ next, low uint64 }

// genOp draws an operation: fresh writes, retries, stale and far-ahead
// sequence numbers, advancing low marks, sessionless writes, unknown kinds,
// empty and long keys and values.

// ringMax is the session package's largest ring of results per session
// (session.ringMax): the generators reach around it.
const ringMax = 1 << 14

func genOp(t *rapid.T, clients map[uint64]*client, keys [][]byte) Op {
	op := Op{
		Kind: rapid.SampledFrom([]Kind{Get, Put, Put, Put, Delete, CAS, CAS, OpenSession, NewSession, 0, 9}).Draw(t, "kind"),
		// Clients 0 to 5 choose their IDs; the others are the first IDs
		// NewSession issues, issued or not yet, open or evicted.
		Client: rapid.SampledFrom([]uint64{0, 1, 2, 3, 4, 5,
			IssuedSessionBase, IssuedSessionBase + 1, IssuedSessionBase + 2, IssuedSessionBase + 3}).Draw(t, "client"),
		Key: rapid.SampledFrom(keys).Draw(t, "key"),
	}
	val := func(label string) []byte {
		switch rapid.IntRange(0, 4).Draw(t, label+"Kind") {
		case 0:
			return nil
		case 1: // a key's value, so that cas matches
			return rapid.SampledFrom(keys).Draw(t, label)
		case 2: // long: moves the entry, then shrinks leave capacity unused
			return bytes.Repeat([]byte{byte(rapid.IntRange(0, 255).Draw(t, label+"Byte"))}, rapid.IntRange(100, 3000).Draw(t, label+"Len"))
		default:
			return []byte(rapid.StringN(0, 12, -1).Draw(t, label))
		}
	}
	op.Value = val("value")
	op.Expect = val("expect")
	c := clients[op.Client]
	if c == nil {
		c = &client{next: 1, low: 1}
		clients[op.Client] = c
	}
	switch rapid.IntRange(0, 9).Draw(t, "seqKind") {
	case 0, 1, 2: // a fresh write
		op.Seq = c.next
		c.next++
	case 3: // a retry
		op.Seq = c.low + rapid.Uint64Range(0, c.next-c.low).Draw(t, "retry")
	case 4: // stale
		op.Seq = rapid.Uint64Range(0, c.low).Draw(t, "stale")
	case 5: // far ahead of the mark: beyond a session's ring
		op.Seq = c.next + rapid.SampledFrom([]uint64{16, 100, 5000, ringMax - 3, ringMax + 7, 1 << 40}).Draw(t, "ahead")
		c.next = max(c.next, op.Seq+1)
	case 6: // the far end of the sequence space
		op.Seq = ^uint64(0) - rapid.Uint64Range(0, 3).Draw(t, "top")
	default:
		op.Seq = 0 // sessionless
	}
	op.Low = c.low
	switch rapid.IntRange(0, 5).Draw(t, "lowKind") {
	case 0, 1: // the client saw some writes acknowledged
		c.low = min(c.next, c.low+rapid.Uint64Range(0, 20).Draw(t, "lowStep"))
		op.Low = c.low
	case 2: // a jump, possibly past the ring
		c.low += rapid.SampledFrom([]uint64{1, 15, 16, 17, 1000, ringMax, 1 << 41}).Draw(t, "lowJump")
		c.next = max(c.next, c.low)
		op.Low = c.low
	case 3: // a late duplicate with an old mark
		op.Low = rapid.Uint64Range(0, c.low).Draw(t, "oldLow")
	}
	return op
}

// TestStoreMatchesReference runs random command sequences on the store and
// on the reference (the store before its hash table and session rings) and
// requires the same result bytes and the same counts after every command.
func TestStoreMatchesReference(t *testing.T) {
	retried := 0 // gets past the read cap, over all the runs
	rapid.Check(t, func(t *rapid.T) {
		opts := Options{
			MaxSessions:       rapid.IntRange(0, 4).Draw(t, "maxSessions"),
			MaxSessionResults: rapid.SampledFrom([]int{0, 1, 3, 8, 40}).Draw(t, "maxSessionResults"),
		}
		s, ref := New(opts), newRef(opts)
		// The read cap as it is (no command here reaches it), and low
		// enough that gets of long values, or of a few short ones, pass it.
		s.readCap = rapid.SampledFrom([]int{MaxReadBytes, 0, 1, 12, 3000, 8000}).Draw(t, "readCap")
		ref.readCap = s.readCap
		keys := rapid.SliceOfN(rapid.OneOf(
			rapid.SliceOfN(rapid.ByteRange('a', 'c'), 0, 3),
			rapid.SliceOfN(rapid.Byte(), 0, 40),
			rapid.Just(bytes.Repeat([]byte("long key "), 50)),
		), 1, 60).Draw(t, "keys")
		clients := map[uint64]*client{}
		for c := range rapid.IntRange(1, 60).Draw(t, "commands") {
			ops := make([]Op, rapid.IntRange(1, 40).Draw(t, "ops"))
			for i := range ops {
				ops[i] = genOp(t, clients, keys)
			}
			cmd := AppendCommand(nil, ops)
			switch rapid.IntRange(0, 30).Draw(t, "malformed") {
			case 0:
				cmd = cmd[:rapid.IntRange(0, len(cmd)-1).Draw(t, "truncate")]
			case 1:
				cmd[rapid.IntRange(0, len(cmd)-1).Draw(t, "flip")] ^= byte(rapid.IntRange(1, 255).Draw(t, "bits"))
			}
			got, want := make([][]byte, 2), make([][]byte, 2)
			// Two commands per Apply: the second a copy, so retries are common.
			s.Apply([][]byte{cmd, bytes.Clone(cmd)}, got)
			ref.Apply([][]byte{bytes.Clone(cmd), bytes.Clone(cmd)}, want)
			for i := range got {
				if !bytes.Equal(got[i], want[i]) {
					t.Fatalf("command %d.%d: results\n%s\nwant\n%s", c, i, describe(got[i]), describe(want[i]))
				}
				rs, _ := DecodeResults(got[i], nil)
				for _, r := range rs {
					if r.Code == CodeRetry {
						retried++
					}
				}
			}
			compareStores(t, s, ref)
		}
	})
	if retried == 0 {
		t.Error("no get reached the read cap")
	}
	t.Logf("%d gets past the read cap", retried)
}

func describe(res []byte) string {
	r, err := DecodeResults(res, nil)
	return fmt.Sprintf("%+v %v", r, err)
}

func compareStores(t interface {
	Fatalf(string, ...any)
}, s *Store, ref *refStore) {
	if s.Keys() != ref.Keys() || s.Sessions() != ref.Sessions() || s.Evicted() != ref.Evicted() {
		t.Fatalf("keys %d sessions %d evicted %d, reference %d %d %d",
			s.Keys(), s.Sessions(), s.Evicted(), ref.Keys(), ref.Sessions(), ref.Evicted())
	}
	if s.sess.NextIssued() != IssuedSessionBase+ref.issued {
		t.Fatalf("next issued session %#x, reference %#x", s.sess.NextIssued(), IssuedSessionBase+ref.issued)
	}
	if err := s.sess.Check(); err != nil {
		t.Fatalf("sessions: %v", err)
	}
	if err := s.data.check(s.data.hash); err != nil {
		t.Fatalf("table: %v", err)
	}
	if got := contents(s.data); !reflect.DeepEqual(got, ref.data) {
		t.Fatalf("contents differ: %d keys, reference %d", len(got), len(ref.data))
	}
	for id, rs := range ref.sessions {
		in, ok := s.sess.Info(id)
		if !ok || in.Low != rs.low || in.Results != len(rs.results) {
			t.Fatalf("session %d: %+v %v, reference low %d with %d results", id, in, ok, rs.low, len(rs.results))
		}
		for seq, r := range rs.results {
			if got, ok := s.sess.Result(id, seq); !ok || got != saved(r) {
				t.Fatalf("session %d: result of %d is %+v %v, want %+v", id, seq, got, ok, r)
			}
		}
	}
	// The LRU orders must agree, or the stores would evict differently.
	b := ref.lru.next
	for in := range s.sess.All() {
		if b == &ref.lru || in.ID != b.id {
			t.Fatalf("session LRU orders differ")
		}
		b = b.next
	}
	if b != &ref.lru {
		t.Fatalf("session LRU orders differ")
	}
}

// TestStoreMatchesReferenceLong drives many keys through the store, so the
// table grows, compacts and deletes at scale, and one pipelined client
// through a ring that grows to its largest.
func TestStoreMatchesReferenceLong(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	opts := Options{MaxSessions: 3}
	s, ref := New(opts), newRef(opts)
	s.readCap, ref.readCap = 2000, 2000 // a command's gets return up to ~8 000 bytes
	apply := func(ops []Op) {
		cmd := AppendCommand(nil, ops)
		got, want := make([][]byte, 1), make([][]byte, 1)
		s.Apply([][]byte{cmd}, got)
		ref.Apply([][]byte{cmd}, want)
		if !bytes.Equal(got[0], want[0]) {
			t.Fatalf("results\n%s\nwant\n%s", describe(got[0]), describe(want[0]))
		}
	}
	apply([]Op{{Kind: OpenSession, Client: 1}, {Kind: OpenSession, Client: 2}})
	seq, low := uint64(1), uint64(1)
	for round := range 300 {
		ops := make([]Op, 200)
		for i := range ops {
			k := []byte(fmt.Sprintf("k%d", rng.IntN(5000+round*20)))
			v := bytes.Repeat([]byte{byte(round)}, rng.IntN(3)*rng.IntN(100))
			op := Op{Kind: []Kind{Get, Put, Put, Delete, CAS}[rng.IntN(5)], Key: k, Value: v, Expect: v[:len(v)/2]}
			if rng.IntN(2) == 0 {
				op.Client, op.Seq, op.Low = 1, seq, low
				seq++
				// The client keeps up to ~20 000 writes unacknowledged:
				// more than a ring holds.
				if seq%2000 == 0 && seq > 20_000 {
					low = seq - uint64(rng.IntN(20_000))
				}
			}
			ops[i] = op
		}
		apply(ops)
	}
	compareStores(t, s, ref)
	// The ring's growth is the session package's (TestRingGrows there).
}

// TestDecodeMatchesReference: DecodeCommand decodes what the decoder it
// replaced decoded, and refuses what it refused with the same message
// (messages are part of the replicated results).
func TestDecodeMatchesReference(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		var cmd []byte
		if rapid.Bool().Draw(t, "raw") {
			cmd = rapid.SliceOfN(rapid.Byte(), 0, 64).Draw(t, "bytes")
		} else {
			ops := make([]Op, rapid.IntRange(1, 5).Draw(t, "ops"))
			for i := range ops {
				ops[i] = Op{Kind: Kind(rapid.Byte().Draw(t, "kind")), Client: rapid.Uint64().Draw(t, "client"),
					Seq: rapid.Uint64().Draw(t, "seq"), Low: rapid.Uint64().Draw(t, "low"),
					Key:    rapid.SliceOfN(rapid.Byte(), 0, 200).Draw(t, "key"),
					Value:  rapid.SliceOfN(rapid.Byte(), 0, 200).Draw(t, "value"),
					Expect: rapid.SliceOfN(rapid.Byte(), 0, 3).Draw(t, "expect")}
			}
			cmd = AppendCommand(nil, ops)
			for range rapid.IntRange(0, 3).Draw(t, "flips") {
				cmd[rapid.IntRange(0, len(cmd)-1).Draw(t, "at")] = rapid.Byte().Draw(t, "to")
			}
			cmd = cmd[:rapid.IntRange(0, len(cmd)).Draw(t, "len")]
		}
		got, err := DecodeCommand(cmd, nil)
		want, wantErr := refDecodeCommand(cmd, nil)
		if fmt.Sprint(err) != fmt.Sprint(wantErr) || fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("decoded %v %v, want %v %v", got, err, want, wantErr)
		}
	})
}
