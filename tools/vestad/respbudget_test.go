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
// against three in-process replicas with in-memory logs. A get reserves
// its largest response in the response budget until it is answered, so a
// connection has at most its share's worth of them in flight: this
// measures what that costs gets of small values. It asserts nothing about
// speed.
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
