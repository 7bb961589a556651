package main

import (
	"os/exec"
	"strings"
	"testing"
)

func TestRenderFramesEachStepWithMarkers(t *testing.T) {
	s := &initScript{
		Env: []string{"A=1", "B=two words"},
		Steps: []step{
			{Name: "first", Script: "echo one\necho two"},
			{Name: "second-step", Script: "false", Optional: true},
			{Name: "third", Script: ""},
		},
	}
	text, err := s.render()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"#!/bin/sh\n",
		"export A=1\n",
		"export B='two words'\n",
		"vmlab_step_first() {\n\techo one\n\techo two\n}\n",
		"vmlab_step_second_step() {\n\tfalse\n}\n",
		"vmlab_step_third() {\n\t:\n}\n", // an empty body is a syntax error in sh
		"vmlab_run first first\nvmlab_run second-step second_step optional\nvmlab_run third third\nvmlab_finish 0\n",
		`( set -e; "vmlab_step_$2" )`,
		`echo "@@VMLAB step=$1 end rc=$rc t=$(vmlab_up)${3:+ optional=1}"`,
		`echo "@@VMLAB init t=$(vmlab_up)"`,
		"poweroff -f",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("script lacks %q:\n%s", want, text)
		}
	}
	// The init marker comes after every function definition and before the
	// first step runs.
	if i, j := strings.Index(text, "@@VMLAB init"), strings.LastIndex(text, "vmlab_step_third() {"); i < j {
		t.Errorf("init marker before the step definitions")
	}
	// Parse only (never run it here: it powers the machine off).
	if sh, err := exec.LookPath("sh"); err == nil {
		cmd := exec.Command(sh, "-n")
		cmd.Stdin = strings.NewReader(text)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("sh -n: %v: %s", err, out)
		}
	}
}

func TestRenderRejectsBadStepNames(t *testing.T) {
	for _, steps := range [][]step{
		{{Name: "Bad"}},
		{{Name: "has space"}},
		{{Name: "-lead"}},
		{{Name: "a;b"}},
		{{Name: "dup"}, {Name: "dup"}},
	} {
		if _, err := (&initScript{Steps: steps}).render(); err == nil {
			t.Errorf("steps %+v accepted", steps)
		}
	}
	if _, err := (&initScript{Env: []string{"1X=a"}}).render(); err == nil {
		t.Error("bad environment name accepted")
	}
}

func TestLoadModulesStepKeepsOrder(t *testing.T) {
	mods := []*modInfo{
		{Name: "libnvdimm", Path: "kernel/drivers/nvdimm/libnvdimm.ko"},
		{Name: "nfit", Path: "kernel/drivers/acpi/nfit/nfit.ko"},
	}
	st := stepLoadModules("load", "6.1.0-1-amd64", mods)
	i := strings.Index(st.Script, "insmod /lib/modules/6.1.0-1-amd64/kernel/drivers/nvdimm/libnvdimm.ko")
	j := strings.Index(st.Script, "insmod /lib/modules/6.1.0-1-amd64/kernel/drivers/acpi/nfit/nfit.ko")
	if i < 0 || j < 0 || i > j {
		t.Fatalf("insmod lines missing or out of order:\n%s", st.Script)
	}
	if !strings.Contains(st.Script, "grep -q '^nfit ' /proc/modules") {
		t.Errorf("an already loaded module is not tolerated:\n%s", st.Script)
	}
}

func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{
		"plain":           "plain",
		"/a/b-c.d":        "/a/b-c.d",
		"-test.run=^X$":   `'-test.run=^X$'`,
		"it's":            `'it'\''s'`,
		"":                "''",
		"a b":             "'a b'",
		"$(reboot)":       "'$(reboot)'",
		"VAR=/mnt/pmem0":  "VAR=/mnt/pmem0",
		"-test.timeout=5": "-test.timeout=5",
	} {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %s, want %s", in, got, want)
		}
	}
}
