package main

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/vestalabs/vesta/client"
	"github.com/vestalabs/vesta/client/proto"
)

// A client that pipelines many gets of the largest values on one
// connection gets every value: the store answers a command's gets past
// kv.MaxReadBytes "retry" (unavailable), and the client sends them again
// until they are answered, none failing.
func TestPipelinedBigGets(t *testing.T) {
	const keys, gets = 8, 600
	cl := startInProc(t, 1)
	c, err := client.New(cl.clientAddrs, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	values := make([][]byte, keys)
	for i := range values {
		values[i] = bytes.Repeat([]byte{byte('a' + i)}, proto.MaxValueSize)
		if err := c.Put(ctx, []byte(fmt.Sprint("big", i)), values[i]); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failed []string
	t0 := time.Now()
	for i := range gets {
		wg.Add(1)
		c.GetAsync([]byte(fmt.Sprint("big", i%keys)), func(v []byte, found bool, err error) {
			defer wg.Done()
			if err == nil && (!found || !bytes.Equal(v, values[i%keys])) {
				err = fmt.Errorf("%d bytes, found %v", len(v), found)
			}
			if err != nil {
				mu.Lock()
				failed = append(failed, fmt.Sprintf("get %d: %v", i, err))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	took := time.Since(t0)
	if len(failed) > 0 {
		t.Fatalf("%d of %d gets failed: %v", len(failed), gets, failed[:min(len(failed), 5)])
	}
	retried := metric(t, cl.metricsAddrs[0], `vestad_responses_total{status="unavailable"}`)
	t.Logf("%d pipelined gets of %d-byte values answered in %v; %.0f answers to retry", gets, proto.MaxValueSize, took.Round(time.Millisecond), retried)
	if retried < 1 {
		t.Errorf("no get was answered to retry: the test did not reach the read cap")
	}
}

// BenchmarkPipelinedGet is BenchmarkPipelinedPut's gets: 64-byte values
// read by many goroutines sharing one client (one connection per server),
// against three in-process replicas with in-memory logs. A group of gets
// reserves its largest response in the response budget until it is
// answered, so a connection has at most its share's worth of groups in
// flight: this measures what that costs gets of small values. It asserts
// nothing about speed.
func BenchmarkPipelinedGet(b *testing.B) {
	cl := startInProc(b, 3)
	c, err := client.New(cl.clientAddrs, client.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	value := bytes.Repeat([]byte("v"), 64)
	for i := range 10 {
		if err := c.Put(ctx, []byte{'k', byte('0' + i)}, value); err != nil {
			b.Fatal(err)
		}
	}
	b.SetParallelism(128)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		key := []byte("k0")
		for i := 0; pb.Next(); i++ {
			key[1] = byte('0' + i%10)
			if _, _, err := c.Get(ctx, key); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// A group's gets reserve getsReserve, grown get by get (reserveFor), which
// holds their frames whatever the store answers each: its values return
// at most maxGroupReads together, and a smallResponse holds a get's frame
// but its value, and a retry's.
func TestGetsReserve(t *testing.T) {
	retry := respFrameSize(&proto.Response{ID: ^uint64(0), Status: proto.StatusUnavailable, Value: readBudgetMsg})
	if hdr := maxGetResponse - proto.MaxValueSize; smallResponse < hdr || smallResponse < retry {
		t.Fatalf("smallResponse %d holds neither a get's frame but its value (%d) nor a retry's (%d)", smallResponse, hdr, retry)
	}
	if n := respFrameSize(&proto.Response{ID: ^uint64(0), Found: true, Value: make([]byte, proto.MaxValueSize)}); n > maxGetResponse {
		t.Fatalf("a largest get's frame %d, above maxGetResponse %d", n, maxGetResponse)
	}
	if r := getsReserve(1); r != int64(maxGetResponse) {
		t.Fatalf("one get reserves %d, want a largest value's frame %d", r, maxGetResponse)
	}
	g := &group{}
	var sum int64
	for n := 1; n <= maxGroupOps; n++ {
		if r := g.reserveFor(proto.OpPut); r != int64(smallResponse) {
			t.Fatalf("a put reserves %d", r)
		}
		sum += g.reserveFor(proto.OpGet)
		g.gets++
		if sum != getsReserve(n) {
			t.Fatalf("%d gets reserved %d, getsReserve %d", n, sum, getsReserve(n))
		}
		// The most n gets' frames take: one value of all maxGroupReads
		// (every other retried) or values sharing it.
		if worst := int64(maxGroupReads + n*max(maxGetResponse-proto.MaxValueSize, retry)); n > 1 && sum < worst {
			t.Fatalf("%d gets reserved %d, their frames may take %d", n, sum, worst)
		}
	}
	if (*group)(nil).reserveFor(proto.OpGet) != int64(maxGetResponse) {
		t.Fatal("a get starting a group does not reserve a largest value")
	}
	t.Logf("a group of %d gets reserves %d bytes; a connection's default share holds %d such groups",
		maxGroupOps, sum, defaultClientResponseBytes/respShares/sum)
}

// With the default limits, gets of the largest value pipelined on one
// connection, read only once all were sent: each is answered its value or
// "retry" (a group of them returns kv.MaxReadBytes), in order, and once
// they are read the budget is given back to the byte.
func TestGroupReservesGetsOnce(t *testing.T) {
	addr, maddr := inProc(t)
	waitLeaderAt(t, addr)
	putBig(t, addr, "big")
	const n = 6 * maxGroupOps
	nc := dialPreamble(t, addr)
	pipelineGets(t, nc, "big", n)
	rd := proto.NewReader(nc, 0, 0)
	_ = nc.SetReadDeadline(time.Now().Add(30 * time.Second))
	values := 0
	for i := range n {
		body, err := rd.Next()
		if err != nil {
			t.Fatalf("response %d: %v", i, err)
		}
		r, err := proto.DecodeResponse(body)
		switch {
		case err != nil || r.ID != uint64(i+1):
			t.Fatalf("response %d: ID %d, %v", i, r.ID, err)
		case r.Status == proto.StatusOK && len(r.Value) == proto.MaxValueSize:
			values++
		case r.Status == proto.StatusUnavailable && bytes.Equal(r.Value, readBudgetMsg):
		default:
			t.Fatalf("response %d: %v, %d bytes", i, r.Status, len(r.Value))
		}
	}
	if values < n/maxGroupOps || values == n {
		t.Errorf("%d of %d gets answered a value", values, n)
	}
	t.Logf("%d of %d gets answered a value, the others retry", values, n)
	waitFor(t, 5*time.Second, "the budget given back", func() bool { return metric(t, maddr, "vestad_client_response_bytes") == 0 })
}
