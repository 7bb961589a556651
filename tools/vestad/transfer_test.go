//go:build linux

package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// State transfer between processes (issue 13): three vestad processes on
// file WALs checkpoint every 64 KiB of commands; under load a follower is
// SIGKILLed, the others commit far past every log's start, and the
// follower, restarted once, catches up by receiving a checkpoint (its log
// says so, and it is not restarted again). Then every acknowledged write
// reads back, the history is linearizable, another follower that lost its checkpoint directory (its WAL compacted
// below it) fetches one from a peer at start and converges, and, with the
// cluster stopped, vestactl replay rebuilds every replica's state offline
// to the same slot with the same digest. vestactl checkpoint takes one on
// demand on each.
func TestProcessStateTransfer(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds vestad and runs a 3-process cluster for about 20 s; make test runs it")
	}
	start := time.Now()
	dir := t.TempDir()
	vestad, vestactl := buildBinaries(t, dir)
	cl := newProcCluster(t, dir, vestad, 3)
	metricsAddrs := freeAddrs(t, len(cl.procs))
	for i, p := range cl.procs {
		// Small WAL segments, so that compaction deletes some: a replica
		// whose checkpoints are lost then cannot rebuild from its log.
		p.args = append(p.args, "-checkpoint-bytes", "65536", "-wal-segment-bytes", "262144", "-metrics-addr", metricsAddrs[i])
	}
	cl.startAll()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	leader := cl.waitLeader(ctx, 20*time.Second)
	if leader < 0 {
		cl.fail("no leader elected within 20 s of starting")
	}
	load := newLoad(cl.clientAddrs, 6, 4)
	load.start(t)
	defer load.stop()
	time.Sleep(2 * time.Second)

	leader = cl.waitLeader(ctx, 10*time.Second)
	down := (leader + 1) % 3
	st, err := cl.status.Status(ctx, cl.clientAddrs[down])
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%6.2fs SIGKILL follower %d at applied %d (checkpoint %d)", time.Since(start).Seconds(), down+1, st.Applied, st.Checkpoint)
	cl.procs[down].kill()
	// The others go on until every one of them has a checkpoint, and so a
	// log start, well past what the follower holds.
	past := st.Applied
	for deadline := time.Now().Add(40 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		lowest := ^uint64(0)
		for i, a := range cl.clientAddrs {
			if i == down {
				continue
			}
			if s, err := cl.status.Status(ctx, a); err == nil {
				lowest = min(lowest, s.Checkpoint)
			} else {
				lowest = 0
			}
		}
		if lowest != ^uint64(0) && lowest > past+2000 {
			t.Logf("%6.2fs both live replicas checkpointed past slot %d", time.Since(start).Seconds(), lowest)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the live replicas did not checkpoint 2000 slots past %d within 40 s", past)
		}
	}
	t.Logf("%6.2fs restart follower %d", time.Since(start).Seconds(), down+1)
	cl.procs[down].start()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		b, _ := os.ReadFile(cl.procs[down].logPath)
		if bytes.Contains(b, []byte("checkpoint installed")) {
			t.Logf("%6.2fs follower %d installed a checkpoint sent by a peer", time.Since(start).Seconds(), down+1)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("follower %d did not install a checkpoint within 30 s of its restart", down+1)
		}
	}
	time.Sleep(time.Second)
	load.stop()
	if cl.waitLeader(ctx, 20*time.Second) < 0 {
		cl.fail("no leader after the load")
	}
	verified := load.verify(t, ctx)
	if verified == 0 {
		t.Fatal("no acknowledged write to verify: the load did nothing")
	}
	t.Logf("%6.2fs %d operations, %d acknowledged writes read back", time.Since(start).Seconds(), len(load.ops), verified)
	if res := porcupine.CheckOperationsTimeout(kvModel, load.history(), 30*time.Second); res != porcupine.Ok {
		t.Fatalf("the client history of %d operations is not linearizable (%v)", len(load.ops), res)
	}
	cl.checkConverged(ctx, t)

	// Another follower loses its checkpoint directory while its log was
	// compacted below it: restarted, it fetches a checkpoint from a peer
	// before it starts (its log says so), then converges.
	leader = cl.waitLeader(ctx, 10*time.Second)
	lost := (leader + 2) % 3
	if lost == down {
		lost = (leader + 1) % 3
	}
	cl.procs[lost].kill()
	if err := os.RemoveAll(filepath.Join(cl.procs[lost].dataDir, "checkpoints")); err != nil {
		t.Fatal(err)
	}
	t.Logf("%6.2fs follower %d lost its checkpoints; restart", time.Since(start).Seconds(), lost+1)
	cl.procs[lost].start()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		b, _ := os.ReadFile(cl.procs[lost].logPath)
		if bytes.Contains(b, []byte("checkpoint fetched")) {
			t.Logf("%6.2fs follower %d fetched a checkpoint from a peer at start", time.Since(start).Seconds(), lost+1)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("follower %d did not fetch a checkpoint within 30 s of its restart; its log ends:\n%s", lost+1, b[max(0, len(b)-3000):])
		}
	}
	cl.checkConverged(ctx, t)

	// A checkpoint on demand, on every replica (vestactl checkpoint).
	for i, a := range metricsAddrs {
		out, err := command(vestactl, "checkpoint", a).CombinedOutput()
		if err != nil || !bytes.Contains(out, []byte("checkpoint at slot ")) {
			t.Fatalf("vestactl checkpoint %s (replica %d): %v\n%s", a, i+1, err, out)
		}
		t.Logf("replica %d: %s", i+1, bytes.TrimSpace(out))
	}
	// Leadership handed over on demand (vestactl leader transfer).
	leader = cl.waitLeader(ctx, 10*time.Second)
	target := (leader+1)%3 + 1 // a replica ID, not the leader's
	out, err := command(vestactl, "leader", "transfer", metricsAddrs[leader], strconv.Itoa(target)).CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte(fmt.Sprintf("replica %d leads", target))) {
		t.Fatalf("vestactl leader transfer %s %d: %v\n%s", metricsAddrs[leader], target, err, out)
	}
	if now := cl.waitLeader(ctx, 10*time.Second); now != target-1 {
		t.Fatalf("after handing leadership to %d, replica %d leads", target, now+1)
	}
	t.Logf("%6.2fs leadership handed from replica %d to %d", time.Since(start).Seconds(), leader+1, target)
	if cl.procs[down].starts != 2 {
		t.Fatalf("follower %d was started %d times; it must catch up without another restart", down+1, cl.procs[down].starts)
	}
	cl.stopAll(t)
	if f := cl.failures(); len(f) > 0 {
		t.Fatalf("replica processes failed: %v", f)
	}

	// Offline, every replica's state at one slot has one digest.
	re := regexp.MustCompile(`slot (\d+): \d+ keys, \d+ sessions, digest ([0-9a-f]+)`)
	replayTo := func(i int, to string) (uint64, string) {
		args := []string{"replay"}
		if to != "" {
			args = append(args, "-to", to)
		}
		out, err := command(vestactl, append(args, cl.procs[i].dataDir)...).CombinedOutput()
		m := re.FindSubmatch(out)
		if err != nil || m == nil {
			t.Fatalf("vestactl replay of replica %d: %v\n%s", i+1, err, out)
		}
		slot, _ := strconv.ParseUint(string(m[1]), 10, 64)
		return slot, string(m[2])
	}
	lowest := ^uint64(0)
	for i := range cl.procs {
		s, _ := replayTo(i, "")
		lowest = min(lowest, s)
	}
	var digests []string
	for i := range cl.procs {
		s, d := replayTo(i, fmt.Sprint(lowest))
		t.Logf("replica %d at slot %d: digest %s", i+1, s, d)
		digests = append(digests, d)
	}
	if digests[0] != digests[1] || digests[1] != digests[2] {
		t.Fatalf("replicas' states differ at slot %d: %v", lowest, digests)
	}
	t.Logf("done in %v", time.Since(start).Round(time.Millisecond))
}
