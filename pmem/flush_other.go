//go:build !amd64

package pmem

import "unsafe"

// On other architectures there is no portable cache-flush instruction in Go's
// assembler that this package uses (arm64's DC CVAP is left for later), so the
// log makes stores durable with msync even where MAP_SYNC is in force; the
// kernel writes back the CPU caches for DAX mappings on msync.

func bestCPUFlush() FlushMethod { return flushNone }

func cpuHas(FlushMethod) bool { return false }

func flushLines(FlushMethod, unsafe.Pointer, uintptr) {
	panic("pmem: CPU cache flush is not available on this architecture")
}

func storeFence() {}
