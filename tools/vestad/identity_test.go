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

	"github.com/vestalabs/vesta/engine/storage"
	"github.com/vestalabs/vesta/engine/wire"
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

	expect("an empty directory without -bootstrap", startOnce(t, flags(1, 7, data(1))...), "no log here", "-bootstrap", "-join", "new -id")
	expect("-bootstrap and -join", startOnce(t, flags(1, 7, data(1), "-bootstrap", "-join")...), "-bootstrap and -join")
	expect("-bootstrap with -members without this replica", startOnce(t, flags(1, 7, data(1), "-bootstrap", "-members=2,3")...),
		"-members 2,3", "does not include this replica's -id 1", "-join")
	expect("-members not in the address book", startOnce(t, flags(1, 7, data(1), "-bootstrap", "-members=1,2,9")...),
		"-members", "replica 9 is not in -peers")
	if err := startOnce(t, flags(1, 7, data(1), "-bootstrap")...); err != nil {
		t.Fatalf("bootstrap: %v", err)
	}
	if err := startOnce(t, flags(1, 7, data(1))...); err != nil {
		t.Fatalf("restart: %v", err)
	}
	recorded := "its log records cluster 7, replica 1, members 1,2,3"
	expect("-bootstrap on a bootstrapped directory", startOnce(t, flags(1, 7, data(1), "-bootstrap")...), "-bootstrap:", "already", recorded, "without -bootstrap")
	expect("-join on a bootstrapped directory", startOnce(t, flags(1, 7, data(1), "-join")...), "-join:", "already", recorded, "without -join")
	expect("another cluster's log", startOnce(t, flags(1, 8, data(1))...), "-cluster-id 8", "another cluster", recorded)
	// Replica 3 started on a copy of replica 1's directory.
	if out, err := exec.Command("cp", "-a", data(1), data(3)).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	os.Remove(filepath.Join(data(3), "LOCK"))
	expect("another replica's log", startOnce(t, flags(3, 7, data(3))...), "-id 3", "another replica", recorded, "-join")
	// The same replica with another member set: the address book of two
	// (-members defaults to every ID in it), or -members given.
	other := append(flags(1, 7, data(1)), "-peers="+addrMap(addrs[:2]))
	expect("another member set", startOnce(t, other...), "-members 1,2", "other members", recorded)
	expect("-members that disagree", startOnce(t, flags(1, 7, data(1), "-members=1,3")...), "-members 1,3", "other members", recorded)
	// A wider address book with the same -members is the same replica.
	wider := append(flags(1, 7, data(1), "-members=1,2,3"), "-peers="+addrMap(addrs[:3])+",4=127.0.0.1:1,5=127.0.0.1:2")
	if err := startOnce(t, wider...); err != nil {
		t.Fatalf("restart with a wider address book and the same -members: %v", err)
	}
}

// A replica that joins (-join) records the replicas it asked and itself,
// and leaves a marker: a later start without -join restarts it as the
// member that joined. Here nobody answers, so the join itself times out;
// what is checked is what each start refuses and says.
func TestJoinFlags(t *testing.T) {
	dir := t.TempDir()
	addrs := freeAddrs(t, 4)
	peers := "-peers=" + addrMap(addrs[:3])
	d := filepath.Join(dir, "data3")
	flags := func(extra ...string) []string {
		return append([]string{"-id=3", peers, "-client-addr=" + addrs[3], "-cluster-id=7", "-data=" + d, "-tick=2ms", "-election-ticks=15"}, extra...)
	}
	_, err := parseFlags(flags("-join", "-checkpoint-dir=off"), io.Discard)
	if err == nil || !strings.Contains(err.Error(), "-join: needs checkpoints") {
		t.Fatalf("-join with -checkpoint-dir off: %v, want a refusal naming -join", err)
	}
	if _, err := parseFlags(flags("-join", "-members=3"), io.Discard); err == nil || !strings.Contains(err.Error(), "at least one other") {
		t.Fatalf("-join asking only itself: %v", err)
	}
	cfg, err := parseFlags(flags("-join", "-members=1,2"), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	joined, err := checkStart(cfg)
	if err != nil || !joined {
		t.Fatalf("checkStart(-join) = %v, %v; want joined", joined, err)
	}
	if _, err := os.Stat(filepath.Join(d, "JOINED")); err != nil {
		t.Fatalf("no join marker: %v", err)
	}
	// Before its log exists (the join stopped early), a start without
	// -join says to start it again with -join.
	cfg.join = false
	if _, err := checkStart(cfg); err == nil || !strings.Contains(err.Error(), "start it again with -join") {
		t.Fatalf("start without -join after an unfinished join: %v", err)
	}
	// Once its log exists (as the engine creates it: the replicas it asked
	// and itself), a start without -join is a joined replica's restart,
	// and one with -join is refused.
	w, err := storage.OpenWAL(d, storage.WALOptions{Create: storage.MustCreate,
		Identity: storage.Identity{ClusterID: 7, ReplicaID: 3, Members: []wire.ReplicaID{1, 2, 3}}})
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	if joined, err := checkStart(cfg); err != nil || !joined {
		t.Fatalf("restart of a joined replica: %v, %v; want joined", joined, err)
	}
	cfg.join = true
	if _, err := checkStart(cfg); err == nil || !strings.Contains(err.Error(), "without -join") {
		t.Fatalf("-join on a joined replica's log: %v", err)
	}
	cfg.join, cfg.members = false, []wire.ReplicaID{1}
	if _, err := checkStart(cfg); err == nil || !strings.Contains(err.Error(), "as at -join") {
		t.Fatalf("restart of a joined replica with other -members: %v", err)
	}
}
