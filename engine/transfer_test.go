package engine

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/vestalabs/vesta/engine/checkpoint"
	"github.com/vestalabs/vesta/engine/storage"
	"github.com/vestalabs/vesta/engine/storage/vfs"
	"github.com/vestalabs/vesta/engine/transport"
	"github.com/vestalabs/vesta/engine/wire"
	"github.com/vestalabs/vesta/pmem"
)

// checkpointCluster starts 3 replicas on file WALs with small segments and
// checkpoints every few KiB, in per-replica directories under root.
func checkpointCluster(t *testing.T, root string, pmemLogs bool) *testCluster {
	c := &testCluster{t: t, net: transport.NewNetwork(), replicas: map[wire.ReplicaID]*Replica{},
		sms: map[wire.ReplicaID]*counterSM{}, logs: map[wire.ReplicaID]func() storage.Log{}}
	c.members = []wire.ReplicaID{1, 2, 3}
	c.configure = func(id wire.ReplicaID, cfg *Config) {
		cfg.ClusterID = 1
		cfg.Checkpoints = CheckpointConfig{Dir: filepath.Join(root, fmt.Sprint(id), "checkpoints"), Bytes: 4 << 10, ChunkBytes: 1 << 10}
	}
	for _, id := range c.members {
		id := id
		ident := storage.Identity{ClusterID: 1, ReplicaID: id, Members: c.members}
		if pmemLogs {
			path := filepath.Join(root, fmt.Sprint(id), "log.pmem")
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			create := storage.CreateIfMissing
			c.logs[id] = func() storage.Log {
				l, err := pmem.Open(path, pmem.Options{Size: 1 << 20, Create: create, Identity: ident})
				if err != nil {
					t.Fatal(err)
				}
				return l
			}
			continue
		}
		dir := filepath.Join(root, fmt.Sprint(id), "wal")
		c.logs[id] = func() storage.Log {
			w, err := storage.OpenWAL(dir, storage.WALOptions{Create: storage.CreateIfMissing, SegmentSize: 16 << 10, Identity: ident})
			if err != nil {
				t.Fatal(err)
			}
			return w
		}
	}
	for _, id := range c.members {
		c.start(id)
	}
	t.Cleanup(func() {
		for _, r := range c.replicas {
			r.Stop()
		}
	})
	return c
}

// proposeN has the leader apply n commands of about 64 bytes, tagged tag.
func (c *testCluster) proposeN(tag string, n int) {
	c.t.Helper()
	l := c.leader()
	for i := range n {
		cmd := fmt.Sprintf("%s-%04d-%s", tag, i, "................................................")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := c.replicas[l].Propose(ctx, []byte(cmd))
		cancel()
		if err != nil {
			l = c.leader()
			if _, err := c.replicas[l].Propose(context.Background(), []byte(cmd)); err != nil {
				c.t.Fatal(err)
			}
		}
	}
}

// waitConverged waits until every replica's state machine holds what
// replica ref's holds (at least want commands), and returns it.
func (c *testCluster) waitConverged(ref wire.ReplicaID, want int) []string {
	c.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := c.sms[ref].snapshot()
		same := len(got) >= want
		for id := range c.replicas {
			if !slices.Equal(c.sms[id].snapshot(), got) {
				same = false
			}
		}
		if same {
			return got
		}
		if time.Now().After(deadline) {
			for id := range c.replicas {
				c.t.Logf("replica %d: %d commands, status %+v", id, len(c.sms[id].snapshot()), c.replicas[id].Status())
			}
			c.t.Fatalf("replicas did not converge on replica %d's %d commands", ref, len(got))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func dirBytes(t *testing.T, dir string) (n int64, files int) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if info, err := e.Info(); err == nil && !e.IsDir() {
			n += info.Size()
			files++
		}
	}
	return n, files
}

// Checkpoints are written, old ones pruned, and the WAL compacted: its
// directory stays bounded however much is written. A follower that was down
// while the others compacted past its log catches up by state transfer,
// without a restart, and its state machine then equals the leader's.
func TestCheckpointsCompactAndTransferToALaggingReplica(t *testing.T) {
	testCheckpointsAndTransfer(t, false)
}

func TestCheckpointsOnPmemLogs(t *testing.T) {
	testCheckpointsAndTransfer(t, true)
}

func testCheckpointsAndTransfer(t *testing.T, pmemLogs bool) {
	root := t.TempDir()
	c := checkpointCluster(t, root, pmemLogs)
	c.proposeN("a", 300)
	c.waitConverged(c.leader(), 300)
	for id, r := range c.replicas {
		st := r.Status()
		if st.Checkpoint == 0 {
			t.Fatalf("replica %d wrote no checkpoint after ~%d KiB: %+v", id, 300*64>>10, st)
		}
		if _, files := dirBytes(t, filepath.Join(root, fmt.Sprint(id), "checkpoints")); files > 2 {
			t.Errorf("replica %d keeps %d checkpoint files, want at most 2", id, files)
		}
	}
	// Replica 3 goes down (not the leader); the others go on far past its
	// log.
	down := wire.ReplicaID(3)
	if c.leader() == down {
		down = 2
	}
	before := c.replicas[down].Status()
	c.replicas[down].Stop()
	delete(c.replicas, down)
	c.proposeN("b", 600)
	l := c.leader()
	if st := c.replicas[l].Status(); st.Checkpoint <= before.Commit {
		t.Fatalf("leader's checkpoint %d does not pass the stopped replica's commit %d", st.Checkpoint, before.Commit)
	}
	if !pmemLogs {
		n, files := dirBytes(t, filepath.Join(root, fmt.Sprint(l), "wal"))
		// 900 commands of ~100 B encoded are ~90 KiB; compaction keeps two
		// checkpoints' worth (2 x 4 KiB of values) plus the segment being
		// written.
		if n > 6*16<<10 {
			t.Errorf("leader's WAL holds %d bytes in %d files after compaction", n, files)
		}
	}
	c.start(down)
	got := c.waitConverged(l, 900)
	if r := c.replicas[down]; r.m == nil || testCounter(t, r.m.transfersInstalled) < 1 {
		t.Fatalf("replica %d caught up without installing a checkpoint", down)
	}
	if st := c.replicas[down].Status(); st.Checkpoint <= before.Commit {
		t.Fatalf("replica %d's checkpoint %d after the transfer", down, st.Checkpoint)
	}
	// Every command acknowledged is there, in order, once.
	var want []string
	for _, cmd := range got {
		if cmd != "probe" {
			want = append(want, cmd)
		}
	}
	if len(want) < 900 || want[0] != fmt.Sprintf("a-0000-%s", "................................................") {
		t.Fatalf("state machine holds %d commands, first %q", len(want), want[0])
	}
	// And it keeps working: more commands reach every replica.
	c.proposeN("c", 50)
	c.waitConverged(c.leader(), len(got)+50)
}

// A replica restarts from its newest checkpoint and the log after it; a
// damaged newest checkpoint is skipped for the previous one, whose log
// suffix is still there.
func TestRestartFromCheckpointAndFallBack(t *testing.T) {
	root := t.TempDir()
	c := checkpointCluster(t, root, false)
	c.proposeN("a", 400)
	l := c.leader()
	want := c.waitConverged(l, 400)
	id := wire.ReplicaID(1)
	if id == l {
		id = 2
	}
	c.replicas[id].Stop()
	delete(c.replicas, id)
	// Damage the newest checkpoint's last block.
	dir := filepath.Join(root, fmt.Sprint(id), "checkpoints")
	infos, err := checkpoint.List(vfs.Default, dir)
	if err != nil || len(infos) < 2 {
		t.Fatalf("checkpoints in %s: %v %v", dir, infos, err)
	}
	f, err := os.OpenFile(infos[0].Path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{0xff, 0xee}, infos[0].FileSize-6); err != nil {
		t.Fatal(err)
	}
	f.Close()
	c.start(id)
	c.waitConverged(l, len(want))
	if got := c.sms[id].snapshot(); !slices.Equal(got[:len(want)], want) {
		t.Fatal("state after restart differs")
	}
}

func testCounter(t *testing.T, c interface{ Write(*dto.Metric) error }) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// A pmem log far smaller than what the checkpoint interval lets pass
// (Bytes = 32 MiB through a 16 MiB log) does not fill: checkpoints come
// early as it fills, and the leader slows down instead of the replicas
// failing for a full log.
func TestSmallPmemLogSlowsDownInsteadOfFilling(t *testing.T) {
	root := t.TempDir()
	c := &testCluster{t: t, net: transport.NewNetwork(), replicas: map[wire.ReplicaID]*Replica{},
		sms: map[wire.ReplicaID]*counterSM{}, logs: map[wire.ReplicaID]func() storage.Log{}}
	c.members = []wire.ReplicaID{1, 2, 3}
	c.configure = func(id wire.ReplicaID, cfg *Config) {
		cfg.ClusterID = 1
		cfg.Checkpoints = CheckpointConfig{Dir: filepath.Join(root, fmt.Sprint(id), "checkpoints"), Bytes: 32 << 20}
		// The engine's default tick (an election after 200-400 ms), not the
		// cluster helper's 2 ms: this test is about a log that fills, and
		// under -race on two cores a checkpoint can hold a core loop past a
		// 30 ms election timeout, which failed a command now and then
		// (ErrOutcomeUnknown from an election, not from the log).
		cfg.TickInterval = 10 * time.Millisecond
	}
	for _, id := range c.members {
		path := filepath.Join(root, fmt.Sprint(id), "log.pmem")
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		ident := storage.Identity{ClusterID: 1, ReplicaID: id, Members: c.members}
		c.logs[id] = func() storage.Log {
			l, err := pmem.Open(path, pmem.Options{Size: 16 << 20, Create: storage.CreateIfMissing, Identity: ident})
			if err != nil {
				t.Fatal(err)
			}
			return l
		}
		c.start(id)
	}
	t.Cleanup(func() {
		for _, r := range c.replicas {
			r.Stop()
		}
	})
	l := c.leader()
	// 40 MiB of commands, 64 in flight at a time.
	val := make([]byte, 1024)
	sem := make(chan struct{}, 64)
	errs := make(chan error, 1)
	for i := range 40 << 10 {
		sem <- struct{}{}
		cmd := append(fmt.Appendf(nil, "%06d", i), val...)
		c.replicas[l].ProposeAsync(cmd, func(_ []byte, err error) {
			<-sem
			if err != nil {
				select {
				case errs <- err:
				default:
				}
			}
		})
	}
	for range cap(sem) {
		sem <- struct{}{}
	}
	select {
	case err := <-errs:
		t.Fatalf("a command failed: %v", err)
	default:
	}
	written := 0.0
	for id, r := range c.replicas {
		if err := r.Err(); err != nil {
			t.Fatalf("replica %d failed: %v", id, err)
		}
		// A replica that fell behind while it refused to vote may have
		// caught up from a peer's checkpoint instead of writing its own.
		written += testCounter(t, r.m.checkpoints)
		if r.Status().Checkpoint == 0 {
			t.Errorf("replica %d holds no checkpoint after 40 MiB through a 16 MiB log", id)
		}
	}
	if written < 3 {
		t.Errorf("%v checkpoints written in all for 40 MiB through 16 MiB logs", written)
	}
	c.waitConverged(l, 40<<10)
}

// Checkpoint takes one on demand, of everything applied when it is called,
// and returns once it is durable; with nothing new it returns the newest.
func TestCheckpointOnDemand(t *testing.T) {
	root := t.TempDir()
	c := checkpointCluster(t, root, false)
	c.proposeN("a", 20) // less than Checkpoints.Bytes: no checkpoint yet
	id := c.leader()
	r := c.replicas[id]
	applied := wire.Slot(r.Status().Applied)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	slot, err := r.Checkpoint(ctx)
	if err != nil || slot < applied {
		t.Fatalf("Checkpoint: slot %d, %v; applied %d when called", slot, err, applied)
	}
	infos, err := checkpoint.List(vfs.Default, filepath.Join(root, fmt.Sprint(id), "checkpoints"))
	if err != nil || len(infos) == 0 || infos[0].Meta.Slot != slot {
		t.Fatalf("checkpoint files %v, %v; want slot %d first", infos, err, slot)
	}
	if again, err := r.Checkpoint(ctx); err != nil || again != slot {
		t.Fatalf("Checkpoint with nothing new: %d, %v; want %d", again, err, slot)
	}
}

// A replica whose checkpoint directory was lost, while its log had been
// compacted below those checkpoints, cannot rebuild its state from its own
// disk: Start fetches a checkpoint from a peer, restores it, and the replica
// goes on from it and its log. With fetching off, Start fails saying so.
func TestLostCheckpointsAreFetchedFromAPeer(t *testing.T) {
	root := t.TempDir()
	c := checkpointCluster(t, root, false)
	c.proposeN("a", 400)
	l := c.leader()
	c.waitConverged(l, 400)
	id := wire.ReplicaID(1)
	if id == l {
		id = 2
	}
	c.replicas[id].Stop()
	delete(c.replicas, id)
	c.proposeN("b", 100)
	if err := os.RemoveAll(filepath.Join(root, fmt.Sprint(id), "checkpoints")); err != nil {
		t.Fatal(err)
	}

	configure := c.configure
	c.configure = func(rid wire.ReplicaID, cfg *Config) {
		configure(rid, cfg)
		cfg.Checkpoints.FetchTimeout = -1
	}
	err := c.startErr(id)
	if err == nil || !strings.Contains(err.Error(), "no valid checkpoint") || !strings.Contains(err.Error(), "fetching one from a peer is off") {
		t.Fatalf("Start without checkpoints below a compacted log, fetching off: %v", err)
	}

	factoryCalls := 0
	c.configure = func(rid wire.ReplicaID, cfg *Config) {
		configure(rid, cfg)
		build := cfg.Transport
		cfg.Transport = func(h transport.Handler) (transport.Transport, error) {
			factoryCalls++
			return build(h)
		}
	}
	c.start(id)
	if n, _ := dirBytes(t, filepath.Join(root, fmt.Sprint(id), "checkpoints")); n == 0 {
		t.Fatal("no checkpoint fetched")
	}
	if factoryCalls != 1 {
		t.Fatalf("Start called Config.Transport %d times; it promises once (vestad registers metrics in it)", factoryCalls)
	}
	got := c.waitConverged(l, 500)
	c.proposeN("c", 50)
	c.waitConverged(c.leader(), len(got)+50)
}

// Asked for a checkpoint no peer can give, Start fails within FetchTimeout
// with an error that says what it waited for.
func TestFetchGivesUpWithAClearError(t *testing.T) {
	root := t.TempDir()
	c := checkpointCluster(t, root, false)
	c.proposeN("a", 400)
	l := c.leader()
	c.waitConverged(l, 400)
	id := wire.ReplicaID(1)
	if id == l {
		id = 2
	}
	for rid, r := range c.replicas {
		r.Stop()
		delete(c.replicas, rid)
	}
	if err := os.RemoveAll(filepath.Join(root, fmt.Sprint(id), "checkpoints")); err != nil {
		t.Fatal(err)
	}
	configure := c.configure
	c.configure = func(rid wire.ReplicaID, cfg *Config) {
		configure(rid, cfg)
		cfg.Checkpoints.FetchTimeout = 300 * time.Millisecond
	}
	err := c.startErr(id)
	if err == nil || !strings.Contains(err.Error(), "no peer sent a checkpoint") {
		t.Fatalf("Start with every peer down: %v", err)
	}
}

// Checkpoints.Interval takes a checkpoint on time, long before Bytes of
// commands were applied.
func TestCheckpointInterval(t *testing.T) {
	root := t.TempDir()
	c := checkpointCluster(t, root, false)
	for _, id := range c.members {
		c.replicas[id].Stop()
		delete(c.replicas, id)
	}
	configure := c.configure
	c.configure = func(id wire.ReplicaID, cfg *Config) {
		configure(id, cfg)
		cfg.Checkpoints.Bytes = 1 << 30
		cfg.Checkpoints.Interval = 50 * time.Millisecond
	}
	for _, id := range c.members {
		c.start(id)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c.proposeN("t", 1)
		l := c.leader()
		if c.replicas[l].Status().Checkpoint > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no checkpoint after 10 s with a 50 ms interval: %+v", c.replicas[l].Status())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
