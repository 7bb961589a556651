package pmqos

import (
	"errors"
	"io/fs"
	"os"
	"testing"
	"time"
)

func TestHoldRefusesBadLimits(t *testing.T) {
	for _, d := range []time.Duration{-time.Microsecond, time.Duration(1<<31) * time.Microsecond} {
		if r, err := Hold(d); err == nil {
			r.Close()
			t.Errorf("Hold(%v) = nil error, want a range error", d)
		}
	}
}

// TestHoldAndRelease uses the real device: it needs Linux and root, which
// `make test` has in CI. Without them it checks the error names the device.
func TestHoldAndRelease(t *testing.T) {
	if _, err := os.Stat(Device); err != nil {
		t.Skipf("%s not present on this system: %v", Device, err)
	}
	before, err := Current()
	if err != nil {
		t.Fatal(err)
	}
	r, err := Hold(0)
	if errors.Is(err, fs.ErrPermission) {
		t.Skipf("not permitted to write %s: %v", Device, err)
	}
	if err != nil {
		t.Fatal(err)
	}
	if got, err := Current(); err != nil || got != 0 {
		t.Errorf("while held at 0: Current() = %v, %v; want 0", got, err)
	}
	if r.Limit() != 0 {
		t.Errorf("Limit() = %v, want 0", r.Limit())
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if got, err := Current(); err != nil || got != before {
		t.Errorf("after Close: Current() = %v, %v; want %v as before", got, err, before)
	}
}

func TestIdlePolicyDescribes(t *testing.T) {
	if p := IdlePolicy(); p == "" {
		t.Error("IdlePolicy() is empty; want a description or \"unknown\"")
	}
}

func TestFlag(t *testing.T) {
	var d time.Duration
	f := Flag{D: &d}
	for in, want := range map[string]time.Duration{"off": -1, "0": 0, "20us": 20 * time.Microsecond} {
		if err := f.Set(in); err != nil || d != want {
			t.Errorf("Set(%q): d = %v, err %v; want %v", in, d, err, want)
		}
	}
	for _, bad := range []string{"-1s", "soon", ""} {
		if err := f.Set(bad); err == nil {
			t.Errorf("Set(%q) = nil error, want one", bad)
		}
	}
	d = -1
	if f.String() != "off" {
		t.Errorf("String() = %q, want off", f.String())
	}
}
