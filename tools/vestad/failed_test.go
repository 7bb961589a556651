package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vestalabs/vesta/client"
)

// A replica whose log fails says so, and so does vestad (issue 12, item 6):
// with pmem logs of 1 MiB and no checkpoints to free them, a few puts fill
// them; every replica then fails,
// answers "replica failed: <cause>" for a moment and exits with an error,
// and a client call fails within its timeout with an error naming the
// cause, instead of waiting forever on a cluster that looks alive.
func TestFullLogStopsTheClusterLoudly(t *testing.T) {
	dir := t.TempDir()
	const n = 3
	addrs := freeAddrs(t, 2*n)
	peers, clients := addrs[:n], addrs[n:]
	var errcs []chan error
	var logs []*bytes.Buffer
	for i := range n {
		cfg, err := parseFlags([]string{fmt.Sprint("-id=", i+1), "-peers=" + addrMap(peers), "-clients=" + addrMap(clients),
			"-log=pmem:" + filepath.Join(dir, fmt.Sprintf("r%d.pmem", i+1)), "-pmem-size=1048576", "-checkpoint-dir=off", "-bootstrap",
			"-cluster-id=9", "-tick=2ms", "-election-ticks=15"}, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		logs = append(logs, &buf)
		cfg.logger = slog.New(slog.NewTextHandler(&syncWriter{w: &buf}, nil))
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		errc := make(chan error, 1)
		ready := make(chan struct{})
		go func() { errc <- run(ctx, cfg, func(string, string) { close(ready) }) }()
		select {
		case <-ready:
		case err := <-errc:
			t.Fatalf("replica %d: %v", i+1, err)
		}
		errcs = append(errcs, errc)
	}
	cl, err := client.New(clients, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	value := bytes.Repeat([]byte("v"), 4096)
	var lastErr error
	for k := 0; k < 2000; k++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		t0 := time.Now()
		lastErr = cl.Put(ctx, []byte(fmt.Sprint("k", k)), value)
		cancel()
		if lastErr != nil {
			if d := time.Since(t0); d > 6*time.Second {
				t.Fatalf("the failing call took %v, past its 5 s timeout", d)
			}
			break
		}
	}
	if lastErr == nil {
		t.Fatal("8 MiB of puts fit in three 1 MiB logs")
	}
	if !strings.Contains(lastErr.Error(), "log full") {
		t.Fatalf("the client's error does not name the cause: %v", lastErr)
	}
	for i, errc := range errcs {
		select {
		case err := <-errc:
			if err == nil || !strings.Contains(err.Error(), "log full") {
				t.Fatalf("replica %d exited with %v, want the failure", i+1, err)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("replica %d did not exit after its log filled; its log:\n%s", i+1, logs[i].String())
		}
	}
}

// syncWriter serializes writes from the replica's goroutines.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
