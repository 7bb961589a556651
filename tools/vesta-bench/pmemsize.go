package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Sizing the replicas' pmem logs. Checkpoints free a log's space (vestad
// compacts it below the older of the two checkpoints it keeps and
// checkpoints every third of the log by default, so the log holds about
// two thirds at most), so a log needs to hold a few checkpoints' worth, not the
// run: its default size is fixed, and a 20 s run and a 20 min run start
// alike (vestad prefaults the whole file at start). Each checkpoint costs
// the cluster a few tens of ms of CPU per replica (the kv image, ~7 MB at
// 100 000 keys): at 1 M ops/s a third of 1 GiB passes every ~4 s.
const (
	// pmemDefaultSize is each replica's log when -pmem-size is 0.
	pmemDefaultSize = 1 << 30
	// pmemMinSize is the least the default shrinks to where the directory
	// (or, on tmpfs, memory) has less room.
	pmemMinSize = 64 << 20
	pmemRound   = 16 << 20
)

// pmemAutoSize returns the log size of each of replicas logs in dir:
// pmemDefaultSize, or less where it does not fit in 90% of the space dir has
// free and, on tmpfs (whose pages are memory, all of them touched when
// vestad prefaults its log), in 60% of the available memory. It says which
// decided.
func pmemAutoSize(dir string, replicas int) (int64, string, error) {
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
	room := free / int64(replicas) / pmemRound * pmemRound
	if room < pmemMinSize {
		return 0, "", fmt.Errorf("-pmem-dir %s: %d MiB usable, too little for %d logs of at least %d MiB; free space (or memory) or pass -pmem-size",
			dir, free>>20, replicas, pmemMinSize>>20)
	}
	if room < pmemDefaultSize {
		return room, fmt.Sprintf("%d MiB per replica, all that %s (or memory) has room for", room>>20, dir), nil
	}
	return pmemDefaultSize, fmt.Sprintf("%d MiB per replica (the default; checkpoints every %d MiB keep it from filling)", pmemDefaultSize>>20, pmemDefaultSize/3>>20), nil
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
