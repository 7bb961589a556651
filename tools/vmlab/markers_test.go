package main

import (
	"testing"
	"time"
)

func TestParseMarker(t *testing.T) {
	m, ok := parseMarker("@@VMLAB step=load-modules end rc=3 t=1.50")
	if !ok || m.Kind != "step" || m.Step != "load-modules" || m.Phase != "end" || m.RC != 3 || !m.HasT || m.T != 1.5 {
		t.Errorf("step end: %+v %v", m, ok)
	}
	m, ok = parseMarker("[    3.5] some kernel text@@VMLAB init t=?")
	if !ok || m.Kind != "init" || m.HasT || m.RC != -1 {
		t.Errorf("init after kernel text: %+v %v", m, ok)
	}
	m, ok = parseMarker("@@VMLAB check mapsync=ok dir=/mnt/pmem0 statx_dax=1")
	if !ok || m.Kind != "check" || m.Fields["mapsync"] != "ok" || m.Fields["dir"] != "/mnt/pmem0" {
		t.Errorf("check: %+v %v", m, ok)
	}
	for _, l := range []string{"", "plain output", "@@VMLAB", "@@VMLABX init", "@@VMLAB   "} {
		if m, ok := parseMarker(l); ok {
			t.Errorf("%q parsed as %+v", l, m)
		}
	}
}

func TestTranscriptFollowsSteps(t *testing.T) {
	tr := &transcript{DoneRC: -1}
	for i, l := range []string{
		"booting...",
		"@@VMLAB init t=?",
		"@@VMLAB step=a begin t=1.0",
		"output of a",
		"@@VMLAB step=a end rc=0 t=1.5",
		"@@VMLAB step=b begin t=1.5",
		"@@VMLAB step=b end rc=2 t=4.0",
		"@@VMLAB done rc=2 t=4.0",
	} {
		tr.observe(l, time.Duration(i+1)*time.Second)
	}
	if tr.InitAt != 2*time.Second || len(tr.Lines) != 8 || len(tr.Markers) != 6 {
		t.Fatalf("transcript: init %v, %d lines, %d markers", tr.InitAt, len(tr.Lines), len(tr.Markers))
	}
	if len(tr.Steps) != 2 || tr.Steps[0].RC != 0 || tr.Steps[1].RC != 2 || tr.Steps[1].GuestSecs != 2.5 {
		t.Fatalf("steps: %+v %+v", tr.Steps[0], tr.Steps[1])
	}
	if f := tr.failedStep(); f == nil || f.Name != "b" {
		t.Fatalf("failed step %+v", f)
	}
	if !tr.Done || tr.DoneRC != 2 {
		t.Errorf("done %v rc %d", tr.Done, tr.DoneRC)
	}
	err := judge(&runEnv{}, &scenario{}, tr)
	if err == nil || err.Error() != "guest step b failed (rc=2)" {
		t.Errorf("judge: %v", err)
	}
}

func TestJudge(t *testing.T) {
	s := &scenario{}
	never := &transcript{Timeout: "the guest did not reach init in 1s"}
	if err := judge(&runEnv{}, s, never); err == nil || err.Error() != never.Timeout {
		t.Errorf("no init: %v", err)
	}
	hung := &transcript{InitAt: time.Second, Timeout: "the guest run exceeded 1m0s"}
	hung.observe("@@VMLAB step=tests begin t=1", 2*time.Second)
	if err := judge(&runEnv{}, s, hung); err == nil || err.Error() != "guest step tests did not finish: the guest run exceeded 1m0s" {
		t.Errorf("hung step: %v", err)
	}
	opt := &transcript{InitAt: time.Second}
	opt.observe("@@VMLAB step=x begin t=1", 2*time.Second)
	opt.observe("@@VMLAB step=x end rc=1 t=2 optional=1", 2*time.Second)
	opt.observe("@@VMLAB done rc=0", 3*time.Second)
	if err := judge(&runEnv{}, s, opt); err != nil {
		t.Errorf("optional failure: %v", err)
	}
	noDone := &transcript{InitAt: time.Second, DoneRC: -1}
	if err := judge(&runEnv{}, s, noDone); err == nil {
		t.Error("a guest that never printed done passed")
	}
}
