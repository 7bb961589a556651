#include "textflag.h"

// func cpuid(eaxArg, ecxArg uint32) (eax, ebx, ecx, edx uint32)
TEXT ·cpuid(SB), NOSPLIT, $0-24
	MOVL eaxArg+0(FP), AX
	MOVL ecxArg+4(FP), CX
	CPUID
	MOVL AX, eax+8(FP)
	MOVL BX, ebx+12(FP)
	MOVL CX, ecx+16(FP)
	MOVL DX, edx+20(FP)
	RET

// func clwbLines(p unsafe.Pointer, lines uintptr)
// Writes back (without evicting) the lines lines of 64 bytes starting at p,
// which must be line-aligned. Ordered only by a later SFENCE.
TEXT ·clwbLines(SB), NOSPLIT, $0-16
	MOVQ p+0(FP), AX
	MOVQ lines+8(FP), CX
	TESTQ CX, CX
	JZ   clwbdone
clwbloop:
	CLWB (AX)
	ADDQ $64, AX
	DECQ CX
	JNZ  clwbloop
clwbdone:
	RET

// func clflushoptLines(p unsafe.Pointer, lines uintptr)
// Writes back and evicts; ordered only by a later SFENCE.
TEXT ·clflushoptLines(SB), NOSPLIT, $0-16
	MOVQ p+0(FP), AX
	MOVQ lines+8(FP), CX
	TESTQ CX, CX
	JZ   optdone
optloop:
	CLFLUSHOPT (AX)
	ADDQ $64, AX
	DECQ CX
	JNZ  optloop
optdone:
	RET

// func clflushLines(p unsafe.Pointer, lines uintptr)
// Writes back and evicts; serialized with other CLFLUSHes and stores, so it
// needs no fence of its own, but is the slowest.
TEXT ·clflushLines(SB), NOSPLIT, $0-16
	MOVQ p+0(FP), AX
	MOVQ lines+8(FP), CX
	TESTQ CX, CX
	JZ   cfdone
cfloop:
	CLFLUSH (AX)
	ADDQ $64, AX
	DECQ CX
	JNZ  cfloop
cfdone:
	RET

// func sfence()
TEXT ·sfence(SB), NOSPLIT, $0-0
	SFENCE
	RET
