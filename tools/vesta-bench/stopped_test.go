package main

import (
	"bytes"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// A cluster that stops serving fails the benchmark (issue 12, item 6): with
// pmem logs too small for the run and no checkpoints to free them
// (-checkpoint-bytes -1), every replica fails ("log full") soon after the
// start. vesta-bench used to print 0 ops/s for the rest of the run
// with "errors 0" and exit 0; now it stops, exits non-zero, and prints the
// replicas' last error lines.
func TestStoppedClusterFailsTheRun(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds and runs vesta-bench and three vestad processes; make test runs it")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "vesta-bench")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("building vesta-bench: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "-pmem-size", "16777216", "-checkpoint-bytes", "-1", "-pmem-dir", dir, "-data", filepath.Join(dir, "data"),
		"-duration", "60s", "-warmup", "1s", "-cpu-wake-latency", "off", "-sched", "normal")
	cmd.Dir = "."
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() == 0 {
		t.Fatalf("vesta-bench on a cluster that stopped: %v (want a non-zero exit)\n%s", err, out.String())
	}
	for _, want := range []string{"FAILED:", "the cluster stopped serving", "last error lines", "log full"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("the output does not say %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "60s measured") && !strings.Contains(out.String(), "stopped after") {
		t.Fatalf("the run went on:\n%s", out.String())
	}
}
