package pmem

import (
	"unsafe"

	"golang.org/x/sys/cpu"
)

func cpuid(eaxArg, ecxArg uint32) (eax, ebx, ecx, edx uint32)

//go:noescape
func clwbLines(p unsafe.Pointer, lines uintptr)

//go:noescape
func clflushoptLines(p unsafe.Pointer, lines uintptr)

//go:noescape
func clflushLines(p unsafe.Pointer, lines uintptr)

func sfence()

// CPU cache-flush features, read once at start. golang.org/x/sys/cpu does not
// (yet) report CLWB, CLFLUSHOPT or CLFLUSH, so they come from CPUID directly:
// leaf 1 EDX bit 19 (CLFSH), leaf 7 EBX bits 23 (CLFLUSHOPT) and 24 (CLWB).
var cpuFlush = func() (f struct{ clwb, clflushopt, clflush bool }) {
	if !cpu.X86.HasSSE2 { // SFENCE; always true on amd64, checked for form
		return f
	}
	maxLeaf, _, _, _ := cpuid(0, 0)
	_, _, _, edx1 := cpuid(1, 0)
	f.clflush = edx1&(1<<19) != 0
	if maxLeaf >= 7 {
		_, ebx7, _, _ := cpuid(7, 0)
		f.clflushopt = ebx7&(1<<23) != 0
		f.clwb = ebx7&(1<<24) != 0
	}
	return f
}()

// bestCPUFlush is the cheapest flush instruction this CPU has, or flushNone.
func bestCPUFlush() FlushMethod {
	switch {
	case cpuFlush.clwb:
		return FlushCLWB
	case cpuFlush.clflushopt:
		return FlushCLFLUSHOPT
	case cpuFlush.clflush:
		return FlushCLFLUSH
	}
	return flushNone
}

func cpuHas(m FlushMethod) bool {
	switch m {
	case FlushCLWB:
		return cpuFlush.clwb
	case FlushCLFLUSHOPT:
		return cpuFlush.clflushopt
	case FlushCLFLUSH:
		return cpuFlush.clflush
	}
	return false
}

// flushLines writes back lines cache lines from p with method m. No fence.
func flushLines(m FlushMethod, p unsafe.Pointer, lines uintptr) {
	switch m {
	case FlushCLWB:
		clwbLines(p, lines)
	case FlushCLFLUSHOPT:
		clflushoptLines(p, lines)
	case FlushCLFLUSH:
		clflushLines(p, lines)
	}
}

// storeFence orders every earlier flush before every later store: after it,
// the flushed lines are in the persistence domain.
func storeFence() { sfence() }
