package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// startOnce runs vestad's run() with args until it serves (then stops it
// cleanly and returns nil) or fails (and returns its error).
func startOnce(t *testing.T, args ...string) error {
	t.Helper()
	cfg, err := parseFlags(args, io.Discard)
	if err != nil {
		return err
	}
	cfg.logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan struct{})
	errc := make(chan error, 1)
	go func() { errc <- run(ctx, cfg, func(string, string) { close(ready) }) }()
	select {
	case <-ready:
		cancel()
		return <-errc
	case err := <-errc:
		return err
	case <-time.After(20 * time.Second):
		t.Fatal("vestad neither served nor failed within 20 s")
		return nil
	}
}

// A log knows whose it is (issue 12, item 9): a replica refuses, at start
// and naming which, a directory without a log unless told to bootstrap, a
// bootstrap where a log exists, another cluster's log, another replica's
// log, and a log created for another member set.
func TestLogIdentityIsChecked(t *testing.T) {
	dir := t.TempDir()
	addrs := freeAddrs(t, 8)
	peers := "-peers=" + addrMap(addrs[:3])
	data := func(n int) string { return filepath.Join(dir, fmt.Sprintf("data%d", n)) }
	flags := func(id int, cluster uint64, d string, extra ...string) []string {
		return append([]string{fmt.Sprint("-id=", id), peers, "-client-addr=" + addrs[3+id], fmt.Sprint("-cluster-id=", cluster),
			"-data=" + d, "-tick=2ms", "-election-ticks=15"}, extra...)
	}
	expect := func(what string, err error, want ...string) {
		t.Helper()
		if err == nil {
			t.Fatalf("%s: started; want a refusal", what)
		}
		for _, w := range want {
			if !strings.Contains(err.Error(), w) {
				t.Fatalf("%s: %v; want it to say %q", what, err, w)
			}
		}
	}

	expect("an empty directory without -bootstrap", startOnce(t, flags(1, 7, data(1))...), "no log here", "-bootstrap")
	if err := startOnce(t, flags(1, 7, data(1), "-bootstrap")...); err != nil {
		t.Fatalf("bootstrap: %v", err)
	}
	if err := startOnce(t, flags(1, 7, data(1))...); err != nil {
		t.Fatalf("restart: %v", err)
	}
	expect("-bootstrap on a bootstrapped directory", startOnce(t, flags(1, 7, data(1), "-bootstrap")...), "already")
	expect("another cluster's log", startOnce(t, flags(1, 8, data(1))...), "cluster 7", "not cluster 8")
	// Replica 3 started on a copy of replica 1's directory.
	if out, err := exec.Command("cp", "-a", data(1), data(3)).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	os.Remove(filepath.Join(data(3), "LOCK"))
	expect("another replica's log", startOnce(t, flags(3, 7, data(3))...), "replica 1", "not replica 3")
	// The same replica with another member set.
	other := append(flags(1, 7, data(1)), "-peers="+addrMap(addrs[:2]))
	expect("another member set", startOnce(t, other...), "members")
}
