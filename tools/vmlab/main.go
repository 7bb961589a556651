package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

// Exit statuses.
const (
	exitPass  = 0 // passed, or skipped (a "SKIP: ..." line says why)
	exitFail  = 1 // the tests failed or the guest did not come up
	exitUsage = 2
	exitSkip  = 3 // skipped, with -strict
)

var scenarios = map[string]func() *scenario{
	"test-pmem": pmemScenario,
	"test-rdma": rdmaScenario,
}

func defaultCache() string {
	if d := os.Getenv("VESTA_VMLAB_CACHE"); d != "" {
		return d
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "vesta-vmlab")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".cache", "vesta-vmlab")
	}
	return filepath.Join(os.TempDir(), "vesta-vmlab")
}

func usage(fs *flag.FlagSet) {
	w := fs.Output()
	fmt.Fprintf(w, "usage: vmlab [flags] <scenario>\n\nscenarios:\n")
	names := make([]string, 0, len(scenarios))
	for n := range scenarios {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, scenarios[n]().Summary)
	}
	fmt.Fprintf(w, "\nexit status: 0 pass (or SKIP, printed), 1 fail, 2 usage, 3 SKIP with -strict\n\nflags:\n")
	fs.PrintDefaults()
}

func main() { os.Exit(realMain(os.Args[1:])) }

func realMain(args []string) int {
	fs := flag.NewFlagSet("vmlab", flag.ContinueOnError)
	var o options
	fs.StringVar(&o.Cache, "cache", defaultCache(), "cache `dir` for the kernel, modules, NVDIMM image and initramfs base (env VESTA_VMLAB_CACHE)")
	fs.StringVar(&o.KernelVer, "kernel", "", "Debian kernel `version` (default: what apt's linux-image-amd64 depends on)")
	fs.DurationVar(&o.Timeout, "timeout", 10*time.Minute, "limit for the whole guest run")
	fs.DurationVar(&o.BootTimeout, "boot-timeout", 3*time.Minute, "limit from QEMU's start to the guest's init")
	fs.DurationVar(&o.TestTimeout, "test-timeout", 8*time.Minute, "-test.timeout for the test binary in the guest")
	fs.StringVar(&o.TestRun, "run", "", "-test.run `regexp` for the test binary in the guest")
	fs.BoolVar(&o.Short, "short", false, "pass -test.short to the test binary")
	fs.StringVar(&o.Tags, "tags", "contracts", "build tags for the Go programs built for the guest")
	fs.IntVar(&o.MemMiB, "mem", 1024, "guest memory in MiB")
	fs.IntVar(&o.SMP, "smp", 2, "guest vCPUs")
	fs.BoolVar(&o.NoInstall, "no-install", false, "never run apt-get install/update (skip instead)")
	fs.BoolVar(&o.Quiet, "q", false, "do not echo the guest's console (its tail is printed on failure)")
	fs.BoolVar(&o.Keep, "keep", false, "keep the run directory (initrd, built binaries) in the cache")
	strict := fs.Bool("strict", false, "exit 3 instead of 0 when the lab has to skip")
	fs.Usage = func() { usage(fs) }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitPass
		}
		return exitUsage
	}
	if fs.NArg() != 1 || scenarios[fs.Arg(0)] == nil {
		usage(fs)
		return exitUsage
	}
	s := scenarios[fs.Arg(0)]()
	p := newProgress(os.Stdout)
	p.quiet = o.Quiet

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := runScenario(ctx, p, s, o)
	var skip *skipError
	if errors.As(err, &skip) {
		p.raw("SKIP: vmlab %s: %s", s.Name, skip.reason)
		if *strict {
			return exitSkip
		}
		return exitPass
	}
	if res != nil {
		summarize(p, res)
	}
	if err != nil {
		if o.Quiet && res != nil {
			lines := res.Transcript.Lines
			if len(lines) > 80 {
				lines = lines[len(lines)-80:]
			}
			p.raw("last %d lines of the guest console:", len(lines))
			for _, l := range lines {
				p.raw("guest| %s", l)
			}
		}
		p.raw("FAIL: vmlab %s after %.1fs: %v", s.Name, p.elapsed().Seconds(), err)
		return exitFail
	}
	p.raw("PASS: vmlab %s in %.1fs", s.Name, p.elapsed().Seconds())
	return exitPass
}

// summarize prints the scenario's report and the time each guest step took.
func summarize(p *progress, res *labResult) {
	t := res.Transcript
	for _, l := range res.Report {
		p.stepf("%s", l)
	}
	var parts []string
	if t.InitAt > 0 {
		parts = append(parts, fmt.Sprintf("boot to init %.1fs", t.InitAt.Seconds()))
	}
	for _, s := range t.Steps {
		d := (s.HostEnd - s.HostBegin).Seconds()
		if !s.finished {
			parts = append(parts, s.Name+" unfinished")
			continue
		}
		parts = append(parts, fmt.Sprintf("%s %.1fs", s.Name, d))
	}
	parts = append(parts, fmt.Sprintf("QEMU total %.1fs", t.QEMUTime.Seconds()))
	p.stepf("guest timings: %s", strings.Join(parts, ", "))
}
