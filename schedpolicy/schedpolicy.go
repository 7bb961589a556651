// Package schedpolicy sets the Linux CPU scheduling policy of every thread
// of the calling process.
//
// # Why
//
// Linux schedules threads, and a Go process has several. Under the default
// policy (SCHED_OTHER) a thread that wakes up may preempt the thread running
// on its CPU at once (wake-up preemption). When more processes take part in
// a replicated write than there are CPUs — the benchmark runs three replicas
// and a client on two — that is mostly harm: the leader, in the middle of
// writing an Accept to its second follower, is preempted by the follower it
// just woke, and the whole write waits until that follower blocks again;
// under load every such preemption is a context switch that does no useful
// work. SCHED_BATCH is SCHED_OTHER without wake-up preemption: a woken thread
// still goes to an idle CPU at once, but on a busy one it waits until the
// running thread blocks or its time slice ends. docs/PERFORMANCE.md (step 21)
// measures it: on the 2-vCPU machine, unloaded p50 and loaded throughput
// both improve by 10–25%.
//
// The cost is where the machine is shared with other work: a replica's
// thread that wakes on a CPU busy with an unrelated program waits for that
// program's slice to end (milliseconds) instead of preempting it. Use it
// where the replicas and their clients have the machine to themselves.
//
// # Contract
//
// The policy is per thread, and a new thread inherits its creator's.
// [SetBatch] sets it on every thread the process has, repeating until a pass
// finds none left to change, so threads created meanwhile by a thread not
// yet changed are caught too; afterwards every new thread is created by a
// changed one. Unprivileged processes may set SCHED_BATCH (it lowers no
// priority and raises none).
package schedpolicy

import "fmt"

// Policy names a scheduling policy this package sets.
type Policy string

const (
	// Normal is SCHED_OTHER, Linux's default.
	Normal Policy = "normal"
	// Batch is SCHED_BATCH: SCHED_OTHER without wake-up preemption.
	Batch Policy = "batch"
)

// Parse returns the Policy that s names.
func Parse(s string) (Policy, error) {
	switch Policy(s) {
	case Normal, Batch:
		return Policy(s), nil
	}
	return "", fmt.Errorf("scheduling policy %q: want %q or %q", s, Normal, Batch)
}
