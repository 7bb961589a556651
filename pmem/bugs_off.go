//go:build !contracts

package pmem

const plantedBugs bugSet = 0
