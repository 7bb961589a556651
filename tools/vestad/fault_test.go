//go:build linux

package main

import (
	"bytes"
	"context"

	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/vestalabs/vesta/client"
)

// TestProcessFaults runs three vestad processes on 127.0.0.1, each with its
// write-ahead log in a temporary directory (real fdatasync), drives them
// with concurrent clients, and meanwhile SIGKILLs and restarts the leader,
// then a follower, SIGSTOPs and SIGCONTs the leader, and SIGKILLs all three
// at random moments and restarts them. Then it checks that every
// acknowledged write reads back, that the whole client history is
// linearizable (porcupine; an operation whose outcome the client never
// learned stays open-ended), that the replicas converge, that each stops
// cleanly on SIGTERM and that each log is one vestad would open.
func TestProcessFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("builds vestad and runs a 3-process cluster for about 30 s")
	}
	start := time.Now()
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 0))
	t.Logf("fault schedule seed %d", seed)
	dir := t.TempDir()
	vestad, vestactl := buildBinaries(t, dir)
	t.Logf("built vestad and vestactl in %v", time.Since(start).Round(time.Millisecond))

	cl := newProcCluster(t, dir, vestad, 3)
	cl.startAll()
	ctx, cancel := context.WithTimeout(context.Background(), 80*time.Second)
	defer cancel()
	if cl.waitLeader(ctx, 20*time.Second) < 0 {
		cl.fail("no leader elected within 20 s of starting")
	}

	load := newLoad(cl.clientAddrs, 6, 2)
	load.start(t)
	defer load.stop()

	step := func(what string, d time.Duration) {
		t.Logf("%6.2fs %s", time.Since(start).Seconds(), what)
		time.Sleep(d)
	}
	jitter := func(d time.Duration) time.Duration { return d/2 + time.Duration(rng.Int64N(int64(d))) }

	step("load running", 2*time.Second)

	leader := cl.waitLeader(ctx, 10*time.Second)
	step(fmt.Sprintf("SIGKILL the leader, replica %d", leader+1), 0)
	cl.procs[leader].kill()
	step("", jitter(time.Second))
	step(fmt.Sprintf("restart replica %d", leader+1), 0)
	cl.procs[leader].start()
	step("", 3*time.Second)

	leader = cl.waitLeader(ctx, 10*time.Second)
	follower := (leader + 1 + rng.IntN(2)) % 3
	step(fmt.Sprintf("SIGKILL a follower, replica %d", follower+1), 0)
	cl.procs[follower].kill()
	step("", jitter(time.Second))
	step(fmt.Sprintf("restart replica %d", follower+1), 0)
	cl.procs[follower].start()
	step("", 3*time.Second)

	leader = cl.waitLeader(ctx, 10*time.Second)
	step(fmt.Sprintf("SIGSTOP the leader, replica %d", leader+1), 0)
	cl.procs[leader].signal(syscall.SIGSTOP)
	step("", jitter(2*time.Second))
	step(fmt.Sprintf("SIGCONT replica %d", leader+1), 0)
	cl.procs[leader].signal(syscall.SIGCONT)
	step("", 3*time.Second)

	for round := 1; round <= 2; round++ {
		step(fmt.Sprintf("SIGKILL all three at random moments (round %d)", round), 0)
		for _, i := range rng.Perm(3) {
			cl.procs[i].kill()
			step(fmt.Sprintf("  killed replica %d", i+1), time.Duration(rng.Int64N(int64(400*time.Millisecond))))
		}
		for _, i := range rng.Perm(3) {
			cl.procs[i].start()
			step(fmt.Sprintf("  restarted replica %d", i+1), time.Duration(rng.Int64N(int64(400*time.Millisecond))))
		}
		step("", 3*time.Second)
	}

	step("stop the load", 0)
	load.stop()
	if cl.waitLeader(ctx, 20*time.Second) < 0 {
		cl.fail("no leader within 20 s after the faults ended")
	}

	// Every acknowledged write of a write-once key reads back.
	verified := load.verify(t, ctx)
	t.Logf("%6.2fs %d operations in the history, the final reads included (%d answered, %d with unknown outcome); %d acknowledged writes verified by reading back",
		time.Since(start).Seconds(), len(load.ops), load.acked, load.unknown, verified)
	if verified == 0 {
		t.Fatal("no acknowledged write to verify: the load did nothing")
	}

	// The whole history, the final reads included, is linearizable.
	history := load.history()
	res, info := porcupine.CheckOperationsVerbose(kvModel, history, 30*time.Second)
	switch res {
	case porcupine.Illegal:
		path := filepath.Join(os.TempDir(), fmt.Sprintf("vesta-fault-%d.html", seed))
		if err := porcupine.VisualizePath(kvModel, info, path); err == nil {
			t.Logf("history visualization: %s", path)
		}
		t.Fatalf("the client history of %d operations is not linearizable", len(history))
	case porcupine.Unknown:
		t.Fatalf("the linearizability check of %d operations timed out", len(history))
	}
	t.Logf("%6.2fs history of %d operations is linearizable", time.Since(start).Seconds(), len(history))

	cl.checkConverged(ctx, t)
	cl.checkCLI(t, vestactl, load.sample())
	t.Logf("%6.2fs SIGTERM all", time.Since(start).Seconds())
	cl.stopAll(t) // each must exit 0
	t.Logf("%6.2fs all stopped; vestactl log dump of each", time.Since(start).Seconds())
	for i := range cl.procs {
		out, err := command(vestactl, "log", "dump", cl.procs[i].dataDir).CombinedOutput()
		if err != nil || !bytes.Contains(out, []byte("OpenWAL accepts this log")) {
			t.Errorf("vestactl log dump of replica %d: %v\n%s", i+1, err, tail(out, 20))
		}
	}
	if f := cl.failures(); len(f) > 0 {
		t.Fatalf("replica processes failed:\n%s", strings.Join(f, "\n"))
	}
	t.Logf("done in %v", time.Since(start).Round(time.Millisecond))
}

// buildBinaries builds vestad and vestactl into dir, with contracts on, and
// with the race detector when this test has it (reusing its build cache).
func buildBinaries(t *testing.T, dir string) (vestad, vestactl string) {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(os.Getenv("GOROOT"), "bin", "go")
	}
	args := []string{"build", "-tags", "contracts", "-o", dir}
	if raceEnabled() {
		args = append(args, "-race")
	}
	args = append(args, ".", "../vestactl")
	cmd := exec.Command(goBin, args...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %v: %v\n%s", args, err, out)
	}
	return filepath.Join(dir, "vestad"), filepath.Join(dir, "vestactl")
}

func raceEnabled() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" && s.Value == "true" {
			return true
		}
	}
	return false
}

// procCluster is n vestad processes.
type procCluster struct {
	t           *testing.T
	procs       []*vproc
	clientAddrs []string
	status      *client.Client

	mu       sync.Mutex
	problems []string
}

// vproc is one replica's process, restartable.
type vproc struct {
	cl      *procCluster
	id      int
	bin     string
	args    []string
	dataDir string
	logPath string
	join    bool // the first start takes -join, not -bootstrap

	mu       sync.Mutex
	cmd      *exec.Cmd
	exited   chan struct{}
	expected bool // the coming exit is one the test caused
	starts   int
}

func newProcCluster(t *testing.T, dir, bin string, n int) *procCluster {
	addrs := freeAddrs(t, 2*n)
	peers, clients := addrs[:n], addrs[n:]
	cl := &procCluster{t: t, clientAddrs: clients}
	for i := 0; i < n; i++ {
		p := &vproc{cl: cl, id: i + 1, bin: bin,
			dataDir: filepath.Join(dir, fmt.Sprintf("data%d", i+1)),
			logPath: filepath.Join(dir, fmt.Sprintf("vestad%d.log", i+1))}
		p.args = []string{"-id", fmt.Sprint(i + 1), "-peers", addrMap(peers), "-clients", addrMap(clients),
			"-data", p.dataDir, "-cluster-id", "42", "-tick", "10ms", "-election-ticks", "15", "-log-level", "info"}
		if i == n-1 {
			// The last replica runs as vesta-bench runs every replica, so
			// that scheduling policy is under the faults too.
			p.args = append(p.args, "-sched", "batch")
		}
		cl.procs = append(cl.procs, p)
	}
	cl.watch(clients)
	return cl
}

// watch opens the cluster's status client on clients and, at the test's
// end, kills every replica (resuming a stopped one first) and, if the test
// failed, logs the tail of each replica's log.
func (cl *procCluster) watch(clients []string) {
	t := cl.t
	var err error
	if cl.status, err = client.New(clients, client.Options{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cl.status.Close()
		for _, p := range cl.procs {
			p.signal(syscall.SIGCONT)
			p.kill()
		}
		if t.Failed() {
			for _, p := range cl.procs {
				if b, err := os.ReadFile(p.logPath); err == nil {
					t.Logf("last lines of replica %d's log:\n%s", p.id, tail(b, 40))
				}
			}
		}
	})
}

func (cl *procCluster) fail(format string, args ...any) {
	cl.t.Helper()
	cl.t.Fatalf(format, args...)
}

func (cl *procCluster) startAll() {
	for _, p := range cl.procs {
		p.start()
	}
}

func (cl *procCluster) problem(s string) {
	cl.mu.Lock()
	cl.problems = append(cl.problems, s)
	cl.mu.Unlock()
}

func (cl *procCluster) failures() []string {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return slices.Clone(cl.problems)
}

func (p *vproc) start() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		return
	}
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		p.cl.t.Fatal(err)
	}
	p.starts++
	fmt.Fprintf(logf, "=== start %d ===\n", p.starts)
	args := p.args
	if p.starts == 1 {
		// The first start creates the replica's log; restarts find it.
		first := "-bootstrap"
		if p.join {
			first = "-join"
		}
		args = append([]string{first}, args...)
	}
	cmd := command(p.bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		p.cl.t.Fatalf("starting replica %d: %v", p.id, err)
	}
	exited := make(chan struct{})
	p.cmd, p.exited, p.expected = cmd, exited, false
	go func() {
		err := cmd.Wait()
		logf.Close()
		p.mu.Lock()
		expected := p.expected
		if p.cmd == cmd {
			p.cmd = nil
		}
		p.mu.Unlock()
		if !expected {
			p.cl.problem(fmt.Sprintf("replica %d exited by itself: %v (see %s)", p.id, err, p.logPath))
		}
		close(exited)
	}()
}

// kill SIGKILLs the process and waits for it to be gone.
func (p *vproc) kill() {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	if cmd != nil {
		p.expected = true
		_ = cmd.Process.Kill()
	}
	p.mu.Unlock()
	if cmd != nil {
		<-exited
	}
}

func (p *vproc) signal(sig syscall.Signal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		_ = p.cmd.Process.Signal(sig)
	}
}

// stopAll sends SIGTERM to every replica and requires a clean exit.
func (cl *procCluster) stopAll(t *testing.T) {
	for _, p := range cl.procs {
		p.mu.Lock()
		cmd, exited := p.cmd, p.exited
		if cmd != nil {
			p.expected = true
			_ = cmd.Process.Signal(syscall.SIGTERM)
		}
		p.mu.Unlock()
		if cmd == nil {
			continue
		}
		select {
		case <-exited:
			if code := cmd.ProcessState.ExitCode(); code != 0 {
				t.Errorf("replica %d exited with status %d on SIGTERM", p.id, code)
			}
		case <-time.After(15 * time.Second):
			t.Errorf("replica %d did not exit within 15 s of SIGTERM", p.id)
			p.kill()
		}
	}
}

// waitLeader returns the index of a replica that says it leads, polling
// for up to d; -1 if none does.
func (cl *procCluster) waitLeader(ctx context.Context, d time.Duration) int {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		for i, a := range cl.clientAddrs {
			sctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
			st, err := cl.status.Status(sctx, a)
			cancel()
			if err == nil && st.Role == "leader" {
				return i
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return -1
}

// checkConverged waits until every replica has applied the same prefix.
func (cl *procCluster) checkConverged(ctx context.Context, t *testing.T) {
	var last []uint64
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		last = last[:0]
		for _, a := range cl.clientAddrs {
			sctx, cancel := context.WithTimeout(ctx, time.Second)
			st, err := cl.status.Status(sctx, a)
			cancel()
			if err != nil {
				last = append(last, 0)
				continue
			}
			last = append(last, st.Applied)
		}
		if last[0] > 0 && slices.Min(last) == slices.Max(last) {
			t.Logf("replicas converged: applied index %d on all", last[0])
			return
		}
	}
	t.Errorf("replicas did not converge within 15 s: applied indexes %v", last)
}

// checkCLI runs vestactl against the cluster.
func (cl *procCluster) checkCLI(t *testing.T, vestactl string, kv [2]string) {
	servers := "-servers=" + strings.Join(cl.clientAddrs, ",")
	out, err := command(vestactl, servers, "status").CombinedOutput()
	if err != nil || bytes.Count(out, []byte(" leader ")) != 1 {
		t.Errorf("vestactl status: %v\n%s", err, out)
	}
	out, err = command(vestactl, servers, "get", kv[0]).CombinedOutput()
	if err != nil || string(bytes.TrimSpace(out)) != kv[1] {
		t.Errorf("vestactl get %s: %v %q, want %q", kv[0], err, out, kv[1])
	}
	out, err = command(vestactl, servers, "put", "cli-key", "cli-value").CombinedOutput()
	if err != nil {
		t.Errorf("vestactl put: %v\n%s", err, out)
	}
	out, err = command(vestactl, servers, "get", "cli-key").CombinedOutput()
	if err != nil || string(bytes.TrimSpace(out)) != "cli-value" {
		t.Errorf("vestactl get cli-key: %v %q", err, out)
	}
}

// command is exec.Command for the binaries built here: when they have the
// race detector, it must not sleep a second at every exit.
func command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0 "+os.Getenv("GORACE"))
	return cmd
}

func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// The load: each worker goroutine (of `perClient` on each of `clients`
// Clients) loops over operations: half the time a put of a fresh write-once
// key (whose acknowledged value must read back at the end), otherwise a get,
// put, cas or delete on a few shared keys. Every operation goes in the
// history.

const sharedKeys = 12

type load struct {
	addrs     []string
	clients   []*client.Client
	perClient int
	t0        time.Time
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	stopOnce  sync.Once

	mu       sync.Mutex
	ops      []porcupine.Operation
	onceAcks [][2]string // acknowledged write-once puts: key, value
	acked    int
	unknown  int
	writes   int // acknowledged writes (put, cas, delete): committed commands
}

// Operation kinds of the model.
const (
	mGet = iota
	mPut
	mCAS
	mDelete
)

type kvIn struct {
	Op     int
	Key    string
	Value  string
	Expect string
}

type kvOut struct {
	Value   string
	Found   bool // get: found; delete: existed; cas: swapped
	Unknown bool
}

type kvState struct {
	V  string
	Ok bool
}

var kvModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		for _, op := range history {
			k := op.Input.(kvIn).Key
			byKey[k] = append(byKey[k], op)
		}
		out := make([][]porcupine.Operation, 0, len(byKey))
		for _, ops := range byKey {
			out = append(out, ops)
		}
		return out
	},
	Init: func() any { return kvState{} },
	Step: func(state, input, output any) (bool, any) {
		st, in, out := state.(kvState), input.(kvIn), output.(kvOut)
		switch in.Op {
		case mGet:
			return out.Found == st.Ok && out.Value == st.V, st
		case mPut:
			return true, kvState{in.Value, true}
		case mDelete:
			return out.Unknown || out.Found == st.Ok, kvState{}
		default: // cas: a missing key's value is empty
			swapped := st.V == in.Expect
			if !out.Unknown && out.Found != swapped {
				return false, st
			}
			if swapped {
				return true, kvState{in.Value, true}
			}
			return true, st
		}
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(kvIn), output.(kvOut)
		res := fmt.Sprintf("%q found=%v", out.Value, out.Found)
		if out.Unknown {
			res = "?"
		}
		switch in.Op {
		case mGet:
			return fmt.Sprintf("get(%s) -> %s", in.Key, res)
		case mPut:
			return fmt.Sprintf("put(%s,%s) -> %s", in.Key, in.Value, res)
		case mDelete:
			return fmt.Sprintf("delete(%s) -> %s", in.Key, res)
		}
		return fmt.Sprintf("cas(%s,%s->%s) -> %s", in.Key, in.Expect, in.Value, res)
	},
}

func newLoad(addrs []string, clients, perClient int) *load {
	return &load{addrs: addrs, perClient: perClient, t0: time.Now(), clients: make([]*client.Client, clients)}
}

func (l *load) now() int64 { return int64(time.Since(l.t0)) }

// record adds an operation; ret < 0 means its outcome is unknown.
func (l *load) record(worker int, in kvIn, out kvOut, call, ret int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if out.Unknown {
		l.unknown++
	} else {
		l.acked++
		if in.Op != mGet {
			l.writes++
		}
	}
	l.ops = append(l.ops, porcupine.Operation{ClientId: worker, Input: in, Output: out, Call: call, Return: ret})
}

func (l *load) start(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	l.cancel = cancel
	for ci := range l.clients {
		c, err := client.New(l.addrs, client.Options{AttemptTimeout: time.Second, BackoffMax: 100 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		l.clients[ci] = c
		for g := 0; g < l.perClient; g++ {
			worker := ci*l.perClient + g
			l.wg.Add(1)
			go l.work(ctx, c, worker)
		}
	}
}

func (l *load) stop() {
	l.stopOnce.Do(func() {
		l.cancel()
		l.wg.Wait()
		for _, c := range l.clients {
			if c != nil {
				c.Close()
			}
		}
	})
}

func (l *load) work(ctx context.Context, c *client.Client, worker int) {
	defer l.wg.Done()
	rng := rand.New(rand.NewPCG(uint64(worker), uint64(time.Now().UnixNano())))
	seen := map[string]string{} // the last value this worker read per shared key
	for n := 0; ctx.Err() == nil; n++ {
		value := fmt.Sprintf("w%d.%d", worker, n)
		var in kvIn
		if rng.IntN(2) == 0 {
			in = kvIn{Op: mPut, Key: fmt.Sprintf("once/%d/%d", worker, n), Value: value}
		} else {
			key := fmt.Sprintf("shared/%d", rng.IntN(sharedKeys))
			switch p := rng.IntN(10); {
			case p < 4:
				in = kvIn{Op: mGet, Key: key}
			case p < 7:
				in = kvIn{Op: mPut, Key: key, Value: value}
			case p < 9:
				in = kvIn{Op: mCAS, Key: key, Expect: seen[key], Value: value}
			default:
				in = kvIn{Op: mDelete, Key: key}
			}
		}
		// The load's context is not the operation's: stopping the load must
		// not leave operations unknown that would have completed.
		octx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
		call := l.now()
		out, err := l.do(octx, c, in)
		cancel()
		ret := l.now()
		switch {
		case err == nil:
			if in.Op == mGet {
				seen[in.Key] = out.Value
			}
			l.record(worker, in, out, call, ret)
			if in.Op == mPut && strings.HasPrefix(in.Key, "once/") {
				l.mu.Lock()
				l.onceAcks = append(l.onceAcks, [2]string{in.Key, in.Value})
				l.mu.Unlock()
			}
		case in.Op == mGet:
			// A failed read observed nothing; it constrains nothing.
		default:
			// Open-ended: the write may apply at any time from its call on.
			l.record(worker, in, kvOut{Unknown: true}, call, -1)
		}
	}
}

func (l *load) do(ctx context.Context, c *client.Client, in kvIn) (kvOut, error) {
	key := []byte(in.Key)
	switch in.Op {
	case mGet:
		v, found, err := c.Get(ctx, key)
		return kvOut{Value: string(v), Found: found}, err
	case mPut:
		return kvOut{}, c.Put(ctx, key, []byte(in.Value))
	case mCAS:
		swapped, err := c.CAS(ctx, key, []byte(in.Expect), []byte(in.Value))
		return kvOut{Found: swapped}, err
	default:
		existed, err := c.Delete(ctx, key)
		return kvOut{Found: existed}, err
	}
}

// verify reads back every acknowledged write-once key and every shared key
// (adding the reads to the history) and returns how many acknowledged
// writes it found intact.
func (l *load) verify(t *testing.T, ctx context.Context) int {
	c, err := client.New(l.addrs, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	l.mu.Lock()
	acks := slices.Clone(l.onceAcks)
	l.mu.Unlock()
	keys := make([]string, 0, len(acks)+sharedKeys)
	for _, a := range acks {
		keys = append(keys, a[0])
	}
	for i := 0; i < sharedKeys; i++ {
		keys = append(keys, fmt.Sprintf("shared/%d", i))
	}
	want := map[string]string{}
	for _, a := range acks {
		want[a[0]] = a[1]
	}
	var mu sync.Mutex
	verified := 0
	var wg sync.WaitGroup
	const readers = 16
	for r := 0; r < readers; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := r; i < len(keys); i += readers {
				k := keys[i]
				call := l.now()
				v, found, err := c.Get(ctx, []byte(k))
				ret := l.now()
				if err != nil {
					t.Errorf("reading back %s: %v", k, err)
					return
				}
				l.record(1000+r, kvIn{Op: mGet, Key: k}, kvOut{Value: string(v), Found: found}, call, ret)
				if w, ok := want[k]; ok {
					if !found || string(v) != w {
						t.Errorf("acknowledged write lost: %s = %q (found %v), want %q", k, v, found, w)
						continue
					}
					mu.Lock()
					verified++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return verified
}

// history returns every recorded operation, the open-ended ones returning
// after everything else.
func (l *load) history() []porcupine.Operation {
	l.mu.Lock()
	defer l.mu.Unlock()
	end := l.now() + 1
	out := slices.Clone(l.ops)
	for i := range out {
		if out[i].Return < 0 {
			out[i].Return = end
		}
	}
	return out
}

// sample returns one acknowledged write-once key and its value.
func (l *load) sample() [2]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.onceAcks) == 0 {
		return [2]string{"none", ""}
	}
	return l.onceAcks[len(l.onceAcks)/2]
}
