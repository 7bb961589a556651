package sim

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/anishathalye/porcupine"
)

// simSeeds is how many seeds per cluster size the normal test run checks;
// `make sim` and CI run thousands through tools/vesta-sim.
const simSeeds = 300

func TestSimulatorSeeds(t *testing.T) {
	for _, replicas := range []int{3, 5} {
		t.Run(fmt.Sprintf("%d-replicas", replicas), func(t *testing.T) {
			t.Parallel()
			healthyMax, total := 0, 0
			for seed := uint64(0); seed < simSeeds; seed++ {
				r := Run(Options{Seed: seed, Replicas: replicas})
				for _, v := range r.Violations {
					t.Errorf("seed %d [%s] %s: %s\n  replay: go run ./tools/vesta-sim -seed %d -replicas %d -v",
						seed, r.Profile, v.Check, v.Detail, seed, replicas)
				}
				total += r.Commands
				if r.Profile == "healthy" {
					healthyMax = max(healthyMax, r.Commands)
				}
			}
			t.Logf("%d seeds, %d commands committed in all", simSeeds, total)
			if total < simSeeds*100 {
				t.Errorf("only %d commands committed over %d seeds: the runs make too little progress to prove much", total, simSeeds)
			}
		})
	}
}

// A healthy network commits thousands of commands in one seed.
func TestHealthySeedCommitsThousands(t *testing.T) {
	for _, replicas := range []int{3, 5} {
		r := Run(Options{Seed: 1, Replicas: replicas, NoFaults: true})
		if len(r.Violations) > 0 {
			t.Fatalf("%v", r.Violations)
		}
		t.Logf("%d replicas, healthy: %d commands committed, %d gets by read index, %d under a lease, %d ops ok", replicas, r.Commands, r.ReadIndexReads, r.LeaseReads, r.OpsOK)
		if r.Commands+r.ReadIndexReads+r.LeaseReads < 2000 {
			t.Errorf("%d replicas: healthy seed committed only %d commands and served %d gets without the log", replicas, r.Commands, r.ReadIndexReads+r.LeaseReads)
		}
	}
}

// The same seed replays the same run, event for event.
func TestSeedReplaysExactly(t *testing.T) {
	var a, b bytes.Buffer
	ra := Run(Options{Seed: 42, Replicas: 5, Trace: &a})
	rb := Run(Options{Seed: 42, Replicas: 5, Trace: &b})
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatal("two runs of seed 42 produced different traces")
	}
	if a.Len() < 10000 || ra.Commands != rb.Commands {
		t.Fatalf("trace of %d bytes, commands %d vs %d", a.Len(), ra.Commands, rb.Commands)
	}
}

// The linearizability checker rejects a history no sequential execution
// explains: a read that returns a value after a later write was seen.
func TestLinearizabilityCheckerRejectsStaleRead(t *testing.T) {
	op := func(client int, in kvInput, out kvOutput, call, ret int64) porcupine.Operation {
		return porcupine.Operation{ClientId: client, Input: in, Output: out, Call: call, Return: ret}
	}
	ok := result{OK: true}
	good := []porcupine.Operation{
		op(0, kvInput{Op: opPut, Key: "k", Value: "1"}, kvOutput{Result: ok}, 0, 10),
		op(1, kvInput{Op: opGet, Key: "k"}, kvOutput{Result: result{Value: "1", OK: true}}, 20, 30),
		op(0, kvInput{Op: opPut, Key: "k", Value: "2"}, kvOutput{Unknown: true}, 40, 1000),
		op(1, kvInput{Op: opGet, Key: "k"}, kvOutput{Result: result{Value: "1", OK: true}}, 50, 60),
	}
	if !porcupine.CheckOperations(kvModel, good) {
		t.Fatal("a linearizable history (with an open-ended put) was rejected")
	}
	stale := append(good[:3:3],
		op(1, kvInput{Op: opGet, Key: "k"}, kvOutput{Result: result{Value: "2", OK: true}}, 50, 60),
		op(1, kvInput{Op: opGet, Key: "k"}, kvOutput{Result: result{Value: "1", OK: true}}, 70, 80),
	)
	if porcupine.CheckOperations(kvModel, stale) {
		t.Fatal("a stale read after a newer value was seen passed the checker")
	}
	cas := []porcupine.Operation{
		op(0, kvInput{Op: opPut, Key: "k", Value: "1"}, kvOutput{Result: ok}, 0, 10),
		op(1, kvInput{Op: opCAS, Key: "k", Expect: "1", Value: "3"}, kvOutput{Result: result{OK: false}}, 20, 30),
	}
	if porcupine.CheckOperations(kvModel, cas) {
		t.Fatal("a failed CAS whose expectation held passed the checker")
	}
}

// Sessions make a command delivered twice apply once.
func TestKVSessionsApplyOnce(t *testing.T) {
	kv := newKV()
	put := command{Client: 1, Seq: 1, Op: opPut, Key: "k", Value: "a"}
	if _, fresh := kv.apply(put); !fresh {
		t.Fatal("first apply not executed")
	}
	kv.apply(command{Client: 2, Seq: 1, Op: opPut, Key: "k", Value: "b"})
	if _, fresh := kv.apply(put); fresh || kv.data["k"] != "b" {
		t.Fatalf("duplicate re-executed: k=%q", kv.data["k"])
	}
	cmds, err := decodeBatch(appendCommand(appendCommand(nil, put), command{Client: 3, Seq: 9, Op: opCAS, Key: "x", Value: "y", Expect: "z"}))
	if err != nil || len(cmds) != 2 || cmds[1].Expect != "z" {
		t.Fatalf("batch round trip: %v %v", cmds, err)
	}
	if _, err := decodeBatch([]byte{1, 2, 3}); err == nil {
		t.Fatal("truncated batch decoded")
	}
}

// Replicas whose logs are pmem logs on simulated persistent memory: crashes
// keep a random subset of the words stored since the last fence, and the
// simulator checks that recovery kept everything synced, on top of the
// usual safety and recovery checks.
func TestSimulatorSeedsOnPmemLogs(t *testing.T) {
	for _, replicas := range []int{3, 5} {
		for seed := uint64(0); seed < 100; seed++ {
			r := Run(Options{Seed: seed, Replicas: replicas, PmemLog: true})
			for _, v := range r.Violations {
				t.Errorf("seed %d [%s] %s: %s\n  replay: go run ./tools/vesta-sim -seed %d -replicas %d -log pmem -v",
					seed, r.Profile, v.Check, v.Detail, seed, replicas)
			}
		}
	}
}

// A violation of linearizability names the key and lists its operations.
func TestExplainIllegalListsTheKey(t *testing.T) {
	op := func(client int, in kvInput, out kvOutput, call, ret int64) porcupine.Operation {
		return porcupine.Operation{ClientId: client, Input: in, Output: out, Call: call, Return: ret}
	}
	h := []porcupine.Operation{
		op(0, kvInput{Op: opPut, Key: "a", Value: "1"}, kvOutput{Result: result{OK: true}}, 0, 10),
		op(1, kvInput{Op: opGet, Key: "a"}, kvOutput{Result: result{Value: "2", OK: true}}, 20, 30),
		op(1, kvInput{Op: opGet, Key: "b"}, kvOutput{Result: result{OK: true}}, 20, 30),
	}
	got := explainIllegal(h)
	if !strings.Contains(got, "key a") || !strings.Contains(got, "get(a)") || strings.Contains(got, "get(b)") {
		t.Fatalf("explanation: %q", got)
	}
}
