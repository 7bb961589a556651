package main

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestRdmaStepsRender(t *testing.T) {
	env := &runEnv{
		Opts:   options{TestTimeout: 5 * time.Minute, TestRun: "TestSend"},
		Kernel: &kernel{Version: "6.1.0-48-amd64"},
		Tools:  map[string]string{"ip": "/usr/sbin/ip", "rdma": "/usr/bin/rdma"},
		Built:  map[string]goProgram{"verbs.test": {Race: true}},
	}
	text, err := (&initScript{Steps: rdmaSteps(env)}).render()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"/usr/sbin/ip link add rxnet0 type dummy",
		"/usr/bin/rdma link add rxe0 type rxe netdev rxnet0",
		`echo "@@VMLAB suite name=verbs race=1"`,
		"env VESTA_RDMA_REQUIRE=1 VESTA_RDMA_DEVICE=rxe0 GODEBUG=cgocheck=1 /vmlab/verbs.test -test.v -test.count=1 -test.timeout=300s -test.run=TestSend",
		`echo "@@VMLAB suite name=verbs race=0"`,
		"/vmlab/verbs-cgocheck2.test",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("script lacks %q", want)
		}
	}
	sc := rdmaScenario()
	var names []string
	for _, p := range sc.GoPrograms {
		names = append(names, p.Name)
		if !p.Cgo || !strings.Contains(strings.Join(p.Tags, ","), "rdmastatic") {
			t.Errorf("%s is not a static cgo build with rdmastatic: %+v", p.Name, p)
		}
	}
	if strings.Join(names, " ") != "verbs.test verbs-cgocheck2.test rdma.test rdma-cgocheck2.test cluster.test vestad vesta-bench" {
		t.Errorf("programs %v", names)
	}
}

func TestRdmaCountsPerStep(t *testing.T) {
	tr := &transcript{}
	for _, l := range []string{
		"@@VMLAB step=soft-roce begin t=1",
		"--- PASS: NotATest (0.00s)", // outside a test step: not counted
		"@@VMLAB rdma device=rxe0 netdev=rxnet0 state=ACTIVE gid1=x gid1_type=RoCE_v2",
		"@@VMLAB step=soft-roce end rc=0 t=2",
		"@@VMLAB step=verbs-tests begin t=2",
		"@@VMLAB suite name=verbs race=1",
		"--- PASS: TestA (0.00s)",
		"    --- PASS: TestA/sub (0.00s)",
		"--- SKIP: TestB (0.00s)",
		"--- PASS: TestC (0.00s)",
		"@@VMLAB step=verbs-tests end rc=0 t=3",
		"@@VMLAB step=verbs-cgocheck2 begin t=3",
		"@@VMLAB suite name=verbs race=0",
		"--- FAIL: TestA (0.00s)",
		"@@VMLAB step=verbs-cgocheck2 end rc=1 t=4",
	} {
		tr.observe(l, 0)
	}
	c := rdmaCounts(tr)
	if len(c) < 2 || c[0].Pass != 2 || c[0].Skip != 1 || !c[0].Race || c[0].SkippedNames[0] != "TestB" || c[1].Fail != 1 || c[1].Race {
		t.Fatalf("counts %+v %+v", *c[0], *c[1])
	}
	err := rdmaVerify(&runEnv{}, tr)
	if err == nil || !strings.Contains(err.Error(), "verbs-cgocheck2: 1 tests failed") {
		t.Fatalf("verify: %v", err)
	}
	rep := strings.Join(rdmaReport(tr), "\n")
	if !strings.Contains(rep, "RDMA tests in the guest: 2 passed, 1 failed, 1 skipped") || !strings.Contains(rep, "race on") {
		t.Fatalf("report:\n%s", rep)
	}
	if err := rdmaVerify(&runEnv{}, &transcript{}); err == nil || !strings.Contains(err.Error(), "ACTIVE") {
		t.Fatalf("verify without a device: %v", err)
	}
}

func TestRdmaClusterAndFigures(t *testing.T) {
	env := &runEnv{Opts: options{TestTimeout: 5 * time.Minute}, Kernel: &kernel{Version: "6.1.0-48-amd64"},
		Tools: map[string]string{"ip": "/usr/sbin/ip", "rdma": "/usr/bin/rdma"}, Built: map[string]goProgram{}}
	text, err := (&initScript{Steps: rdmaSteps(env)}).render()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"VESTA_VESTAD=/vmlab/vestad /vmlab/cluster.test -test.v -test.count=1 -test.timeout=300s '-test.run=^(TestRDMACluster|TestRDMAAutoPartialDevices)$'",
		"/vmlab/vesta-bench -vestad /vmlab/vestad -transport tcp -log mem",
		"/vmlab/vesta-bench -vestad /vmlab/vestad -transport rdma -log mem",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("script lacks %q", want)
		}
	}
	tr := &transcript{}
	lines := []string{"@@VMLAB rdma device=rxe0 netdev=rxnet0 state=ACTIVE gid1=x gid1_type=RoCE_v2"}
	for _, r := range rdmaRuns() {
		lines = append(lines, "@@VMLAB step="+r.Step+" begin t=2", "@@VMLAB suite name="+r.Suite.Name+" race=0", "--- PASS: TestX (0.00s)")
		if r.Suite.Name == "cluster" {
			lines = append(lines, "@@VMLAB cluster replicas=3 transport=rdma commands=100012 load_s=80.5 killed=2 killed_at=40001 verified=99000 history=200000 linearizable=1 links=1>2:rdma:frames=5:reconnects=1:stalls=0")
		}
		lines = append(lines, "@@VMLAB step="+r.Step+" end rc=0 t=3")
	}
	for _, b := range benchRuns {
		lines = append(lines, "@@VMLAB step=bench-"+b+" begin t=4",
			"throughput  12345 ops/s  (61725 ops in 5s)",
			"latency     p50 310.3 µs  p90 534.5 µs  p99 2678.8 µs  p99.9 7487.5 µs  max 16579.3 µs",
			"  cluster     3 replicas as processes on 127.0.0.1 (GOMAXPROCS 1 each), log mem, transport "+b+" (replica 1's links: 2="+b+" 3="+b+")",
			"@@VMLAB step=bench-"+b+" end rc=0 t=5")
	}
	for _, l := range lines {
		tr.observe(l, 0)
	}
	if err := rdmaVerify(env, tr); err != nil {
		t.Fatalf("verify: %v", err)
	}
	rep := strings.Join(rdmaReport(tr), "\n")
	for _, want := range []string{"cluster over rdma: 3 replicas, 100012 commands", "history of 200000 operations linearizable",
		"rdma: 12345 ops/s, p50 310.3 µs, p99 2678.8 µs", "tcp: 12345 ops/s"} {
		if !strings.Contains(rep, want) {
			t.Errorf("report lacks %q:\n%s", want, rep)
		}
	}
}

func TestEnsureFilesSkipsWithoutInstall(t *testing.T) {
	h := newHost(newProgress(&strings.Builder{}), true)
	if err := h.ensureFiles([]hostFile{{Path: "/", Pkg: "base-files"}}); err != nil {
		t.Fatalf("a present file: %v", err)
	}
	err := h.ensureFiles([]hostFile{{Path: "/nonexistent/verbs.h", Pkg: "libibverbs-dev"}})
	var skip *skipError
	if !errors.As(err, &skip) || !strings.Contains(skip.reason, "libibverbs-dev") || !strings.Contains(skip.reason, "-no-install") {
		t.Fatalf("a missing file with installing off: %v", err)
	}
}

func TestJoinTagsAndBuildNote(t *testing.T) {
	if got := joinTags("contracts", []string{"rdma", "contracts", " rdmastatic"}); got != "contracts,rdma,rdmastatic" {
		t.Fatalf("joinTags: %q", got)
	}
	if got := joinTags("", nil); got != "" {
		t.Fatalf("joinTags empty: %q", got)
	}
	if n := buildNote(goProgram{Cgo: true, Race: true}); n != "; cgo static, -race" {
		t.Fatalf("buildNote: %q", n)
	}
}
