package pmem

import (
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
)

// Totals across the suite, printed after the tests run so that every reader
// of the output (not only of -v) sees what was checked.
var suite struct {
	sync.Mutex
	crash   exploreResult
	flips   flipResult
	planted int // planted bugs the explorer caught
}

func TestMain(m *testing.M) {
	if path := os.Getenv(childEnv); path != "" {
		crashChild(path) // never returns
	}
	if spec := os.Getenv(createCrashEnv); spec != "" {
		createCrashChild(spec) // never returns
	}
	code := m.Run()
	suite.Lock()
	if suite.crash.states > 0 {
		fmt.Printf("pmem crash exploration: %d crash states checked at %d crash points, %d continuations: %d lost acknowledged appends, %d garbage records, %d recovery failures\n",
			suite.crash.states, suite.crash.points, suite.crash.continuation, suite.crash.lost, suite.crash.garbage, suite.crash.recoverErr)
	}
	if suite.flips.trials > 0 {
		fmt.Printf("pmem bit flips: %d corrupted images, %d detected, %d harmless (outside live data, recovered state unchanged), %d garbage returned\n",
			suite.flips.trials, suite.flips.detected, suite.flips.harmless, suite.flips.garbage)
	}
	if suite.planted > 0 {
		fmt.Printf("pmem planted bugs caught by the explorer: %d\n", suite.planted)
	}
	suite.Unlock()
	os.Exit(code)
}

// exploreScale multiplies the recorded operations of each workload: 1 by
// default, VESTA_PMEM_EXPLORE=N for a longer exploration.
func exploreScale(t testing.TB) int {
	s := os.Getenv("VESTA_PMEM_EXPLORE")
	if s == "" {
		return 1
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		t.Fatalf("VESTA_PMEM_EXPLORE=%q: want a positive integer", s)
	}
	return n
}
