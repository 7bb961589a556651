package session

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/vestalabs/vesta/engine"
	"github.com/vestalabs/vesta/engine/wire"
	"pgregory.net/rapid"
)

// listSM appends every command to a list; a command's result is its
// position and its bytes. It counts its Apply calls.
type listSM struct {
	mu      sync.Mutex
	cmds    []string
	applies int
}

func (s *listSM) Apply(_ wire.Slot, cmds [][]byte, results [][]byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.applies++
	for i, c := range cmds {
		s.cmds = append(s.cmds, string(c))
		results[i] = []byte(fmt.Sprintf("%d:%s", len(s.cmds), c))
	}
}

func (s *listSM) Snapshot(w io.Writer) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var buf []byte
	for _, c := range s.cmds {
		buf = binary.AppendUvarint(buf, uint64(len(c)))
		buf = append(buf, c...)
	}
	_, err := w.Write(buf)
	return err
}

func (s *listSM) Restore(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	var cmds []string
	for len(b) > 0 {
		n, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k) < n {
			return errors.New("listSM: malformed image")
		}
		cmds = append(cmds, string(b[k:k+int(n)]))
		b = b[k+int(n):]
	}
	s.mu.Lock()
	s.cmds = cmds
	s.mu.Unlock()
	return nil
}

func (s *listSM) list() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.cmds...)
}

// freezingListSM is a listSM that is an engine.Freezer.
type freezingListSM struct{ *listSM }

func (s freezingListSM) Freeze() io.WriterTo {
	var buf bytes.Buffer
	_ = s.Snapshot(&buf)
	return &buf
}

// applyOne applies cmds in one slot and returns the results.
func applyOne(sm engine.StateMachine, slot wire.Slot, cmds ...[]byte) [][]byte {
	res := make([][]byte, len(cmds))
	sm.Apply(slot, cmds, res)
	return res
}

func newSession(t testing.TB, sm engine.StateMachine) uint64 {
	t.Helper()
	id, err := ParseNewSession(applyOne(sm, 1, AppendNewSession(nil))[0])
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestMachineContracts(t *testing.T) {
	inner := &listSM{}
	sm := Wrap(inner, Options{MaxSessions: 2, MaxSessionResults: 2})
	if _, ok := sm.(engine.Freezer); ok {
		t.Fatal("a Freezer, wrapping a machine that is none")
	}
	id := newSession(t, sm)
	w := func(seq, low uint64, p string) []byte { return AppendWrite(nil, id, seq, low, []byte(p)) }

	// One slot: a fresh write, a copy of it, a sessionless write, garbage,
	// a plain command. One inner Apply with the fresh payloads, in order.
	res := applyOne(sm, 2, w(1, 1, "a"), w(1, 1, "a"), AppendWrite(nil, 0, 0, 0, []byte("free")), []byte{Magic, 1}, []byte("plain"))
	if inner.applies != 1 || strings.Join(inner.list(), ",") != "a,free" {
		t.Fatalf("inner applied %q in %d applies", inner.list(), inner.applies)
	}
	for i, want := range []string{"1:a", "1:a", "2:free"} {
		if body, err := ParseResult(res[i]); err != nil || string(body) != want {
			t.Fatalf("result %d: %q %v, want %q", i, body, err, want)
		}
	}
	for i := 3; i < 5; i++ {
		var inv *InvalidError
		if _, err := ParseResult(res[i]); !errors.As(err, &inv) {
			t.Fatalf("result %d: %v, want invalid", i, err)
		}
	}
	// Results are the proposers' to write: a duplicate's is a fresh copy.
	res[0][1] = 'X'
	if body, _ := ParseResult(applyOne(sm, 3, w(1, 1, "a"))[0]); string(body) != "1:a" {
		t.Fatalf("a retry got %q", body)
	}
	// A slot of duplicates only does not call the inner machine.
	if inner.applies != 1 {
		t.Fatalf("%d inner applies", inner.applies)
	}
	applyOne(sm, 4, w(2, 1, "b"))
	if _, err := ParseResult(applyOne(sm, 5, w(3, 1, "c"))[0]); !errors.Is(err, ErrFull) {
		t.Fatalf("a third result: %v", err)
	}
	if _, err := ParseResult(applyOne(sm, 6, w(3, 3, "c"))[0]); err != nil {
		t.Fatalf("after acknowledging: %v", err)
	}
	if _, err := ParseResult(applyOne(sm, 7, w(1, 1, "a"))[0]); !errors.Is(err, ErrStale) {
		t.Fatalf("below the mark: %v", err)
	}
	newSession(t, sm)
	newSession(t, sm) // evicts id
	if _, err := ParseResult(applyOne(sm, 8, w(4, 3, "d"))[0]); !errors.Is(err, ErrExpired) {
		t.Fatalf("an evicted session: %v", err)
	}
	if m := Unwrap(sm); m.Sessions() != 2 || m.Evicted() != 1 {
		t.Fatalf("sessions %d evicted %d", m.Sessions(), m.Evicted())
	}
	if got := strings.Join(inner.list(), ","); got != "a,free,b,c" {
		t.Fatalf("inner state %q", got)
	}
}

func TestMachineApplyPlain(t *testing.T) {
	inner := &listSM{}
	sm := Wrap(inner, Options{ApplyPlain: true})
	id := newSession(t, sm)
	res := applyOne(sm, 2, []byte("plain"), AppendWrite(nil, id, 1, 1, []byte("x")), nil, []byte{Magic})
	if string(res[0]) != "1:plain" || string(res[2]) != "3:" {
		t.Fatalf("plain results %q %q", res[0], res[2])
	}
	if body, err := ParseResult(res[1]); err != nil || string(body) != "2:x" {
		t.Fatalf("envelope: %q %v", body, err)
	}
	if _, err := ParseResult(res[3]); err == nil {
		t.Fatal("a malformed envelope applied as plain")
	}
}

// TestMachineSnapshotRestore: a restored machine answers a retry of a write
// applied before the image from the table, and continues alike; a Freezer
// inner makes a Freezer wrapper whose frozen image is the Snapshot's.
func TestMachineSnapshotRestore(t *testing.T) {
	for _, freezing := range []bool{false, true} {
		mk := func() (engine.StateMachine, *listSM) {
			inner := &listSM{}
			if freezing {
				return Wrap(freezingListSM{inner}, Options{}), inner
			}
			return Wrap(inner, Options{}), inner
		}
		a, ai := mk()
		if _, ok := a.(engine.Freezer); ok != freezing {
			t.Fatalf("Freezer %v, want %v", ok, freezing)
		}
		id := newSession(t, a)
		applyOne(a, 2, AppendWrite(nil, id, 1, 1, []byte("one")), AppendWrite(nil, id, 2, 1, []byte("two")))
		var img bytes.Buffer
		if err := a.Snapshot(&img); err != nil {
			t.Fatal(err)
		}
		if freezing {
			fz := a.(engine.Freezer).Freeze()
			applyOne(a, 3, AppendWrite(nil, id, 3, 1, []byte("after the freeze")))
			var fb bytes.Buffer
			if _, err := fz.WriteTo(&fb); err != nil || !bytes.Equal(fb.Bytes(), img.Bytes()) {
				t.Fatalf("frozen image differs from the snapshot: %v", err)
			}
		}
		b, bi := mk()
		newSession(t, b) // a state the restore replaces
		if err := b.Restore(bytes.NewReader(img.Bytes())); err != nil {
			t.Fatal(err)
		}
		if strings.Join(bi.list(), ",") != "one,two" {
			t.Fatalf("restored inner %q", bi.list())
		}
		if body, err := ParseResult(applyOne(b, 3, AppendWrite(nil, id, 2, 1, []byte("two")))[0]); err != nil || string(body) != "2:two" {
			t.Fatalf("a retry after restore: %q %v", body, err)
		}
		if len(bi.list()) != 2 {
			t.Fatal("the retry applied again")
		}
		_ = ai
		// Hostile images are refused, never a panic.
		for i := range img.Len() {
			if err := b.Restore(bytes.NewReader(img.Bytes()[:i])); err == nil && i < headerSize+bodyFixed {
				t.Fatalf("a %d-byte image accepted", i)
			}
		}
	}
}

// TestMachineExactlyOnce: random duplicates, reorders and replays of
// envelopes, grouped into slots in random ways, with malformed commands
// among them and a snapshot and restore at a random point, give the inner
// machine the state and the proposers the results of applying each (client,
// seq) once, in the order of first delivery. Clients send low marks that
// trail the results they saw; a replay below them is refused as stale.
func TestMachineExactlyOnce(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		nclients := rapid.IntRange(1, 3).Draw(t, "clients")
		sm := Wrap(&listSM{}, Options{})
		inner := func() *listSM { return Unwrap(sm).inner.(*listSM) }
		ids := make([]uint64, nclients)
		for i := range ids {
			id, err := ParseNewSession(applyOne(sm, 1, AppendNewSession(nil))[0])
			if err != nil {
				t.Fatal(err)
			}
			ids[i] = id
		}
		nwrites := rapid.IntRange(1, 12).Draw(t, "writes")
		seen := make([]map[uint64]bool, nclients) // results a client saw
		maxLow := make([]uint64, nclients)        // the highest low mark sent
		for i := range seen {
			seen[i] = map[uint64]bool{}
		}
		lowOf := func(c int) uint64 {
			low := uint64(1)
			for seen[c][low] {
				low++
			}
			return low
		}
		var ref []string            // the reference: each write once, in first-delivery order
		want := map[string]string{} // a write's payload -> its reference result
		slot := wire.Slot(2)
		restoreAt := rapid.IntRange(0, 10).Draw(t, "restoreAt")
		for batch := range rapid.IntRange(1, 10).Draw(t, "batches") {
			if batch == restoreAt {
				var img bytes.Buffer
				if err := sm.Snapshot(&img); err != nil {
					t.Fatal(err)
				}
				sm = Wrap(&listSM{}, Options{})
				if err := sm.Restore(&img); err != nil {
					t.Fatal(err)
				}
			}
			type sent struct {
				c       int
				seq     uint64
				payload string
				bad     bool
			}
			var sends []sent
			var cmds [][]byte
			for range rapid.IntRange(1, 8).Draw(t, "batch") {
				if rapid.IntRange(0, 15).Draw(t, "malformed") == 0 {
					cmd := AppendWrite(nil, ids[0], 1, 1, []byte("bad"))
					cmd = cmd[:rapid.IntRange(0, envHeader-1).Draw(t, "cut")]
					sends = append(sends, sent{bad: true})
					cmds = append(cmds, cmd)
					continue
				}
				c := rapid.IntRange(0, nclients-1).Draw(t, "client")
				seq := uint64(rapid.IntRange(1, nwrites).Draw(t, "seq"))
				p := fmt.Sprintf("c%d-%d", c, seq)
				low := lowOf(c)
				maxLow[c] = max(maxLow[c], low)
				sends = append(sends, sent{c: c, seq: seq, payload: p})
				cmds = append(cmds, AppendWrite(nil, ids[c], seq, low, []byte(p)))
				if _, ok := want[p]; !ok && seq >= maxLow[c] {
					ref = append(ref, p)
					want[p] = fmt.Sprintf("%d:%s", len(ref), p)
				}
			}
			res := applyOne(sm, slot, cmds...)
			slot++
			for i, s := range sends {
				body, err := ParseResult(res[i])
				switch {
				case s.bad:
					var inv *InvalidError
					if !errors.As(err, &inv) {
						t.Fatalf("malformed command: %q %v", body, err)
					}
				case errors.Is(err, ErrStale):
					if !seen[s.c][s.seq] {
						t.Fatalf("write %s refused as stale before its client saw it", s.payload)
					}
				case err != nil || string(body) != want[s.payload]:
					t.Fatalf("write %s: %q %v, want %q", s.payload, body, err, want[s.payload])
				default:
					seen[s.c][s.seq] = true
				}
			}
		}
		if got := inner().list(); strings.Join(got, ",") != strings.Join(ref, ",") {
			t.Fatalf("inner state %q, want %q", got, ref)
		}
		if err := Unwrap(sm).t.Check(); err != nil {
			t.Fatal(err)
		}
	})
}

// TestMachineMalformedNeverPanics feeds random bytes and mutated envelopes.
func TestMachineMalformedNeverPanics(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		sm := Wrap(&listSM{}, Options{MaxSessions: 2, MaxSessionResults: 3, ApplyPlain: rapid.Bool().Draw(t, "plain")})
		newSession(&testing.T{}, sm)
		var cmds [][]byte
		for range rapid.IntRange(1, 20).Draw(t, "n") {
			cmd := AppendWrite(nil, IssuedBase+rapid.Uint64Range(0, 2).Draw(t, "id"), rapid.Uint64Range(0, 5).Draw(t, "seq"),
				rapid.Uint64Range(0, 5).Draw(t, "low"), rapid.SliceOfN(rapid.Byte(), 0, 4).Draw(t, "payload"))
			for range rapid.IntRange(0, 3).Draw(t, "flips") {
				cmd[rapid.IntRange(0, len(cmd)-1).Draw(t, "at")] = rapid.Byte().Draw(t, "to")
			}
			cmds = append(cmds, cmd[:rapid.IntRange(0, len(cmd)).Draw(t, "len")])
		}
		res := applyOne(sm, 2, cmds...)
		for i := range res {
			if res[i] == nil {
				t.Fatalf("command %d got no result", i)
			}
		}
		if err := Unwrap(sm).t.Check(); err != nil {
			t.Fatal(err)
		}
	})
}
