// Command vesta-bench measures a Vesta cluster under load and reports every
// figure next to the conditions it was measured in.
//
// By default it starts 3 vestad replicas as separate processes on 127.0.0.1
// and drives them through the client library from this process; -inproc runs
// all replicas inside this process over the in-memory transport and submits
// straight to the leader.
//
//	go run ./tools/vesta-bench [-inproc] [-duration 20s] [-clients 4 -inflight 512 | -rate 100000]
//	    [-size 64] [-reads 0] [-keys 100000] [-zipf 0] [-log mem|wal|pmem] [-data DIR]
//	    [-json FILE] [-plot FILE.png]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"github.com/vestalabs/vesta/client"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vestalabs/vesta/bench"
	"github.com/vestalabs/vesta/engine"
	"github.com/vestalabs/vesta/internal/contract"
	"github.com/vestalabs/vesta/pmqos"
	"github.com/vestalabs/vesta/schedpolicy"
)

type options struct {
	// runCancel ends the run with a cause once it is on (a replica exited).
	runCancel      atomic.Pointer[context.CancelCauseFunc]
	wakeLatency    time.Duration
	wakeLatencySet bool // -cpu-wake-latency given on the command line
	sched          string
	schedSet       bool // -sched given on the command line
	replicaProcs   int
	clientProcs    int
	inproc         bool
	replicas       int
	clients        int
	inflight       int
	rate           float64
	size           int
	reads          float64
	readMode       client.ReadMode
	keys           int
	zipf           float64
	duration       time.Duration
	warmup         time.Duration
	log            string
	dataDir        string
	transport      string
	window         int
	maxBatch       int
	maxBatchBytes  int
	jsonPath       string
	plotPath       string
	vestad         string
	cpuProfile     string
	sm             string
	pmemDir        string
	pmemSize       int64
	ckptBytes      int64    // vestad -checkpoint-bytes; 0: vestad's default; negative: checkpoints off
	cleanup        []string // files to remove at the end
	durability     string   // what the replicas report of their log
	links          string   // replica 1's peer links, as its /status reports them
	profileDir     string
}

func main() {
	var o options
	flag.BoolVar(&o.inproc, "inproc", false, "run every replica in this process over the in-memory transport")
	flag.IntVar(&o.replicas, "replicas", 3, "replicas in the cluster")
	flag.IntVar(&o.clients, "clients", 4, "closed loop: clients")
	flag.IntVar(&o.inflight, "inflight", 512, "closed loop: operations each client keeps in flight (4 x 512 saturates a 2-core machine; 4 x 256 left ~18% of it idle)")
	flag.Float64Var(&o.rate, "rate", 0, "open loop: operations per second (latency from intended send time); 0 = closed loop")
	flag.IntVar(&o.size, "size", 64, "value size in bytes")
	flag.Float64Var(&o.reads, "reads", 0, "fraction of operations that are reads (0..1)")
	flag.Func("read-mode", "process mode: how reads stay consistent: index (the leader's read index: one quorum round, no log append; the default), lease (the leader's lease: no round, safe within the clock-drift bound), "+
		"log (each read through the log like a write) or bounded (at every replica in turn, once it has applied the slots the client has seen: session-monotonic, not linearizable)", func(s string) error {
		m, err := client.ParseReadMode(s)
		o.readMode = m
		return err
	})
	flag.IntVar(&o.keys, "keys", 100000, "distinct keys")
	flag.Float64Var(&o.zipf, "zipf", 0, "key skew: 0 uniform, else a Zipf exponent > 1")
	flag.DurationVar(&o.duration, "duration", 20*time.Second, "measured duration")
	flag.DurationVar(&o.warmup, "warmup", 3*time.Second, "warm-up before measuring")
	flag.StringVar(&o.log, "log", "pmem", "replica log: mem (no durability), wal (file WAL, real fdatasync) or pmem (persistent-memory log)")
	flag.StringVar(&o.dataDir, "data", "", "directory for the replicas' logs (default: a temporary directory, removed afterwards)")
	flag.StringVar(&o.transport, "transport", "tcp", "replica transport, vestad's -transport: tcp, rdma (needs an RDMA device; vestad is built with -tags rdma) or auto (RDMA per peer where both ends have a device); -inproc uses the in-memory transport")
	flag.IntVar(&o.window, "window", 256, "leader's pipeline window W, in slots")
	flag.IntVar(&o.maxBatch, "max-batch", 1024, "most commands per proposed batch")
	flag.IntVar(&o.maxBatchBytes, "max-batch-bytes", 1<<20, "most bytes per proposed batch")
	flag.StringVar(&o.jsonPath, "json", "", "write the result as JSON to this file")
	flag.StringVar(&o.plotPath, "plot", "", "draw throughput over time and the latency distribution into this PNG")
	flag.StringVar(&o.vestad, "vestad", "", "vestad binary (default: built from this module into a temporary directory)")
	flag.StringVar(&o.pmemDir, "pmem-dir", "/dev/shm", "-log pmem: the directory of the replicas' pmem log files (a DAX mount for real persistent memory)")
	flag.Int64Var(&o.pmemSize, "pmem-size", 0, "-log pmem: bytes per replica's log file (0: 1 GiB, or less where -pmem-dir has less room); checkpoints, every third of it, free its space")
	flag.Int64Var(&o.ckptBytes, "checkpoint-bytes", 0, "process mode: `BYTES` of commands each replica applies between two checkpoints (0: vestad's default, a third of a pmem log or 64 MiB with a WAL; -1: no checkpoints, so logs keep every record)")
	flag.StringVar(&o.sm, "sm", "kv", "-inproc state machine: kv (vestad's key-value store) or null (applies nothing: measures the engine alone)")
	flag.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of this process (the measured window) to this file")
	flag.StringVar(&o.profileDir, "profile", "", "process mode: write CPU profiles of every vestad over the measured window into this directory")
	flag.Var(pmqos.Flag{D: &o.wakeLatency}, "cpu-wake-latency", "for the run, hold a PM QoS limit on how long idle CPUs take to wake: a `DURATION` (0: they poll instead of halting; "+
		"needs root), or off to leave the machine's setting. Reported with the figures")
	flag.StringVar(&o.sched, "sched", "batch", "Linux scheduling `POLICY` of the bench process and every vestad: batch (no wake-up preemption: with more processes than cores, "+
		"a woken replica no longer preempts the leader mid-write; docs/PERFORMANCE.md step 21) or normal (the default policy). Reported with the figures")
	flag.IntVar(&o.replicaProcs, "replica-procs", 0, "process mode: GOMAXPROCS of each vestad (0: the machine's cores shared out among the replicas and the client, at least 1)")
	flag.IntVar(&o.clientProcs, "client-procs", 0, "process mode: GOMAXPROCS of this process, which runs the clients (0: the same share as -replica-procs)")
	flag.Parse()
	flag.Visit(func(f *flag.Flag) {
		o.wakeLatencySet = o.wakeLatencySet || f.Name == "cpu-wake-latency"
		o.schedSet = o.schedSet || f.Name == "sched"
	})
	if err := run(&o); err != nil {
		fmt.Fprintln(os.Stderr, "vesta-bench:", err)
		os.Exit(1)
	}
}

func (o *options) check() error {
	if _, err := schedpolicy.Parse(o.sched); err != nil {
		return fmt.Errorf("-sched: %w", err)
	}
	switch {
	case o.replicas < 1:
		return fmt.Errorf("-replicas %d: need at least 1", o.replicas)
	case o.log != "mem" && o.log != "wal" && o.log != "pmem":
		return fmt.Errorf("-log %q: want mem, wal or pmem", o.log)
	case o.sm != "kv" && o.sm != "null":
		return fmt.Errorf("-sm %q: want kv or null", o.sm)
	case o.sm != "kv" && !o.inproc:
		return fmt.Errorf("-sm %s needs -inproc (vestad always runs the key-value store)", o.sm)
	case o.checkTransport() != nil:
		return o.checkTransport()
	case o.replicaProcs < 0 || o.clientProcs < 0:
		return fmt.Errorf("-replica-procs %d, -client-procs %d: want 0 (automatic) or more", o.replicaProcs, o.clientProcs)
	case o.pmemSize < 0:
		return fmt.Errorf("-pmem-size %d: want 0 (the default size) or a size in bytes", o.pmemSize)
	case o.window < 1 || o.maxBatch < 1 || o.maxBatchBytes < 1:
		return fmt.Errorf("-window, -max-batch and -max-batch-bytes must be at least 1")
	case o.maxBatchBytes > engine.MaxCommandBytes:
		return fmt.Errorf("-max-batch-bytes %d: at most %d (engine.MaxCommandBytes)", o.maxBatchBytes, engine.MaxCommandBytes)
	}
	return nil
}

func run(o *options) error {
	if err := o.check(); err != nil {
		return err
	}
	defer func() {
		for _, p := range o.cleanup {
			os.RemoveAll(p)
		}
	}()
	w := bench.Workload{Clients: o.clients, Inflight: o.inflight, Rate: o.rate, Size: o.size, ReadRatio: o.reads,
		Keys: o.keys, Zipf: o.zipf, Duration: o.duration, Warmup: o.warmup, Seed: uint64(time.Now().UnixNano())}
	if err := w.Validate(); err != nil {
		return err
	}
	if o.dataDir == "" {
		dir, err := os.MkdirTemp("", "vesta-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		o.dataDir = dir
	} else if err := os.MkdirAll(o.dataDir, 0o755); err != nil {
		return fmt.Errorf("-data: %w", err)
	}
	cond := bench.MachineConditions()
	cond.Replicas, cond.Log, cond.Clients, cond.Inflight, cond.Rate = o.replicas, o.log, o.clients, o.inflight, o.rate
	cond.Size, cond.ReadRatio, cond.Keys, cond.Zipf = o.size, o.reads, o.keys, o.zipf
	if o.reads > 0 && !o.inproc {
		cond.ReadMode = o.readMode.String()
	}
	cond.Duration, cond.Warmup = o.duration.String(), o.warmup.String()
	cond.Window, cond.MaxBatchCommands, cond.MaxBatchBytes = o.window, o.maxBatch, o.maxBatchBytes
	cond.Contracts = contract.Enabled
	cond.CPUIdle = pmqos.IdlePolicy()
	if o.wakeLatency >= 0 {
		req, err := pmqos.Hold(o.wakeLatency)
		switch {
		case err != nil && o.wakeLatencySet:
			return fmt.Errorf("-cpu-wake-latency %v: %w (pass -cpu-wake-latency off to run without it)", o.wakeLatency, err)
		case err != nil:
			// The default: a machine that does not let us hold it (not
			// root) still gets a benchmark, and the report says so.
			fmt.Fprintf(os.Stderr, "vesta-bench: not holding a CPU wake-up latency limit: %v\n", err)
			cond.CPUIdle += "; no PM QoS limit held (could not: " + err.Error() + ")"
		default:
			defer req.Close()
			cond.CPUIdle += fmt.Sprintf("; PM QoS wake-up limit %v held by vesta-bench for the run", req.Limit())
			if req.Limit() == 0 {
				cond.CPUIdle += " (idle CPUs poll)"
			}
		}
	} else {
		cond.CPUIdle += "; no PM QoS limit held (-cpu-wake-latency off)"
	}
	cond.Sched = o.sched + " (bench process and every replica)"
	if err := schedpolicy.Set(schedpolicy.Policy(o.sched)); err != nil {
		if o.schedSet {
			return fmt.Errorf("-sched %s: %w (pass -sched normal to run without it)", o.sched, err)
		}
		fmt.Fprintf(os.Stderr, "vesta-bench: leaving the normal scheduling policy: %v\n", err)
		o.sched = string(schedpolicy.Normal)
		cond.Sched = "normal (could not set batch: " + err.Error() + ")"
	}
	if o.sched == string(schedpolicy.Batch) {
		cond.Sched += ": SCHED_BATCH, no wake-up preemption"
	}
	var notes []string
	if o.log == "mem" {
		notes = append(notes, "log mem: nothing is persisted (no durability)")
	}
	if o.log == "wal" {
		cond.Log = "wal (file WAL, real fdatasync, in " + o.dataDir + ")"
	}
	if o.log == "pmem" {
		how := fmt.Sprintf("%d MiB per replica (-pmem-size)", o.pmemSize>>20)
		if o.pmemSize == 0 {
			size, why, err := pmemAutoSize(o.pmemDir, o.replicas)
			if err != nil {
				return err
			}
			o.pmemSize, how = size, why
		}
		cond.Log = "pmem, " + how
	}
	if !o.inproc {
		switch {
		case o.ckptBytes < 0:
			notes = append(notes, "checkpoints off (-checkpoint-bytes -1): logs keep every record")
		case o.ckptBytes > 0:
			notes = append(notes, fmt.Sprintf("a checkpoint every %d MiB of commands per replica", o.ckptBytes>>20))
		case o.log == "pmem":
			notes = append(notes, fmt.Sprintf("a checkpoint every %d MiB of commands per replica (a third of the log)", o.pmemSize/3>>20))
		default:
			notes = append(notes, "a checkpoint every 64 MiB of commands per replica")
		}
	}
	if o.sm == "null" {
		notes = append(notes, "state machine null: commands are replicated but applied as no-ops")
	}
	cond.Notes = strings.Join(notes, "; ")

	var target bench.Target
	if o.inproc {
		cond.Mode, cond.Transport = "inproc (one process)", "in-memory"
		fmt.Fprintf(os.Stderr, "starting %d replicas in this process (log %s)...\n", o.replicas, o.log)
		c, err := startInproc(o)
		if err != nil {
			return err
		}
		defer c.stop()
		target = c
	} else {
		// Every process gets its share of the cores: on a machine with
		// fewer cores than processes, spare Ps only add thread wake-ups
		// (docs/PERFORMANCE.md, step 11).
		share := max(1, runtime.NumCPU()/(o.replicas+1))
		if o.replicaProcs == 0 {
			o.replicaProcs = share
		}
		if o.clientProcs == 0 {
			o.clientProcs = share
		}
		runtime.GOMAXPROCS(o.clientProcs)
		cond.GOMAXPROCS = o.clientProcs
		cond.Mode, cond.Transport = fmt.Sprintf("processes on 127.0.0.1 (GOMAXPROCS %d each), client in the bench process (GOMAXPROCS %d)", o.replicaProcs, o.clientProcs), o.transport
		c, err := startProcesses(o)
		if err != nil {
			return err
		}
		defer c.stop()
		target = c
		if o.profileDir != "" {
			if err := os.MkdirAll(o.profileDir, 0o755); err != nil {
				return fmt.Errorf("-profile: %w", err)
			}
			go func() {
				time.Sleep(o.warmup)
				c.profile(o.profileDir, o.duration)
			}()
		}
	}
	if o.links != "" {
		cond.Transport = o.links
	}
	if o.durability != "" {
		cond.Log += " — replica 1 reports: " + o.durability
	}
	// SIGTERM too: a run ended by kill, like one ended by Ctrl-C, still stops
	// its vestads and removes its logs (pmem logs on tmpfs are memory).
	sigCtx, cancelSig := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancelSig()
	// A replica that exits mid-run fails the run with that as its cause.
	ctx, cancel := context.WithCancelCause(sigCtx)
	defer cancel(nil)
	o.runCancel.Store(&cancel)
	fmt.Fprintf(os.Stderr, "running: %s warm-up, then %s measured\n", o.warmup, o.duration)
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	res, err := bench.Run(ctx, target, w, os.Stderr)
	if err != nil {
		return err
	}
	rep := bench.NewReport(res, cond)
	if err := rep.WriteTable(os.Stdout); err != nil {
		return err
	}
	var failed error
	if res.Failure != "" {
		failed = errors.New("the cluster stopped serving: " + res.Failure)
		if pc, ok := target.(*procCluster); ok {
			if detail := pc.lastErrors(); detail != "" {
				failed = fmt.Errorf("%w%s", failed, detail)
			}
		}
	}
	if o.jsonPath != "" {
		f, err := os.Create(o.jsonPath)
		if err != nil {
			return err
		}
		if err := rep.WriteJSON(f); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
	}
	if o.plotPath != "" {
		if err := bench.WritePlot(o.plotPath, rep, res.Latency); err != nil {
			return err
		}
	}
	return failed
}

// onReplicaExit fails the run, once it is on, with a replica's exit as the
// cause (before it, startProcesses fails on its own).
func (o *options) onReplicaExit(err error) {
	if p := o.runCancel.Load(); p != nil {
		(*p)(err)
	}
}
