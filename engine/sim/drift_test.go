//go:build contracts

package sim

import "testing"

// Leases assume a bound on clock drift (paxos lease.go). With clocks that
// drift beyond it, lease reads return stale values: the checker finds
// non-linearizable histories. With the same clocks and reads by read index
// only, it finds none: the read index assumes nothing of clocks.
func TestOnlyLeaseReadsNeedTheDriftBound(t *testing.T) {
	const seeds = 150
	var leaseBad, indexBad int
	first := uint64(0)
	for seed := uint64(0); seed < seeds; seed++ {
		r := Run(Options{Seed: seed, DriftBeyondBound: true})
		for _, v := range r.Violations {
			if v.Check != "linearizability" {
				t.Fatalf("seed %d with drift beyond the bound: %s violation, not linearizability: %s", seed, v.Check, firstLine(v.Detail))
			}
		}
		if len(r.Violations) > 0 {
			if leaseBad == 0 {
				first = seed
			}
			leaseBad++
		}
		if r := Run(Options{Seed: seed, DriftBeyondBound: true, NoLeaseReads: true}); len(r.Violations) > 0 {
			indexBad++
			t.Errorf("seed %d, drift beyond the bound, no lease reads: %s: %s", seed, r.Violations[0].Check, firstLine(r.Violations[0].Detail))
		}
	}
	t.Logf("drift beyond the bound, %d seeds: %d with stale lease reads (first: seed %d); %d without lease reads", seeds, leaseBad, first, indexBad)
	if leaseBad == 0 {
		t.Errorf("no stale lease read in %d seeds with drift beyond the bound: the simulator does not exercise leases", seeds)
	}
}
