package main

import (
	"fmt"
	"strings"
)

// The guest-side paths of test-pmem.
const (
	pmemDev   = "/dev/pmem0"
	pmemMount = "/mnt/pmem0"
)

// pmemScenario runs package pmem's tests on an emulated NVDIMM in fsdax
// mode, mounted with -o dax, where MAP_SYNC must be in force.
func pmemScenario() *scenario {
	return &scenario{
		Name:    "test-pmem",
		Summary: "package pmem's tests on ext4 -o dax over an emulated NVDIMM (MAP_SYNC required)",
		Tools: []hostTool{
			{Cmd: "ndctl", Pkg: "ndctl"},
			{Cmd: "mke2fs", Pkg: "e2fsprogs"},
		},
		GuestPrograms: []string{"ndctl", "mke2fs"},
		GuestFiles:    []string{"/etc/mke2fs.conf"},
		// nfit finds the NVDIMM in the ACPI tables, nd_pmem makes
		// /dev/pmem0 (and the fsdax pfn device), dax_pmem is the devdax
		// driver ndctl expects to find; ext4's softdep pulls in crc32c.
		Modules: []string{"nfit", "nd_pmem", "dax_pmem", "ext4"},
		GoPrograms: []goProgram{
			{Name: "pmem.test", Pkg: "./pmem", Test: true},
			{Name: "guestcheck", Pkg: "./tools/vmlab/guestcheck"},
		},
		NVDIMMs: []nvdimmSpec{{File: "nvdimm0-256M.img", SizeMiB: 256}},
		Steps:   pmemSteps,
		Verify:  pmemVerify,
		Report:  pmemReport,
	}
}

func pmemSteps(env *runEnv) []step {
	ndctl, mke2fs := env.Tools["ndctl"], env.Tools["mke2fs"]
	testArgs := []string{"/vmlab/pmem.test", "-test.v", "-test.count=1",
		fmt.Sprintf("-test.timeout=%ds", int(env.Opts.TestTimeout.Seconds()))}
	if env.Opts.TestRun != "" {
		testArgs = append(testArgs, "-test.run="+env.Opts.TestRun)
	}
	if env.Opts.Short {
		testArgs = append(testArgs, "-test.short")
	}
	return []step{
		stepMountPseudoFS(),
		stepLoadModules("load-modules", env.Kernel.Version, env.Modules),
		stepWaitFor("wait-pmem", pmemDev, 30),
		{Name: "fsdax-namespace", Script: fmt.Sprintf(`ns=/sys/bus/nd/devices/namespace0.0
# sysfs says "memory" for what ndctl calls fsdax (a pfn device in front of
# the namespace); "raw" for a fresh image.
mode=$(cat $ns/mode)
echo "namespace0.0 mode: $mode"
if [ "$mode" != fsdax ] && [ "$mode" != memory ]; then
	# A fresh image is a raw namespace, where mount -o dax fails with
	# EINVAL. Convert it once; the image keeps the fsdax info block.
	%s create-namespace -f -e namespace0.0 -m fsdax -M mem
	i=0
	while [ ! -e %[2]s ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
	mode=$(cat $ns/mode)
	echo "namespace0.0 mode now: $mode"
	echo "%[3]s nvdimm converted=fsdax"
fi
[ "$mode" = fsdax ] || [ "$mode" = memory ]
echo "%[2]s: dax=$(cat /sys/block/pmem0/queue/dax 2>/dev/null) size=$(cat /sys/block/pmem0/size) sectors"`, shellQuote(ndctl), pmemDev, markerPrefix)},
		// A fresh file system every run: nothing left over from an earlier
		// (perhaps killed) run. DAX needs the block size to be the page size;
		// mke2fs would pick 1 KiB blocks for a volume this small.
		{Name: "mkfs", Script: shellJoin(mke2fs, "-t", "ext4", "-q", "-F", "-b", "4096", "-E", "nodiscard", pmemDev)},
		{Name: "mount-dax", Script: fmt.Sprintf(`mkdir -p %[2]s
mount -t ext4 -o dax %[1]s %[2]s
grep ' %[2]s ' /proc/mounts`, pmemDev, pmemMount)},
		{Name: "check-mapsync", Script: shellJoin("/vmlab/guestcheck", "-dax", pmemMount, "-control", "/tmp")},
		{Name: "pmem-tests", Script: "env VESTA_PMEM_DIR=" + pmemMount + " VESTA_PMEM_REQUIRE_DAX=1 " + shellJoin(testArgs...)},
		{Name: "umount", Script: "umount " + pmemMount, Optional: true},
	}
}

// pmemVerify checks, beyond every step passing, that the independent
// MAP_SYNC check passed and that the pmem tests really ran a log in dax
// mode under the mount (so a renamed environment variable cannot turn the
// run into a silent test of /dev/shm).
func pmemVerify(env *runEnv, t *transcript) error {
	ok := false
	for _, m := range t.Markers {
		if m.Kind == "check" && m.Fields["mapsync"] == "ok" && m.Fields["dir"] == pmemMount {
			ok = true
		}
	}
	if !ok {
		return fmt.Errorf("the guest's MAP_SYNC check on %s did not report ok", pmemMount)
	}
	for _, l := range t.Lines {
		if strings.Contains(l, pmemMount+"/") && strings.Contains(l, "durability dax") {
			return nil
		}
	}
	if env.Opts.TestRun != "" {
		return nil // a filtered run may skip the test that logs the mode
	}
	return fmt.Errorf("no pmem test reported a log with \"durability dax\" under %s: is VESTA_PMEM_DIR still the variable the tests read?", pmemMount)
}

func pmemReport(t *transcript) []string {
	var r []string
	for _, m := range t.Markers {
		if m.Kind == "check" {
			var kv []string
			for _, k := range []string{"mapsync", "dir", "fs", "statx_dax", "mount_dax", "err"} {
				if v, ok := m.Fields[k]; ok {
					kv = append(kv, k+"="+v)
				}
			}
			if v, ok := m.Fields["control"]; ok {
				kv = append(kv, "control="+v)
			}
			r = append(r, "MAP_SYNC check: "+strings.Join(kv, " "))
		}
		if m.Kind == "nvdimm" {
			r = append(r, "NVDIMM image converted to fsdax in this run")
		}
	}
	pass, fail, skip := 0, 0, 0
	for _, l := range t.Lines {
		switch {
		case strings.HasPrefix(l, "--- PASS"):
			pass++
		case strings.HasPrefix(l, "--- FAIL"):
			fail++
		case strings.HasPrefix(l, "--- SKIP"):
			skip++
		}
	}
	r = append(r, fmt.Sprintf("pmem tests in the guest: %d passed, %d failed, %d skipped", pass, fail, skip))
	for _, l := range t.Lines {
		if strings.HasPrefix(l, "pmem crash exploration:") || strings.HasPrefix(l, "pmem bit flips:") {
			r = append(r, l)
		}
	}
	return r
}
