//go:build contracts

package pmem

// plantedBugs is set only by tests that check the explorer finds them.
var plantedBugs bugSet
