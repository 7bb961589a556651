package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Sizing the replicas' pmem logs for a run. Until snapshots exist a log keeps
// every record, so it must hold the whole run: a 64 B put takes about 125 B
// of log (the command with its session fields, plus the entry headers
// amortized over a batch).
const (
	// pmemAutoRate is the rate the automatic size allows for, above the
	// fastest this harness has measured on two cores (1.45 M ops/s).
	pmemAutoRate = 1.6e6
	// pmemPerOpOverhead is the log bytes per put besides its value.
	pmemPerOpOverhead = 64
	// pmemAutoMargin covers start-up, the drain after the measured window
	// and a slow start of the clock.
	pmemAutoMargin = 5 * time.Second
	pmemAutoMin    = 256 << 20
	pmemAutoRound  = 64 << 20
	// pmemMinLatency is less than any replicated write takes here (a
	// loopback round trip alone is ~20 µs): a closed loop with n operations
	// in flight completes at most n of them per pmemMinLatency.
	pmemMinLatency = 10 * time.Microsecond
)

// pmemRunRate is the most operations a second the run can complete, for
// sizing its logs: pmemAutoRate, or less when the load says so. An open loop
// offers rate a second (a quarter more allows for catching up); a closed loop
// with inflight operations in flight in all completes at most inflight per
// pmemMinLatency. An unloaded run (one in flight) so gets logs of a few
// hundred MiB instead of gigabytes that vestad would prefault, and the
// machine clear, for nothing.
func pmemRunRate(rate float64, inflight int) float64 {
	if rate > 0 {
		return min(pmemAutoRate, rate*1.25)
	}
	return min(pmemAutoRate, float64(inflight)*float64(time.Second/pmemMinLatency))
}

// pmemAutoSize returns the log size of each of replicas logs in dir for a run
// of warmup plus duration with values of size bytes: what rate operations a
// second (pmemRunRate) would write, capped so that every log fits in 90% of
// the space dir has free and, on tmpfs (whose pages are memory, all of them
// touched when vestad prefaults its log), in 60% of the available memory.
// It says which decided.
func pmemAutoSize(dir string, replicas, size int, rate float64, warmup, duration time.Duration) (int64, string, error) {
	secs := (warmup + duration + pmemAutoMargin).Seconds()
	want := int64(secs * rate * float64(size+pmemPerOpOverhead))
	want = max(pmemAutoMin, (want+pmemAutoRound-1)/pmemAutoRound*pmemAutoRound)
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err != nil {
		return 0, "", fmt.Errorf("-pmem-dir %s: %w", dir, err)
	}
	free := int64(fs.Bavail) * int64(fs.Bsize) / 10 * 9
	if fs.Type == unix.TMPFS_MAGIC {
		if avail, ok := memAvailable(); ok {
			free = min(free, avail/10*6)
		}
	}
	room := free / int64(replicas) / pmemAutoRound * pmemAutoRound
	if room < pmemAutoMin {
		return 0, "", fmt.Errorf("-pmem-dir %s: %d MiB usable, too little for %d logs of at least %d MiB; free space (or memory) or pass -pmem-size",
			dir, free>>20, replicas, pmemAutoMin>>20)
	}
	if want > room {
		return room, fmt.Sprintf("%d MiB per replica, all that %s (or memory) has room for (a run at %.2f M ops/s would need %d MiB; it stops with a full log past that)",
			room>>20, dir, rate/1e6, want>>20), nil
	}
	return want, fmt.Sprintf("%d MiB per replica, sized for %.2f M ops/s over the run", want>>20, rate/1e6), nil
}

// memAvailable reads MemAvailable from /proc/meminfo, in bytes.
func memAvailable() (int64, bool) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "MemAvailable:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10, err == nil
		}
	}
	return 0, false
}
