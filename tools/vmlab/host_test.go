package main

import (
	"errors"
	"io"
	"os"
	"strings"
	"testing"
)

func TestMissingToolWithoutInstallSkips(t *testing.T) {
	h := newHost(newProgress(io.Discard), true)
	_, err := h.ensureTools([]hostTool{{Cmd: "vmlab-no-such-tool", Pkg: "vmlab-no-such-package"}})
	var skip *skipError
	if !errors.As(err, &skip) || !strings.Contains(skip.reason, "vmlab-no-such-tool") || !strings.Contains(skip.reason, "-no-install") {
		t.Fatalf("got %v", err)
	}
	h = newHost(newProgress(io.Discard), false)
	h.root = false
	_, err = h.ensureTools([]hostTool{{Cmd: "vmlab-no-such-tool", Pkg: "p"}})
	if !errors.As(err, &skip) || !strings.Contains(skip.reason, "not running as root") {
		t.Fatalf("not root: %v", err)
	}
}

// A lab that cannot run exits 0 (3 with -strict) after a SKIP line, and
// never gets as far as the cache.
func TestRealMainSkipExitCodes(t *testing.T) {
	scenarios["test-skip"] = func() *scenario {
		return &scenario{Name: "test-skip", Summary: "needs a tool nobody has",
			Tools: []hostTool{{Cmd: "vmlab-no-such-tool", Pkg: "p"}}}
	}
	defer delete(scenarios, "test-skip")
	cache := t.TempDir() + "/never"
	stdout := os.Stdout
	r, w, _ := os.Pipe()
	os.Stdout = w
	code := realMain([]string{"-no-install", "-cache", cache, "test-skip"})
	strict := realMain([]string{"-no-install", "-strict", "-cache", cache, "test-skip"})
	usage := realMain([]string{"-no-install", "no-such-scenario"})
	w.Close()
	os.Stdout = stdout
	out, _ := io.ReadAll(r)
	if code != exitPass || strict != exitSkip || usage != exitUsage {
		t.Errorf("exit codes %d %d %d, want %d %d %d", code, strict, usage, exitPass, exitSkip, exitUsage)
	}
	if !strings.Contains(string(out), "SKIP: vmlab test-skip: missing ") {
		t.Errorf("no SKIP line in:\n%s", out)
	}
	if fileExists(cache) {
		t.Error("a skipped run created the cache")
	}
}
