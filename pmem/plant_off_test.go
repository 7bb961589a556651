//go:build !contracts

package pmem

func plantBugs(bugSet) { panic("planted bugs need the contracts build tag") }
