// Command vesta-sim runs the deterministic cluster simulator over many seeds
// and reports every violation with the command that replays it.
//
//	go run ./tools/vesta-sim -seeds 2000 [-replicas 3|5] [-seed S] [-v]
//	go run -tags contracts ./tools/vesta-sim -seeds 300 -plant lead-before-own-promise
//
// With -seed S it runs seeds S, S+1, ... (one seed by default when -seed is
// given); -v prints the full event trace of each seed run, which is how a
// reported seed is replayed.
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/vestalabs/vesta/engine/paxos"
	"github.com/vestalabs/vesta/engine/sim"
)

func main() {
	seeds := flag.Int("seeds", 0, "how many seeds to run (default 100, or 1 with -seed)")
	first := flag.Uint64("seed", 0, "first seed to run")
	replicas := flag.Int("replicas", 3, "replicas per cluster: 3 or 5")
	clients := flag.Int("clients", 0, "simulated clients (0: the simulator's default)")
	healthy := flag.Bool("healthy", false, "no faults at all: a healthy network, no crashes")
	logKind := flag.String("log", "model", "replica logs: model (the simulator's disk model) or pmem (pmem logs on simulated persistent memory)")
	verbose := flag.Bool("v", false, "print each seed's event trace")
	workers := flag.Int("j", runtime.GOMAXPROCS(0), "seeds run in parallel")
	plant := flag.String("plant", "", "plant the protocol `BUG` (see paxos.AllBugs) in every replica, to see the checkers catch it (contracts builds only)")
	flag.Parse()

	seedGiven := false
	flag.Visit(func(f *flag.Flag) { seedGiven = seedGiven || f.Name == "seed" })
	if *seeds == 0 {
		*seeds = 100
		if seedGiven {
			*seeds = 1
		}
	}
	if *replicas != 3 && *replicas != 5 {
		fmt.Fprintf(os.Stderr, "vesta-sim: -replicas %d: must be 3 or 5\n", *replicas)
		os.Exit(2)
	}
	if *logKind != "model" && *logKind != "pmem" {
		fmt.Fprintf(os.Stderr, "vesta-sim: -log %q: must be model or pmem\n", *logKind)
		os.Exit(2)
	}
	if *seeds < 0 || *clients < 0 || *workers < 1 {
		fmt.Fprintln(os.Stderr, "vesta-sim: -seeds, -clients must be >= 0 and -j >= 1")
		os.Exit(2)
	}
	if *verbose {
		*workers = 1
	}
	var hook func(*paxos.Node)
	if *plant != "" {
		var err error
		if hook, err = plantHook(*plant); err != nil {
			fmt.Fprintln(os.Stderr, "vesta-sim:", err)
			os.Exit(2)
		}
	}
	opts := func(seed uint64) sim.Options {
		o := sim.Options{Seed: seed, Replicas: *replicas, Clients: *clients, NoFaults: *healthy, PmemLog: *logKind == "pmem", NodeHook: hook}
		if *verbose {
			o.Trace = os.Stdout
		}
		return o
	}
	replay := func(seed uint64) string {
		s := "go run ./tools/vesta-sim"
		if *plant != "" {
			s = "go run -tags contracts ./tools/vesta-sim -plant " + *plant
		}
		s += fmt.Sprintf(" -seed %d -replicas %d", seed, *replicas)
		if *clients != 0 {
			s += fmt.Sprintf(" -clients %d", *clients)
		}
		if *healthy {
			s += " -healthy"
		}
		if *logKind != "model" {
			s += " -log " + *logKind
		}
		return s + " -v"
	}

	start := time.Now()
	results := make([]sim.Result, *seeds)
	var next, done int
	var mu sync.Mutex
	var wg sync.WaitGroup
	lastReport := time.Now()
	for range *workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				if i >= *seeds {
					return
				}
				r := sim.Run(opts(*first + uint64(i)))
				mu.Lock()
				results[i] = r
				done++
				if *verbose || *seeds <= 20 {
					fmt.Printf("seed %d [%s]: %d commands in %d slots, %d ops ok, %d unknown, %d elections, %d crashes, %d checkpoints, %d transfers, %d violations\n",
						r.Seed, r.Profile, r.Commands, r.Slots, r.OpsOK, r.OpsUnknown, r.Elections, r.Crashes, r.Checkpoints, r.Transfers, len(r.Violations))
				} else if time.Since(lastReport) > 5*time.Second {
					lastReport = time.Now()
					fmt.Fprintf(os.Stderr, "... %d/%d seeds in %s\n", done, *seeds, time.Since(start).Round(time.Second))
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()

	var bad []sim.Result
	var cmds []int
	violations, transferred, readIndexReads, leaseReads, handovers := 0, 0, 0, 0, 0
	changes, chosen, removed, changedSeeds := 0, 0, 0, 0
	for _, r := range results {
		cmds = append(cmds, r.Commands)
		readIndexReads += r.ReadIndexReads
		leaseReads += r.LeaseReads
		handovers += r.Handovers
		changes, chosen, removed = changes+r.MembershipChanges, chosen+r.MembershipsChosen, removed+r.Removed
		if r.MembershipsChosen > 0 {
			changedSeeds++
		}
		if r.Transfers > 0 {
			transferred++
		}
		if len(r.Violations) > 0 {
			bad = append(bad, r)
			violations += len(r.Violations)
		}
	}
	sort.Ints(cmds)
	fmt.Printf("commands committed per seed: min %d, median %d, max %d (%d replicas, %s)\n",
		cmds[0], cmds[len(cmds)/2], cmds[len(cmds)-1], *replicas, time.Since(start).Round(time.Millisecond))
	fmt.Printf("seeds with a state transfer (a checkpoint sent to a replica behind its peers' logs): %d of %d\n", transferred, *seeds)
	fmt.Printf("gets served without the log, checked for linearizability like every operation: %d by read index, %d asked under the leader's lease\n", readIndexReads, leaseReads)
	fmt.Printf("leadership handovers started by leaders: %d\n", handovers)
	fmt.Printf("membership changes: %d proposed by leaders, %d chosen, in %d of %d seeds; %d replicas learned they were removed and stopped\n",
		changes, chosen, changedSeeds, *seeds, removed)
	for _, r := range bad {
		for _, v := range r.Violations {
			fmt.Printf("VIOLATION seed %d [%s] %s: %s\n", r.Seed, r.Profile, v.Check, strings.TrimSpace(v.Detail))
		}
		fmt.Printf("  replay: %s\n", replay(r.Seed))
	}
	fmt.Printf("%d seeds, %d violations\n", *seeds, violations)
	if violations > 0 {
		os.Exit(1)
	}
}
