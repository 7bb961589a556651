//go:build linux

package schedpolicy

import (
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

func (p Policy) linux() uint32 {
	if p == Batch {
		return unix.SCHED_BATCH
	}
	return unix.SCHED_NORMAL
}

// maxPasses bounds Set's passes over the process's threads: a Go process
// creates threads rarely, so a pass that changes something is followed by
// one that changes nothing long before this.
const maxPasses = 16

// Set gives every thread of the calling process policy p, keeping each
// thread's nice value. It fails if a thread refuses the change or threads
// keep appearing for maxPasses passes.
func Set(p Policy) error {
	want := p.linux()
	for range maxPasses {
		tids, err := threads()
		if err != nil {
			return err
		}
		changed := 0
		for _, tid := range tids {
			attr, err := unix.SchedGetAttr(tid, 0)
			if err != nil {
				if err == unix.ESRCH {
					continue // the thread exited
				}
				return fmt.Errorf("schedpolicy: reading thread %d's policy: %w", tid, err)
			}
			if attr.Policy == want {
				continue
			}
			// Keep the nice value; SCHED_BATCH and SCHED_OTHER share it.
			next := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: want, Nice: attr.Nice}
			if err := unix.SchedSetAttr(tid, &next, 0); err != nil {
				if err == unix.ESRCH {
					continue
				}
				return fmt.Errorf("schedpolicy: setting thread %d to %s: %w", tid, p, err)
			}
			changed++
		}
		if changed == 0 {
			return nil
		}
	}
	return fmt.Errorf("schedpolicy: threads kept appearing over %d passes; not every thread is %s", maxPasses, p)
}

// Current reports the policy of the calling thread: Batch or Normal, or
// the kernel's number for any other.
func Current() (string, error) {
	attr, err := unix.SchedGetAttr(0, 0)
	if err != nil {
		return "", fmt.Errorf("schedpolicy: %w", err)
	}
	switch attr.Policy {
	case unix.SCHED_BATCH:
		return string(Batch), nil
	case unix.SCHED_NORMAL:
		return string(Normal), nil
	}
	return "policy " + strconv.Itoa(int(attr.Policy)), nil
}

// threads lists the process's thread IDs.
func threads() ([]int, error) {
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return nil, fmt.Errorf("schedpolicy: listing the process's threads: %w", err)
	}
	tids := make([]int, 0, len(ents))
	for _, e := range ents {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		tids = append(tids, tid)
	}
	return tids, nil
}
