//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vestalabs/vesta/client"
	"github.com/vestalabs/vesta/client/proto"
)

// Bounded-staleness reads at any replica (issue 15, item 4), on three vestad
// processes on loopback:
//   - every write's answer carries its slot, and a bounded read at a
//     follower with that slot as its min slot returns the write, however
//     far the follower lags (read-your-writes at another replica, through
//     a second client that knows only the slot); a client reading with
//     ReadAtAnyReplica reads its own writes at whichever replica;
//   - a read whose min slot is far ahead, with allow-stale, answers at once,
//     flagged stale, with the value the follower holds; without it the
//     replicas wait, answer that they are behind, and the call fails at its
//     deadline with an error that says so (ErrReplicaBehind);
//   - vestactl get -read-mode bounded -min-slot N [-allow-stale] does the same;
//   - a 0.1 client is answered without slots, and a client of a version the
//     server does not speak is refused with a message naming both versions.
func TestProcessBoundedReads(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds vestad and runs a 3-process cluster for about 10 s; make test runs it")
	}
	dir := t.TempDir()
	vestad, vestactl := buildBinaries(t, dir)
	cl := newProcCluster(t, dir, vestad, 3)
	cl.startAll()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	leader := cl.waitLeader(ctx, 20*time.Second)
	if leader < 0 {
		cl.fail("no leader elected within 20 s of starting")
	}
	follower := cl.clientAddrs[(leader+1)%3]

	writer, err := client.New(cl.clientAddrs, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer writer.Close()
	// A client that knows only the follower, and no slot of its own: what
	// it must read it learns from the min slot it is given.
	reader, err := client.New([]string{follower}, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()

	key := []byte("bounded/key")
	var last client.Slot
	var readTime time.Duration
	for i := 1; i <= 100; i++ {
		val := []byte(strconv.Itoa(i))
		if err := writer.Put(ctx, key, val); err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
		seen := writer.SeenSlot()
		if seen <= last {
			t.Fatalf("put %d: seen slot %d, not above the previous write's %d", i, seen, last)
		}
		last = seen
		// At once: the follower learns that the write is chosen only with
		// the leader's next message, so the read often waits for it.
		rs := time.Now()
		r, err := reader.GetBounded(ctx, key, client.BoundedRead{MinSlot: seen, Addr: follower})
		readTime += time.Since(rs)
		if err != nil {
			t.Fatalf("bounded read %d at the follower: %v", i, err)
		}
		if !r.Found || !bytes.Equal(r.Value, val) || r.Stale || r.Applied < seen {
			t.Fatalf("bounded read %d at the follower with min slot %d: %q found %v stale %v applied %d; want %q, not stale, applied >= %d",
				i, seen, r.Value, r.Found, r.Stale, r.Applied, val, seen)
		}
	}
	t.Logf("100 writes read back at the follower %s through their slots (last %d), %v a read on average",
		follower, last, readTime/100)
	if reader.SeenSlot() < last {
		t.Errorf("the reader's seen slot %d is below the slot it read at, %d", reader.SeenSlot(), last)
	}

	// One client, reads at any replica: its own writes, round robin.
	anyr, err := client.New(cl.clientAddrs, client.Options{Reads: client.ReadAtAnyReplica})
	if err != nil {
		t.Fatal(err)
	}
	defer anyr.Close()
	for i := 0; i < 30; i++ {
		k := []byte(fmt.Sprintf("bounded/own/%d", i%3))
		v := []byte(strconv.Itoa(i))
		if err := anyr.Put(ctx, k, v); err != nil {
			t.Fatalf("own put %d: %v", i, err)
		}
		got, found, err := anyr.Get(ctx, k)
		if err != nil || !found || !bytes.Equal(got, v) {
			t.Fatalf("own read %d: %q %v %v, want %q (read-your-writes at any replica)", i, got, found, err, v)
		}
	}

	// A min slot far ahead, stale allowed: at once, flagged, the value the
	// follower holds.
	ahead := last + 1_000_000
	start := time.Now()
	r, err := reader.GetBounded(ctx, key, client.BoundedRead{MinSlot: ahead, AllowStale: true, Addr: follower})
	if err != nil {
		t.Fatalf("stale read: %v", err)
	}
	if !r.Stale || r.Applied >= ahead || r.Applied < last || string(r.Value) != "100" {
		t.Fatalf("stale read with min slot %d: %q stale %v applied %d; want %q, stale, applied in [%d, %d)",
			ahead, r.Value, r.Stale, r.Applied, "100", last, ahead)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("a stale read allowed took %v: it must not wait", d)
	}

	// The same without allow-stale: the replicas wait, say they are
	// behind, and the call fails at its deadline.
	start = time.Now()
	dctx, dcancel := context.WithTimeout(ctx, 2500*time.Millisecond)
	_, err = reader.GetBounded(dctx, key, client.BoundedRead{MinSlot: ahead})
	dcancel()
	elapsed := time.Since(start)
	var ce *client.CallError
	switch {
	case err == nil:
		t.Fatalf("a read with min slot %d, far ahead of the cluster, succeeded", ahead)
	case !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, client.ErrReplicaBehind) || !errors.As(err, &ce):
		t.Fatalf("read far ahead: %v; want a *CallError matching context.DeadlineExceeded and ErrReplicaBehind", err)
	case !strings.Contains(err.Error(), "is behind") || !strings.Contains(err.Error(), strconv.FormatUint(uint64(ahead), 10)) ||
		!strings.Contains(err.Error(), "allow a stale answer"):
		t.Fatalf("read far ahead: the error does not say the replica is behind the min slot and what to do: %v", err)
	case elapsed < 2*time.Second:
		t.Fatalf("read far ahead failed after %v, before its deadline: %v", elapsed, err)
	}
	t.Logf("read far ahead, without allow-stale: %v", err)

	// vestactl.
	servers := "-servers=" + follower
	out, err := command(vestactl, servers, "-read-mode", "bounded", "-min-slot", fmt.Sprint(last), "get", string(key)).CombinedOutput()
	if err != nil || string(bytes.TrimSpace(out)) != "100" {
		t.Errorf("vestactl get -read-mode bounded -min-slot %d: %v %q", last, err, out)
	}
	cmd := command(vestactl, servers, "-read-mode", "bounded", "-min-slot", fmt.Sprint(ahead), "-allow-stale", "get", string(key))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil || strings.TrimSpace(stdout.String()) != "100" || !strings.Contains(stderr.String(), "stale") {
		t.Errorf("vestactl get -allow-stale: %v, stdout %q, stderr %q", err, stdout.String(), stderr.String())
	}
	out, err = command(vestactl, servers, "-timeout", "1500ms", "-read-mode", "bounded", "-min-slot", fmt.Sprint(ahead), "get", string(key)).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "is behind") || !strings.Contains(string(out), "deadline exceeded") {
		t.Errorf("vestactl get with a min slot far ahead: %v %q; want a failure saying the replica is behind", err, out)
	}

	// Protocol versions, on raw connections: the leader answers a read
	// index get with its slot in 0.2 only.
	lead := cl.clientAddrs[leader]
	get := proto.Request{ID: 1, Op: proto.OpGet, Key: key, Read: proto.ReadIndex}
	v1 := rawCall(t, lead, proto.PreambleOf(proto.Version1), &get)
	v2 := rawCall(t, lead, proto.Preamble, &get)
	switch {
	case v1.Status == proto.StatusNotLeader || v2.Status == proto.StatusNotLeader:
		t.Logf("leadership moved: not comparing 0.1 and 0.2 answers (%+v, %+v)", v1, v2)
	case v1.Status != proto.StatusOK || v1.Applied != 0 || string(v1.Value) != "100":
		t.Errorf("a 0.1 client's get: %+v; want the value and no applied slot", v1)
	case v2.Status != proto.StatusOK || v2.Applied < uint64(last) || string(v2.Value) != "100":
		t.Errorf("a 0.2 client's get: %+v; want the value and an applied slot >= %d", v2, last)
	}
	get.Read, get.MinSlot = proto.ReadBounded, uint64(last)
	if resp := rawCall(t, follower, proto.Preamble, &get); resp.Status != proto.StatusOK || string(resp.Value) != "100" || resp.Applied < uint64(last) {
		t.Errorf("a 0.2 bounded get: %+v", resp)
	}
	if resp := rawCall(t, follower, proto.PreambleOf(proto.CurrentVersion+1), &get); resp.ID != 0 || resp.Status != proto.StatusError ||
		!strings.Contains(string(resp.Value), "speaks 0.1 to 0.2") {
		t.Errorf("a client of a newer version: %+v, want a refusal naming the versions", resp)
	}
}

// rawCall sends one request after preamble on a new connection to addr and
// returns the first response.
func rawCall(t *testing.T, addr string, preamble [8]byte, req *proto.Request) proto.Response {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := nc.Write(append(preamble[:], proto.AppendRequest(nil, req)...)); err != nil {
		t.Fatal(err)
	}
	var n [4]byte
	if _, err := io.ReadFull(nc, n[:]); err != nil {
		t.Fatalf("reading a response: %v", err)
	}
	body := make([]byte, binary.LittleEndian.Uint32(n[:]))
	if _, err := io.ReadFull(nc, body); err != nil {
		t.Fatalf("reading a response: %v", err)
	}
	resp, err := proto.DecodeResponse(body)
	if err != nil {
		t.Fatalf("decoding a response: %v", err)
	}
	return resp
}
