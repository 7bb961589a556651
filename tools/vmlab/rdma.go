package main

import (
	"fmt"
	"strings"
)

// test-rdma runs the RDMA test binaries on soft-RoCE: the guest loads
// rdma_rxe (with crc32_generic, without which `rdma link add` fails with
// ENOENT), makes a dummy netdev with an IPv4 address and an rxe device on
// it (no NIC: nothing leaves the guest), and runs each suite's static cgo
// test binary with VESTA_RDMA_REQUIRE=1 (a missing device fails the tests
// instead of skipping them) and GODEBUG=cgocheck=1.

// The guest's soft-RoCE device.
const (
	rdmaNetdev = "rxnet0"
	rdmaAddr   = "192.0.2.1/24" // TEST-NET-1: never routed anywhere
	rdmaDevice = "rxe0"
)

// rdmaSuite is one package's tests that test-rdma runs in the guest. Later
// suites (the rdma transport's tests, a vestad cluster over RDMA) are added
// to rdmaSuites; a suite that starts processes lists them in Programs
// (built like it, found under /vmlab/).
type rdmaSuite struct {
	Name string // the binaries are /vmlab/<Name>[-variant].test
	Pkg  string // its package, relative to the module root
	Env  []string
	// NoRace builds the suite without -race (by default it is built with
	// it, and without when the race runtime does not link statically).
	NoRace bool
	// CgoCheck2 runs the suite a second time, built with
	// GOEXPERIMENT=cgocheck2: every store of a pointer into memory is
	// checked, which finds Go pointers left in C memory (cgocheck=1 checks
	// only the arguments of cgo calls).
	CgoCheck2 bool
	// Programs are helper binaries the suite runs (built with the same
	// tags, statically), e.g. vestad for a cluster test.
	Programs []goProgram
	// Run is the suite's -test.run (the lab's -run, when given, wins).
	Run string
}

// rdmaSuites are run in this order; the first failure ends the run.
var rdmaSuites = []rdmaSuite{
	{Name: "verbs", Pkg: "./cgo/verbs", CgoCheck2: true},
	{Name: "rdma", Pkg: "./rdma", CgoCheck2: true},
	// Three vestad processes over RDMA under load, the leader SIGKILLed
	// and restarted, the history checked (tools/vestad/rdmacluster_test.go);
	// then three with -transport auto where one has no device, whose links
	// must split into RDMA and TCP (tools/vestad/rdmaauto_test.go).
	// Without -race: three replicas, the load and its history in the
	// guest's memory.
	{Name: "cluster", Pkg: "./tools/vestad", NoRace: true, Run: "^(TestRDMACluster|TestRDMAAutoPartialDevices)$",
		Env:      []string{"VESTA_VESTAD=/vmlab/vestad"},
		Programs: []goProgram{{Name: "vestad", Pkg: "./tools/vestad"}, {Name: "vesta-bench", Pkg: "./tools/vesta-bench"}}},
}

// benchRuns are the figures test-rdma takes after the suites: vesta-bench
// against 3 vestad processes in the guest, over TCP and over RDMA, for the
// same short closed-loop run. Soft-RoCE under TCG is emulation: the
// figures are functional only (docs/PERFORMANCE.md).
var benchRuns = []string{"tcp", "rdma"}

// benchArgs is the vesta-bench command line of a figure (after the binary).
func benchArgs(transport string) []string {
	return []string{"-vestad", "/vmlab/vestad", "-transport", transport, "-log", "mem",
		"-duration", "5s", "-warmup", "2s", "-clients", "2", "-inflight", "32", "-cpu-wake-latency", "off"}
}

// rdmaTags are added to the run's tags (contracts by default) for every
// suite: the binding, linked statically with the rxe provider.
var rdmaTags = []string{"rdma", "rdmastatic"}

// rdmaRun is one run of a suite's test binary: one guest step.
type rdmaRun struct {
	Suite rdmaSuite
	Step  string // "<suite>-tests", "<suite>-cgocheck2"
	Bin   string // file name under /vmlab/
	Check string // what the run checks cgo calls with, for the report
	prog  goProgram
}

func rdmaRuns() []rdmaRun {
	var runs []rdmaRun
	for _, s := range rdmaSuites {
		runs = append(runs, rdmaRun{Suite: s, Step: s.Name + "-tests", Bin: s.Name + ".test", Check: "GODEBUG=cgocheck=1",
			prog: goProgram{Name: s.Name + ".test", Pkg: s.Pkg, Test: true, Tags: rdmaTags, Cgo: true, Race: !s.NoRace, RaceOptional: true}})
		if s.CgoCheck2 {
			runs = append(runs, rdmaRun{Suite: s, Step: s.Name + "-cgocheck2", Bin: s.Name + "-cgocheck2.test", Check: "GOEXPERIMENT=cgocheck2",
				prog: goProgram{Name: s.Name + "-cgocheck2.test", Pkg: s.Pkg, Test: true, Tags: rdmaTags, Cgo: true, BuildEnv: []string{"GOEXPERIMENT=cgocheck2"}}})
		}
	}
	return runs
}

const libDir = "/usr/lib/x86_64-linux-gnu" // the lab builds for amd64 only

func rdmaScenario() *scenario {
	var progs []goProgram
	for _, r := range rdmaRuns() {
		progs = append(progs, r.prog)
	}
	for _, s := range rdmaSuites {
		for _, p := range s.Programs {
			p.Tags = append(append([]string(nil), rdmaTags...), p.Tags...)
			p.Cgo = true
			progs = append(progs, p)
		}
	}
	return &scenario{
		Name:    "test-rdma",
		Summary: "the RDMA tests (cgo/verbs, ...) on soft-RoCE (rdma_rxe on a dummy netdev)",
		Tools: []hostTool{
			{Cmd: "gcc", Pkg: "gcc"},
			{Cmd: "ip", Pkg: "iproute2"},
			{Cmd: "rdma", Pkg: "iproute2"},
		},
		// libibverbs-dev carries the static provider libraries
		// (librxe-rdmav34.a) and depends on ibverbs-providers and on the
		// libnl -dev packages.
		HostFiles: []hostFile{
			{Path: "/usr/include/infiniband/verbs.h", Pkg: "libibverbs-dev"},
			{Path: libDir + "/libibverbs.a", Pkg: "libibverbs-dev"},
			{Path: libDir + "/librxe-rdmav34.a", Pkg: "libibverbs-dev"},
			{Path: libDir + "/libnl-3.a", Pkg: "libnl-3-dev"},
			{Path: libDir + "/libnl-route-3.a", Pkg: "libnl-route-3-dev"},
			{Path: libDir + "/libc.a", Pkg: "libc6-dev"},
		},
		GuestPrograms: []string{"ip", "rdma"},
		// For dynamically linked RDMA programs; the static test binaries
		// have the provider built in.
		GuestFiles: []string{"/etc/libibverbs.d/rxe.driver"},
		Modules:    []string{"dummy", "crc32_generic", "ib_uverbs", "rdma_rxe"},
		GoPrograms: progs,
		Steps:      rdmaSteps,
		Verify:     rdmaVerify,
		Report:     rdmaReport,
	}
}

func rdmaSteps(env *runEnv) []step {
	ip, rdma := shellQuote(env.Tools["ip"]), shellQuote(env.Tools["rdma"])
	steps := []step{
		stepMountPseudoFS(),
		stepLoadModules("load-modules", env.Kernel.Version, env.Modules),
		// busybox's applets win over $PATH in its sh: ip and rdma are
		// called by their full paths.
		{Name: "soft-roce", Script: fmt.Sprintf(`%[1]s link set lo up
%[1]s link add %[3]s type dummy
%[1]s addr add %[4]s dev %[3]s
%[1]s link set %[3]s up
%[2]s link add %[5]s type rxe netdev %[3]s
port=/sys/class/infiniband/%[5]s/ports/1
i=0
until grep -q ACTIVE $port/state 2>/dev/null && [ -e /dev/infiniband/uverbs0 ]; do
	i=$((i+1))
	if [ $i -gt 100 ]; then echo "%[5]s did not become ACTIVE with /dev/infiniband/uverbs0 in 10 s"; exit 1; fi
	sleep 0.1
done
%[2]s link show
gid1=$(cat $port/gids/1)
echo "%[6]s rdma device=%[5]s netdev=%[3]s state=$(cut -d' ' -f2 $port/state) gid1=$gid1 gid1_type=$(cat $port/gid_attrs/types/1 2>/dev/null | tr ' ' _)"
ulimit -l unlimited`, ip, rdma, rdmaNetdev, rdmaAddr, rdmaDevice, markerPrefix)},
	}
	for _, r := range rdmaRuns() {
		race := 0
		if env.Built[r.Bin].Race {
			race = 1
		}
		args := []string{"/vmlab/" + r.Bin, "-test.v", "-test.count=1",
			fmt.Sprintf("-test.timeout=%ds", int(env.Opts.TestTimeout.Seconds()))}
		if env.Opts.TestRun != "" {
			args = append(args, "-test.run="+env.Opts.TestRun)
		} else if r.Suite.Run != "" {
			args = append(args, "-test.run="+r.Suite.Run)
		}
		if env.Opts.Short {
			args = append(args, "-test.short")
		}
		e := append([]string{"VESTA_RDMA_REQUIRE=1", "VESTA_RDMA_DEVICE=" + rdmaDevice, "GODEBUG=cgocheck=1"}, r.Suite.Env...)
		steps = append(steps, step{Name: r.Step, Script: fmt.Sprintf(`echo "%s suite name=%s race=%d"
cd /tmp
env %s %s`, markerPrefix, r.Suite.Name, race, shellJoin(e...), shellJoin(args...))})
	}
	if env.Opts.TestRun != "" {
		return steps // a chosen test: no figures
	}
	for _, tr := range benchRuns {
		steps = append(steps, step{Name: "bench-" + tr, Script: fmt.Sprintf(`echo "%s bench transport=%s"
cd /tmp
%s`, markerPrefix, tr, shellJoin(append([]string{"/vmlab/vesta-bench"}, benchArgs(tr)...)...))})
	}
	return steps
}

// benchFigure is one vesta-bench run's headline, from its table.
type benchFigure struct {
	Transport  string
	Throughput string // "12345 ops/s"
	P50, P99   string // "310.3 µs"
	Links      string // the conditions' transport line
}

// benchFigures reads each bench step's "throughput" and "latency" lines.
func benchFigures(t *transcript) []benchFigure {
	var out []benchFigure
	var cur *benchFigure
	for _, l := range t.Lines {
		if m, ok := parseMarker(l); ok {
			switch {
			case m.Kind == "step" && m.Phase == "begin" && strings.HasPrefix(m.Step, "bench-"):
				out = append(out, benchFigure{Transport: strings.TrimPrefix(m.Step, "bench-")})
				cur = &out[len(out)-1]
			case m.Kind == "step":
				cur = nil
			}
			continue
		}
		if cur == nil {
			continue
		}
		f := strings.Fields(l)
		switch {
		case len(f) >= 3 && f[0] == "throughput":
			cur.Throughput = f[1] + " " + f[2]
		case len(f) >= 9 && f[0] == "latency" && f[1] == "p50" && f[4] == "p90":
			cur.P50 = f[2] + " " + f[3]
			if f[7] == "p99" && len(f) >= 10 {
				cur.P99 = f[8] + " " + f[9]
			}
		case len(f) >= 2 && f[0] == "cluster":
			if i := strings.Index(l, "transport "); i >= 0 {
				cur.Links = strings.TrimSpace(l[i+len("transport "):])
			}
		}
	}
	return out
}

// runCounts are one run's top-level test results.
type runCounts struct {
	rdmaRun
	Race             bool
	Pass, Fail, Skip int
	SkippedNames     []string
	ran              bool
}

// rdmaCounts splits the transcript by step and counts each run's
// "--- PASS/FAIL/SKIP" lines (top-level tests only: subtests are
// indented).
func rdmaCounts(t *transcript) []*runCounts {
	byStep := map[string]*runCounts{}
	var order []*runCounts
	for _, r := range rdmaRuns() {
		c := &runCounts{rdmaRun: r}
		byStep[r.Step] = c
		order = append(order, c)
	}
	var cur *runCounts
	for _, l := range t.Lines {
		if m, ok := parseMarker(l); ok {
			switch {
			case m.Kind == "step" && m.Phase == "begin":
				cur = byStep[m.Step]
			case m.Kind == "step":
				cur = nil
			case m.Kind == "suite" && cur != nil:
				cur.ran = true
				cur.Race = m.Fields["race"] == "1"
			}
			continue
		}
		if cur == nil {
			continue
		}
		switch {
		case strings.HasPrefix(l, "--- PASS"):
			cur.Pass++
		case strings.HasPrefix(l, "--- FAIL"):
			cur.Fail++
		case strings.HasPrefix(l, "--- SKIP"):
			cur.Skip++
			if f := strings.Fields(l); len(f) >= 3 {
				cur.SkippedNames = append(cur.SkippedNames, strings.TrimSuffix(f[2], ":"))
			}
		}
	}
	return order
}

// rdmaVerify checks, beyond every step passing, that the device came up
// and that every suite ran tests and passed them.
func rdmaVerify(env *runEnv, t *transcript) error {
	dev := false
	for _, m := range t.Markers {
		if m.Kind == "rdma" && m.Fields["device"] == rdmaDevice && m.Fields["state"] == "ACTIVE" {
			dev = true
		}
	}
	if !dev {
		return fmt.Errorf("the guest did not report %s ACTIVE", rdmaDevice)
	}
	for _, c := range rdmaCounts(t) {
		switch {
		case !c.ran:
			return fmt.Errorf("%s did not run", c.Step)
		case c.Fail > 0:
			return fmt.Errorf("%s: %d tests failed", c.Step, c.Fail)
		case c.Pass == 0 && env.Opts.TestRun == "":
			return fmt.Errorf("%s: no test passed", c.Step)
		}
	}
	if env.Opts.TestRun != "" {
		return nil
	}
	var cluster *marker
	for i, m := range t.Markers {
		if m.Kind == "cluster" {
			cluster = &t.Markers[i]
		}
	}
	switch {
	case cluster == nil:
		return fmt.Errorf("the RDMA cluster test reported no result")
	case cluster.Fields["transport"] != "rdma" || cluster.Fields["linearizable"] != "1":
		return fmt.Errorf("the RDMA cluster test reported transport=%s linearizable=%s", cluster.Fields["transport"], cluster.Fields["linearizable"])
	}
	for _, f := range benchFigures(t) {
		if f.Throughput == "" || f.P99 == "" {
			return fmt.Errorf("vesta-bench over %s printed no figures", f.Transport)
		}
		if !strings.Contains(f.Links, f.Transport) {
			return fmt.Errorf("vesta-bench over %s ran with transport %q", f.Transport, f.Links)
		}
	}
	return nil
}

func rdmaReport(t *transcript) []string {
	var r []string
	for _, m := range t.Markers {
		if m.Kind == "rdma" {
			r = append(r, fmt.Sprintf("soft-RoCE: %s on %s %s, GID 1 %s (%s)", m.Fields["device"], m.Fields["netdev"], m.Fields["state"], m.Fields["gid1"], m.Fields["gid1_type"]))
		}
	}
	tp, tf, ts := 0, 0, 0
	for _, c := range rdmaCounts(t) {
		if !c.ran {
			r = append(r, fmt.Sprintf("rdma %s: did not run", c.Step))
			continue
		}
		race := "race off"
		if c.Race {
			race = "race on"
		}
		line := fmt.Sprintf("rdma %s (%s) in the guest: %d passed, %d failed, %d skipped (%s, %s)", c.Step, c.Bin, c.Pass, c.Fail, c.Skip, race, c.Check)
		if len(c.SkippedNames) > 0 {
			line += "; skipped: " + strings.Join(c.SkippedNames, " ")
		}
		r = append(r, line)
		tp, tf, ts = tp+c.Pass, tf+c.Fail, ts+c.Skip
	}
	r = append(r, fmt.Sprintf("RDMA tests in the guest: %d passed, %d failed, %d skipped", tp, tf, ts))
	for _, m := range t.Markers {
		if m.Kind == "cluster" {
			r = append(r, fmt.Sprintf("cluster over %s: %s replicas, %s commands acknowledged in %s s, replica %s SIGKILLed at %s and restarted, %s acknowledged writes read back, history of %s operations linearizable",
				m.Fields["transport"], m.Fields["replicas"], m.Fields["commands"], m.Fields["load_s"], m.Fields["killed"], m.Fields["killed_at"],
				m.Fields["verified"], m.Fields["history"]))
			r = append(r, "cluster links after the restart: "+strings.ReplaceAll(m.Fields["links"], ",", " "))
		}
	}
	for _, m := range t.Markers {
		if m.Kind != "verbsfig" {
			continue
		}
		f := m.Fields
		if f["kind"] == "rtt" {
			r = append(r, fmt.Sprintf("verbs %s %s B: round trip p50 %s µs, p99 %s µs (soft-RoCE under TCG)", f["op"], f["size"], f["p50_us"], f["p99_us"]))
		} else {
			r = append(r, fmt.Sprintf("verbs %s %s B: stream %s frames/s, %s MB/s (soft-RoCE under TCG)", f["op"], f["size"], f["frames_per_s"], f["mb_per_s"]))
		}
	}
	for _, f := range benchFigures(t) {
		r = append(r, fmt.Sprintf("figure (functional only: soft-RoCE under TCG) %s: %s, p50 %s, p99 %s [transport %s] (vesta-bench %s)",
			f.Transport, f.Throughput, f.P50, f.P99, f.Links, strings.Join(benchArgs(f.Transport), " ")))
	}
	return r
}
