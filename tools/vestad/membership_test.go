//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// TestProcessMembershipChanges grows and shrinks a cluster of vestad
// processes under load with vestactl member (issue 15's acceptance test):
// three replicas bootstrapped with an address book of eight (IDs 1 to 8),
// then 4 and 5 join (-join: a checkpoint from a peer) and are added as
// learners, promoted (five voters) and removed again (both exit 0, saying
// so), and then 1, 2 and 3 are replaced one by one by 6, 7 and 8 (each
// joins, becomes a learner, catches up and takes the old one's place in one
// change; the old one exits 0). Clients put and get throughout. At the end
// every acknowledged write reads back, the history (reads included) is
// linearizable, and 6, 7 and 8 agree on the configuration {6,7,8}, on their
// applied index and, offline, on their state's digest.
func TestProcessMembershipChanges(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds vestad and runs up to 5 processes for about 40 s; make test runs it")
	}
	start := time.Now()
	dir := t.TempDir()
	vestad, vestactl := buildBinaries(t, dir)
	const book = 8
	addrs := freeAddrs(t, 3*book)
	peers, clients, metrics := addrs[:book], addrs[book:2*book], addrs[2*book:]
	cl := &procCluster{t: t, clientAddrs: clients}
	for i := 0; i < book; i++ {
		p := &vproc{cl: cl, id: i + 1, bin: vestad, join: i >= 3,
			dataDir: filepath.Join(dir, fmt.Sprintf("data%d", i+1)),
			logPath: filepath.Join(dir, fmt.Sprintf("vestad%d.log", i+1))}
		p.args = []string{"-id", fmt.Sprint(i + 1), "-peers", addrMap(peers), "-clients", addrMap(clients),
			"-data", p.dataDir, "-cluster-id", "42", "-tick", "10ms", "-election-ticks", "15", "-log-level", "info",
			"-metrics-addr", metrics[i]}
		if !p.join {
			// The first voters; a joiner asks every replica in the book.
			p.args = append(p.args, "-members", "1,2,3")
		}
		cl.procs = append(cl.procs, p)
	}
	cl.watch(clients)
	logf := func(format string, args ...any) {
		t.Helper()
		t.Logf("%6.2fs "+format, append([]any{time.Since(start).Seconds()}, args...)...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	for _, p := range cl.procs[:3] {
		p.start()
	}
	if cl.waitLeader(ctx, 20*time.Second) < 0 {
		cl.fail("no leader elected within 20 s of starting")
	}
	load := newLoad(clients, 3, 2)
	load.start(t)
	defer load.stop()
	time.Sleep(time.Second)

	allMetrics := strings.Join(metrics, ",")
	member := func(args ...string) {
		t.Helper()
		t0 := time.Now()
		argv := append([]string{"-timeout", "60s", "member", args[0], allMetrics}, args[1:]...)
		out, err := command(vestactl, argv...).CombinedOutput()
		if err != nil {
			t.Fatalf("vestactl member %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		logf("vestactl member %s (%v):\n%s", strings.Join(args, " "), time.Since(t0).Round(time.Millisecond), bytes.TrimSpace(out))
	}
	// removed marks replica id's coming exit as expected and returns a
	// wait for it: a clean exit, logged as a removal.
	removed := func(id int) func() {
		p := cl.procs[id-1]
		p.mu.Lock()
		cmd, exited := p.cmd, p.exited
		p.expected = true
		p.mu.Unlock()
		return func() {
			t.Helper()
			select {
			case <-exited:
			case <-time.After(30 * time.Second):
				cl.fail("replica %d did not exit within 30 s of its removal; its view:\n%s", id, adminView(metrics[id-1]))
			}
			if code := cmd.ProcessState.ExitCode(); code != 0 {
				cl.fail("replica %d exited with status %d after its removal; want 0", id, code)
			}
			if b, _ := os.ReadFile(p.logPath); !bytes.Contains(b, []byte("removed from the cluster")) {
				cl.fail("replica %d exited without logging \"removed from the cluster\"", id)
			}
			logf("replica %d exited 0: removed from the cluster", id)
		}
	}

	// Grow: 4 and 5 join, become learners, then voters.
	cl.procs[3].start()
	cl.procs[4].start()
	member("add", "4")
	member("add", "5")
	member("promote", "4")
	member("promote", "5")
	checkMembers(t, metrics[:5], []uint32{1, 2, 3, 4, 5}, nil)
	time.Sleep(time.Second)

	// Shrink back to 1, 2, 3.
	wait4, wait5 := removed(4), removed(5)
	member("remove", "4")
	member("remove", "5")
	wait4()
	wait5()
	checkMembers(t, metrics[:3], []uint32{1, 2, 3}, nil)

	// Replace every first member, one by one.
	for old := 1; old <= 3; old++ {
		nu := old + 5
		cl.procs[nu-1].start()
		waitOld := removed(old)
		member("replace", strconv.Itoa(old), strconv.Itoa(nu))
		waitOld()
	}
	final := metrics[5:8]
	checkMembers(t, final, []uint32{6, 7, 8}, nil)
	time.Sleep(time.Second)

	load.stop()
	if f := cl.failures(); len(f) > 0 {
		t.Fatalf("replica processes failed:\n%s", strings.Join(f, "\n"))
	}
	verified := load.verify(t, ctx)
	logf("%d operations (%d answered, %d with unknown outcome); %d acknowledged writes read back", len(load.ops), load.acked, load.unknown, verified)
	if verified == 0 {
		t.Fatal("no acknowledged write to verify: the load did nothing")
	}
	history := load.history()
	res, info := porcupine.CheckOperationsVerbose(kvModel, history, 30*time.Second)
	switch res {
	case porcupine.Illegal:
		path := filepath.Join(os.TempDir(), fmt.Sprintf("vesta-membership-%d.html", time.Now().UnixNano()))
		if err := porcupine.VisualizePath(kvModel, info, path); err == nil {
			t.Logf("history visualization: %s", path)
		}
		t.Fatalf("the client history of %d operations is not linearizable", len(history))
	case porcupine.Unknown:
		t.Fatalf("the linearizability check of %d operations timed out", len(history))
	}
	logf("history of %d operations is linearizable", len(history))

	// 6, 7 and 8 agree: the configuration, the applied index, and offline
	// the state's digest at one slot.
	checkMembers(t, final, []uint32{6, 7, 8}, nil)
	var last []uint64
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		last = last[:0]
		for _, a := range clients[5:8] {
			st, err := cl.status.Status(ctx, a)
			if err != nil {
				st.Applied = 0
			}
			last = append(last, st.Applied)
		}
		if last[0] > 0 && slices.Min(last) == slices.Max(last) {
			logf("6, 7 and 8 applied the same prefix: %d slots", last[0])
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("6, 7 and 8 did not converge within 15 s: applied %v", last)
		}
	}
	cl.stopAll(t)
	if f := cl.failures(); len(f) > 0 {
		t.Fatalf("replica processes failed:\n%s", strings.Join(f, "\n"))
	}
	re := regexp.MustCompile(`slot (\d+): \d+ keys, \d+ sessions, digest ([0-9a-f]+)`)
	replay := func(id int, to string) (uint64, string) {
		args := []string{"replay"}
		if to != "" {
			args = append(args, "-to", to)
		}
		out, err := command(vestactl, append(args, cl.procs[id-1].dataDir)...).CombinedOutput()
		m := re.FindSubmatch(out)
		if err != nil || m == nil {
			t.Fatalf("vestactl replay of replica %d: %v\n%s", id, err, out)
		}
		slot, _ := strconv.ParseUint(string(m[1]), 10, 64)
		return slot, string(m[2])
	}
	lowest := ^uint64(0)
	for id := 6; id <= 8; id++ {
		s, _ := replay(id, "")
		lowest = min(lowest, s)
	}
	var digests []string
	for id := 6; id <= 8; id++ {
		_, d := replay(id, fmt.Sprint(lowest))
		digests = append(digests, d)
	}
	if digests[0] != digests[1] || digests[1] != digests[2] {
		t.Fatalf("6, 7 and 8 differ at slot %d: digests %v", lowest, digests)
	}
	logf("6, 7 and 8 have one digest at slot %d: %s; done", lowest, digests[0])
}

// checkMembers requires every replica at addrs (-metrics-addr) to show the
// newest configuration voters, learners on GET /members, waiting a little
// for those that lag.
func checkMembers(t *testing.T, addrs []string, voters, learners []uint32) {
	t.Helper()
	var got []string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		got = got[:0]
		ok := true
		for _, a := range addrs {
			var m membersJSON
			resp, err := http.Get("http://" + a + "/members")
			if err == nil {
				err = json.NewDecoder(resp.Body).Decode(&m)
				resp.Body.Close()
			}
			if err != nil || len(m.Configurations) == 0 {
				got = append(got, fmt.Sprintf("%s: %v", a, err))
				ok = false
				continue
			}
			c := m.Configurations[len(m.Configurations)-1]
			got = append(got, fmt.Sprintf("replica %d: epoch %d voters %v learners %v", m.ID, c.Epoch, c.Voters, c.Learners))
			if !slices.Equal(c.Voters, voters) || !slices.Equal(c.Learners, nonNilIDs(learners)) {
				ok = false
			}
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("want voters %v, learners %v everywhere; got:\n%s", voters, learners, strings.Join(got, "\n"))
		}
	}
}

// adminView is a replica's /status and /members, for a failure's message.
func adminView(addr string) string {
	var b strings.Builder
	for _, path := range []string{"/status", "/members"} {
		c := http.Client{Timeout: 2 * time.Second}
		resp, err := c.Get("http://" + addr + path)
		if err != nil {
			fmt.Fprintf(&b, "GET %s: %v\n", path, err)
			continue
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<10))
		resp.Body.Close()
		fmt.Fprintf(&b, "GET %s: %s\n", path, bytes.TrimSpace(body))
	}
	return b.String()
}

func nonNilIDs(s []uint32) []uint32 {
	if s == nil {
		return []uint32{}
	}
	return s
}
