package client

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/vestalabs/vesta/tools/vestad/kv"
)

// sessionID returns the ID of c's session (0: none).
func sessionID(c *Client) uint64 {
	c.sessMu.Lock()
	defer c.sessMu.Unlock()
	if c.sess == nil {
		return 0
	}
	return c.sess.id
}

// opensSeen returns the client IDs of the open-sessions fc's leader received.
func opensSeen(fc *fakeCluster) []uint64 {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return slices.Clone(fc.opens)
}

// appliedBy returns the times each sequence number of session id reached the store.
func appliedBy(fc *fakeCluster, id uint64) map[uint64]int {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	out := map[uint64]int{}
	for k, n := range fc.applied {
		if k[0] == id {
			out[k[1]] = n
		}
	}
	return out
}

// The client opens with client 0 and writes under the ID the store issued;
// when that session is evicted, its next write is refused as expired and
// re-sent in a newly issued session, never in the old one reopened.
func TestSessionIssuedByStore(t *testing.T) {
	fc := newFakeCluster(t, 1, kv.Options{MaxSessions: 1})
	a := newTestClient(t, fc.addrs())
	b := newTestClient(t, fc.addrs())
	ctx := ctxT(t)
	if err := a.Put(ctx, []byte("k"), []byte("a1")); err != nil {
		t.Fatal(err)
	}
	first := sessionID(a)
	if first != kv.IssuedSessionBase || !slices.Equal(opensSeen(fc), []uint64{0}) {
		t.Fatalf("session %#x after opens %v; want the first issued ID %#x after one open with client 0", first, opensSeen(fc), kv.IssuedSessionBase)
	}
	if got := appliedBy(fc, first); len(got) != 1 || got[1] != 1 {
		t.Fatalf("writes of the issued session: %v", got)
	}
	if err := b.Put(ctx, []byte("k"), []byte("b1")); err != nil { // evicts a's session
		t.Fatal(err)
	}
	if err := a.Put(ctx, []byte("k"), []byte("a2")); err != nil {
		t.Fatalf("put after eviction: %v", err)
	}
	second := sessionID(a)
	if !kv.IsIssuedSessionID(second) || second == first || second == sessionID(b) {
		t.Fatalf("a's session after eviction %#x (first %#x, b's %#x)", second, first, sessionID(b))
	}
	if o := opensSeen(fc); !slices.Equal(o, []uint64{0, 0, 0}) {
		t.Fatalf("opens %v, want three with client 0", o)
	}
	// The second write went once under the evicted session (refused) and
	// once under the new one (applied).
	if got := appliedBy(fc, first); len(got) != 2 || got[2] != 1 {
		t.Fatalf("under the evicted session: %v", got)
	}
	if got := appliedBy(fc, second); len(got) != 1 || got[1] != 1 {
		t.Fatalf("under the new session: %v", got)
	}
	if v, _, _ := b.Get(ctx, []byte("k")); string(v) != "a2" {
		t.Fatalf("k = %q", v)
	}
}

// An open whose reply is lost is retried and issues another ID: the client
// uses the one it got an answer for, no write carries the orphan, and the
// store evicts the orphan before the session in use.
func TestRetriedOpenLeavesOrphan(t *testing.T) {
	fc := newFakeCluster(t, 1, kv.Options{MaxSessions: 2})
	fc.mu.Lock()
	fc.loseOpens = 1
	fc.mu.Unlock()
	a := newTestClient(t, fc.addrs())
	ctx := ctxT(t)
	if err := a.Put(ctx, []byte("k"), []byte("a1")); err != nil {
		t.Fatal(err)
	}
	orphan, used := kv.IssuedSessionBase, kv.IssuedSessionBase+1
	if id := sessionID(a); id != used || !slices.Equal(opensSeen(fc), []uint64{0, 0}) {
		t.Fatalf("session %#x after opens %v; want %#x after two opens with client 0", id, opensSeen(fc), used)
	}
	if got := appliedBy(fc, orphan); len(got) != 0 {
		t.Fatalf("writes under the orphan: %v", got)
	}
	b := newTestClient(t, fc.addrs())
	if err := b.Put(ctx, []byte("j"), []byte("b1")); err != nil { // a third session: the orphan goes
		t.Fatal(err)
	}
	if err := a.Put(ctx, []byte("k"), []byte("a2")); err != nil {
		t.Fatal(err)
	}
	if id := sessionID(a); id != used || len(opensSeen(fc)) != 3 {
		t.Fatalf("a's session %#x after opens %v: it was evicted instead of the orphan", id, opensSeen(fc))
	}
	if got := appliedBy(fc, used); got[1] != 1 || got[2] != 1 {
		t.Fatalf("writes of a's session: %v", got)
	}
}

// An open answered session-expired is retried as a new open.
func TestOpenRefusedAsExpiredOpensAnew(t *testing.T) {
	fc := newFakeCluster(t, 1, kv.Options{})
	fc.mu.Lock()
	fc.expireOpens = 2
	fc.mu.Unlock()
	a := newTestClient(t, fc.addrs())
	if err := a.Put(ctxT(t), []byte("k"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	if o := opensSeen(fc); !slices.Equal(o, []uint64{0, 0, 0}) {
		t.Fatalf("opens %v", o)
	}
	if id := sessionID(a); id != kv.IssuedSessionBase {
		t.Fatalf("session %#x", id)
	}
}

// A write sent twice (its first reply lost) whose session is evicted
// before the retry fails with ErrOutcomeUnknown: its first copy applied.
// The next write opens a new session.
func TestExpiredAfterRetryIsUnknown(t *testing.T) {
	fc := newFakeCluster(t, 1, kv.Options{MaxSessions: 1})
	a := newTestClient(t, fc.addrs())
	ctx := ctxT(t)
	if err := a.Put(ctx, []byte("k"), []byte("a1")); err != nil {
		t.Fatal(err)
	}
	fc.mu.Lock()
	fc.loseReply = 1
	fc.onLose = func() { // under fc.mu: evict a's session before the retry
		fc.loseReply, fc.onLose = 0, nil
		fc.store.Apply([][]byte{kv.AppendCommand(nil, []kv.Op{{Kind: kv.NewSession}})}, make([][]byte, 1))
	}
	fc.mu.Unlock()
	err := a.Put(ctx, []byte("k"), []byte("a2"))
	if !errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("write retried into an evicted session: %v", err)
	}
	if v, _, _ := a.Get(ctx, []byte("k")); string(v) != "a2" { // it did apply, once
		t.Fatalf("k = %q", v)
	}
	if got := appliedBy(fc, kv.IssuedSessionBase); got[2] != 2 {
		t.Fatalf("the write reached the store %d times, want 2 (applied, then refused)", got[2])
	}
	if err := a.Put(ctx, []byte("k"), []byte("a3")); err != nil {
		t.Fatal(err)
	}
	if id := sessionID(a); id != kv.IssuedSessionBase+2 {
		t.Fatalf("session %#x, want the third issued", id)
	}
}

// A server from before issued sessions refuses client 0: writes fail with
// ErrServerTooOld, sending nothing, and the client does not invent an ID.
// Once the server issues sessions, the next write opens one.
func TestOldServerRefusesIssuedSessions(t *testing.T) {
	fc := newFakeCluster(t, 1, kv.Options{})
	fc.mu.Lock()
	fc.old = true
	fc.mu.Unlock()
	a := newTestClient(t, fc.addrs())
	ctx := ctxT(t)
	err := a.Put(ctx, []byte("k"), []byte("v"))
	if !errors.Is(err, ErrServerTooOld) || errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("put against an old server: %v", err)
	}
	if _, _, err := a.Get(ctx, []byte("k")); err != nil {
		t.Fatalf("get against an old server: %v", err)
	}
	fc.mu.Lock()
	n := len(fc.applied)
	fc.old = false
	fc.mu.Unlock()
	if o := opensSeen(fc); n != 0 || !slices.Equal(o, []uint64{0}) {
		t.Fatalf("against the old server: %d writes sent, opens %v", n, o)
	}
	ctx2, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := a.Put(ctx2, []byte("k"), []byte("v")); err != nil {
		t.Fatalf("put after the upgrade: %v", err)
	}
}
