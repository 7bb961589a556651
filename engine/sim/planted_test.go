//go:build contracts

package sim

import (
	"testing"

	"github.com/vestalabs/vesta/engine/paxos"
)

// plantedBugSeeds bounds how many seeds each planted bug may survive.
const plantedBugSeeds = 300

// TestPlantedBugsAreCaught shows the checkers are not vacuous: each real
// protocol bug, planted in every replica, makes the simulator report a
// violation within plantedBugSeeds seeds. The planted bugs also switch off
// the replicas' own contract checks, so what catches them is the
// simulator's checkers.
func TestPlantedBugsAreCaught(t *testing.T) {
	for _, b := range paxos.AllBugs {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			for _, replicas := range []int{3, 5} {
				found := false
				for seed := uint64(0); seed < plantedBugSeeds; seed++ {
					r := Run(Options{Seed: seed, Replicas: replicas, NodeHook: func(n *paxos.Node) { n.PlantBug(b.Bug) }})
					if len(r.Violations) > 0 {
						t.Logf("%d replicas: caught at seed %d [%s]: %s: %s", replicas, seed, r.Profile, r.Violations[0].Check, firstLine(r.Violations[0].Detail))
						found = true
						break
					}
				}
				if !found {
					t.Errorf("%d replicas: bug %s survived %d seeds", replicas, b.Name, plantedBugSeeds)
				}
			}
		})
	}
}

func firstLine(s string) string {
	for i, c := range s {
		if c == '\n' {
			return s[:i]
		}
	}
	return s
}
