package pmem

import (
	"testing"

	"github.com/vestalabs/vesta/internal/contract"
)

// workloads is the default exploration: small records (crash points with few
// pending words, enumerated exhaustively), mixed sizes that wrap a small data
// area many times and fill it, and large records (many pending words,
// sampled). Each seed explores a different random history.
func workloads(scale int) []workload {
	ops := func(n int) int {
		if raceEnabled {
			n /= 3 // the race detector slows replay about tenfold
		}
		return n * scale
	}
	var ws []workload
	for i := range uint64(4) {
		ws = append(ws,
			workload{name: "small", seed: 100 + i, dataSize: 4096, warmup: 40, ops: ops(600), maxData: 40, samples: 32, contEach: 64},
			workload{name: "mixed-wrap", seed: 200 + i, dataSize: 4096, warmup: 80, ops: ops(500), maxData: 600, samples: 32, contEach: 64},
		)
	}
	ws = append(ws,
		workload{name: "large", seed: 300, dataSize: 16384, warmup: 30, ops: ops(240), maxData: 4096, samples: 32, contEach: 64},
		workload{name: "large", seed: 301, dataSize: 16384, warmup: 30, ops: ops(240), maxData: 4096, samples: 32, contEach: 64},
	)
	return ws
}

func TestCrashExploration(t *testing.T) {
	var total exploreResult
	for _, w := range workloads(exploreScale(t)) {
		d := newDriver(t, w)
		r := explore(t, d)
		t.Logf("%s seed %d: %d records, %d commits, %d events: %v", w.name, w.seed, len(d.m.records), len(d.m.commits), len(d.rec.events), r)
		if r.violations() > 0 {
			t.Errorf("%s seed %d: %d violations; first: %s", w.name, w.seed, r.violations(), r.firstErr)
		}
		total.add(r)
	}
	t.Logf("crash exploration total: %v", total)
	if min := 10000; total.states < min && !testing.Short() {
		t.Errorf("explored only %d crash states, want at least %d", total.states, min)
	}
	suite.Lock()
	suite.crash.add(total)
	suite.Unlock()
}

// TestExplorerCatchesPlantedBugs shows the explorer has teeth: each planted
// ordering defect must produce violations.
func TestExplorerCatchesPlantedBugs(t *testing.T) {
	if !contract.Enabled {
		t.Skip("planted bugs exist only in contracts builds")
	}
	for _, tc := range []struct {
		name string
		bug  bugSet
	}{
		{"record not flushed", bugSkipRecordFlush},
		{"flip stored before the slot is fenced", bugSkipSlotFence},
		{"flip word not flushed", bugSkipFlipFlush},
	} {
		t.Run(tc.name, func(t *testing.T) {
			plantBugs(tc.bug)
			defer plantBugs(0)
			w := workload{name: "planted", seed: 42, dataSize: 4096, warmup: 20, ops: 80, maxData: 200, samples: 16}
			r := explore(t, newDriver(t, w))
			t.Logf("with %q planted: %v; first: %s", tc.name, r, r.firstErr)
			if r.violations() == 0 {
				t.Fatalf("the explorer missed the planted bug %q", tc.name)
			}
			suite.Lock()
			suite.planted++
			suite.Unlock()
		})
	}
}
