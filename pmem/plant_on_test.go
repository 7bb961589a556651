//go:build contracts

package pmem

func plantBugs(b bugSet) { plantedBugs = b }
