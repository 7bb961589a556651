// Package pmqos asks Linux to keep idle CPUs ready to run at once, through
// the PM QoS interface /dev/cpu_dma_latency.
//
// # Why
//
// A replicated write crosses several processes and threads, and each one it
// wakes up may sit on a CPU that went idle. How long an idle CPU takes to
// wake depends on its idle state. On a virtual machine an idle vCPU that
// halts is descheduled by the host and its wake-up costs tens of
// microseconds: on the 2-vCPU machines Vesta is measured on, a TCP ping-pong
// between two processes takes 61–63 µs per round trip with the machine's
// default idle policy and 18–23 µs while idle CPUs poll instead of halting
// (docs/PERFORMANCE.md). Latency-critical services commonly hold such a
// request (tuned's latency-performance profile, trading and DPDK
// deployments): the cost is power, as idle CPUs spin in the kernel's idle
// loop; CPU time that a runnable thread wants is never taken from it.
//
// # Contract
//
// A request is system-wide and lasts while its holder keeps the file open:
// [Hold] writes the limit and keeps the descriptor; [Request.Close] (or the
// process's exit, even by SIGKILL) withdraws it. The kernel applies the
// smallest limit any holder asked for. Writing the device needs root or an
// explicit grant of its permissions; without them Hold returns an error that
// says so and nothing changes.
package pmqos

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"
)

// Device is the PM QoS file for CPU wake-up latency.
const Device = "/dev/cpu_dma_latency"

// Request is a held wake-up latency limit. Close withdraws it.
type Request struct {
	f     *os.File
	limit time.Duration
}

// Hold asks that no CPU take longer than limit to wake from idle, for as
// long as the returned Request stays open. A limit of 0 keeps idle CPUs
// polling. limit is rounded down to whole microseconds and must be at least
// 0 and at most 2^31-1 µs.
func Hold(limit time.Duration) (*Request, error) {
	us := limit / time.Microsecond
	if limit < 0 || us > 1<<31-1 {
		return nil, fmt.Errorf("pmqos: wake-up latency limit %v: want 0 to %v", limit, time.Duration(1<<31-1)*time.Microsecond)
	}
	f, err := os.OpenFile(Device, os.O_WRONLY, 0)
	if err != nil {
		if errors.Is(err, fs.ErrPermission) {
			return nil, fmt.Errorf("pmqos: %s: permission denied (needs root or write permission on the device): %w", Device, err)
		}
		return nil, fmt.Errorf("pmqos: %w", err)
	}
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], uint32(us))
	if _, err := f.Write(b[:]); err != nil {
		f.Close()
		return nil, fmt.Errorf("pmqos: writing the limit to %s: %w", Device, err)
	}
	return &Request{f: f, limit: us * time.Microsecond}, nil
}

// Limit returns the limit this request holds.
func (r *Request) Limit() time.Duration { return r.limit }

// Close withdraws the request. Closing twice is harmless.
func (r *Request) Close() error {
	if r == nil || r.f == nil {
		return nil
	}
	err := r.f.Close()
	r.f = nil
	return err
}

// Current returns the limit the kernel applies now: the smallest any holder
// asked for, or the kernel's default (2000 s) when nobody holds one.
func Current() (time.Duration, error) {
	b, err := os.ReadFile(Device)
	if err != nil {
		return 0, fmt.Errorf("pmqos: %w", err)
	}
	if len(b) < 4 {
		return 0, fmt.Errorf("pmqos: %s: read %d bytes, want 4", Device, len(b))
	}
	return time.Duration(binary.NativeEndian.Uint32(b)) * time.Microsecond, nil
}

// IdlePolicy describes the machine's CPU idle handling for a benchmark
// report: the cpuidle driver and governor and, for the haltpoll driver
// (virtual machines), how long a vCPU polls before halting. Parts that
// cannot be read are left out.
func IdlePolicy() string {
	read := func(p string) string {
		b, err := os.ReadFile(p)
		if err != nil {
			return ""
		}
		return strings.TrimSpace(string(b))
	}
	var parts []string
	if d := read("/sys/devices/system/cpu/cpuidle/current_driver"); d != "" {
		parts = append(parts, "cpuidle driver "+d)
	}
	if g := read("/sys/devices/system/cpu/cpuidle/current_governor"); g != "" {
		parts = append(parts, "governor "+g)
	}
	if p := read("/sys/module/haltpoll/parameters/guest_halt_poll_ns"); p != "" {
		parts = append(parts, "guest_halt_poll_ns "+p)
	}
	if len(parts) == 0 {
		return "unknown"
	}
	return strings.Join(parts, ", ")
}

// Flag is a flag.Value for a wake-up latency limit: a duration, or "off"
// (stored as -1) for no request.
type Flag struct{ D *time.Duration }

// String implements flag.Value.
func (f Flag) String() string {
	if f.D == nil || *f.D < 0 {
		return "off"
	}
	return f.D.String()
}

// Set implements flag.Value.
func (f Flag) Set(s string) error {
	if s == "off" {
		*f.D = -1
		return nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return fmt.Errorf("%q is not off or a duration of 0 or more (like 0 or 20us)", s)
	}
	*f.D = d
	return nil
}
