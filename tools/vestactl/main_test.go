package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/vestalabs/vesta/engine/paxos"
	"github.com/vestalabs/vesta/engine/storage"
	"github.com/vestalabs/vesta/engine/wire"
)

func runCLI(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestUsageErrors(t *testing.T) {
	cases := []struct {
		args []string
		msg  string
	}{
		{nil, "no command"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"put", "k"}, "put takes 2 argument(s), got 1"},
		{[]string{"get"}, "get takes 1 argument(s), got 0"},
		{[]string{"delete", "a", "b"}, "delete takes 1"},
		{[]string{"cas", "k", "v"}, "cas takes 3"},
		{[]string{"status", "extra"}, "status takes 0"},
		{[]string{"log"}, "the only subcommand is dump"},
		{[]string{"log", "dump"}, "log dump takes one argument"},
		{[]string{"-servers", " , ", "get", "k"}, "-servers: no addresses"},
		{[]string{"-servers", "nohost", "get", "k"}, "-servers"},
		{[]string{"member"}, "member list ADDRS"},
		{[]string{"member", "join", "a:1"}, `unknown subcommand "join"`},
		{[]string{"member", "add", "a:1"}, "member add takes 2 argument(s), got 1"},
		{[]string{"member", "replace", "a:1", "2"}, "member replace takes 3"},
		{[]string{"member", "replace", "a:1", "2", "2"}, "OLD and NEW are the same"},
		{[]string{"member", "remove", "a:1", "x"}, `"x" is not a replica ID`},
		{[]string{"member", "remove", "-voter", "a:1", "2"}, "-voter is a flag of member add"},
		{[]string{"member", "list", " , "}, "no METRICS-ADDR"},
	}
	for _, c := range cases {
		code, _, stderr := runCLI(c.args...)
		if code != 2 || !strings.Contains(stderr, c.msg) || !strings.Contains(stderr, "usage: vestactl") {
			t.Errorf("%q: exit %d, stderr:\n%s\nwant exit 2 with %q and the usage", c.args, code, stderr, c.msg)
		}
	}
	if code, _, stderr := runCLI("-timeout", "0s", "status"); code != 2 || !strings.Contains(stderr, "-timeout") {
		t.Errorf("-timeout 0s: exit %d, %s", code, stderr)
	}
	if code, _, _ := runCLI("-h"); code != 0 {
		t.Errorf("-h: exit %d", code)
	}
}

func TestLogDump(t *testing.T) {
	dir := t.TempDir()
	w, err := storage.OpenWAL(dir, storage.WALOptions{SegmentSize: 1 << 16, Create: storage.MustCreate,
		Identity: storage.Identity{ClusterID: 42, ReplicaID: 3, Members: []wire.ReplicaID{1, 3, 5}}})
	if err != nil {
		t.Fatal(err)
	}
	for s := 0; s < 3; s++ {
		e := wire.Entry{Slot: wire.Slot(s), Ballot: wire.Ballot{Round: 1, Replica: 1},
			Value: wire.Value{Kind: wire.ValueBatch, Data: bytes.Repeat([]byte{byte(s)}, 40)}}
		if err := w.Append([]wire.Entry{e}, paxos.HardState{Promised: e.Ballot, Commit: wire.Slot(s)}, true); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Sync(); err != nil {
		t.Fatal(err)
	}
	w.Close()

	code, out, stderr := runCLI("log", "dump", dir)
	if code != 0 || !strings.Contains(out, "entry     slot=2") || !strings.Contains(out, "OpenWAL accepts this log") ||
		!strings.Contains(out, "identity: cluster 42, replica 3, members {1,3,5}; log ID ") {
		t.Fatalf("dump of a good log: exit %d\n%s%s", code, out, stderr)
	}

	// Damage the first entry: valid records follow, so the log is refused.
	m := regexp.MustCompile(`(?m)^  off=(\d+) +entry +slot=0`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no first entry in\n%s", out)
	}
	off, _ := strconv.Atoi(m[1])
	segs, _ := filepath.Glob(filepath.Join(dir, "*.wal"))
	if len(segs) != 1 {
		t.Fatalf("segments %v", segs)
	}
	b, err := os.ReadFile(segs[0])
	if err != nil {
		t.Fatal(err)
	}
	b[off+30] ^= 0xff
	if err := os.WriteFile(segs[0], b, 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, _ = runCLI("log", "dump", dir)
	if code != 1 || !strings.Contains(out, "crc=bad") || !strings.Contains(out, "OpenWAL refuses this log") {
		t.Fatalf("dump of a damaged log: exit %d\n%s", code, out)
	}

	if code, _, stderr := runCLI("log", "dump", filepath.Join(dir, "nope")); code != 1 || !strings.Contains(stderr, "no such file") {
		t.Errorf("missing dir: exit %d %s", code, stderr)
	}
	if code, _, stderr := runCLI("log", "dump", segs[0]); code != 1 || !strings.Contains(stderr, "not a directory") {
		t.Errorf("a file: exit %d %s", code, stderr)
	}
}

// -min-slot and -allow-stale belong to -read-mode bounded.
func TestBoundedReadFlags(t *testing.T) {
	for _, args := range [][]string{{"-min-slot", "5", "get", "k"}, {"-allow-stale", "get", "k"}, {"-read-mode", "lease", "-allow-stale", "get", "k"}} {
		code, _, stderr := runCLI(args...)
		if code != 2 || !strings.Contains(stderr, "need -read-mode bounded") {
			t.Errorf("%q: exit %d, stderr %q", args, code, stderr)
		}
	}
	if code, _, stderr := runCLI("-read-mode", "nearest", "get", "k"); code != 2 || !strings.Contains(stderr, "bounded") {
		t.Errorf("an unknown read mode: exit %d, stderr %q", code, stderr)
	}
}
