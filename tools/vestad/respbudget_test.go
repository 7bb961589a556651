package main

import (
	"bytes"
	"context"
	"testing"

	"github.com/vestalabs/vesta/client"
)

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
