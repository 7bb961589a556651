package main

import (
	"strings"
	"testing"
)

func TestMachineArgs(t *testing.T) {
	m := machine{
		QEMU: "qemu-system-x86_64", Kernel: "/c/vmlinux", Initrd: "/c/initrd.cpio",
		Cmdline: []string{"console=ttyS0", "quiet"}, MemMiB: 1024, SMP: 2,
		NVDIMMs: []nvdimm{{ID: "0", Path: "/c/nv.img", SizeMiB: 256}},
	}
	a := strings.Join(m.args(), " ")
	for _, want := range []string{
		"-nic none",
		"-accel tcg,thread=multi -cpu max -smp 2",
		"-machine pc,nvdimm=on -m 1024M,slots=4,maxmem=9216M",
		"-object memory-backend-file,id=nvm0,share=on,mem-path=/c/nv.img,size=256M -device nvdimm,id=nv0,memdev=nvm0",
		"-kernel /c/vmlinux -initrd /c/initrd.cpio -append console=ttyS0 quiet",
		"-serial stdio",
		"-no-reboot",
	} {
		if !strings.Contains(a, want) {
			t.Errorf("args lack %q:\n%s", want, a)
		}
	}
	if strings.Contains(a, "kvm") {
		t.Errorf("KVM asked for: %s", a)
	}
	m.NVDIMMs = nil
	m.Shares = []share{{Path: "/h/dir", Tag: "share"}}
	a = strings.Join(m.args(), " ")
	if !strings.Contains(a, "-machine pc -m 1024M") || !strings.Contains(a, "-virtfs local,path=/h/dir,mount_tag=share,security_model=none,readonly=on") {
		t.Errorf("without NVDIMM, with a share:\n%s", a)
	}
}

func TestLddDeps(t *testing.T) {
	out := `	linux-vdso.so.1 (0x00007ffd8b9f0000)
	libndctl.so.6 => /lib/x86_64-linux-gnu/libndctl.so.6 (0x00007f0e5c5d0000)
	libuuid.so.1 => /lib/x86_64-linux-gnu/libuuid.so.1 (0x00007f0e5c5c0000)
	libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0e5c3d0000)
	/lib64/ld-linux-x86-64.so.2 (0x00007f0e5c640000)
`
	got := strings.Join(lddDeps(out), " ")
	want := "/lib/x86_64-linux-gnu/libndctl.so.6 /lib/x86_64-linux-gnu/libuuid.so.1 /lib/x86_64-linux-gnu/libc.so.6 /lib64/ld-linux-x86-64.so.2"
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	if d := lddDeps("\tnot a dynamic executable\n"); len(d) != 0 {
		t.Errorf("static: %v", d)
	}
	if d := lddDeps("\tstatically linked\n"); len(d) != 0 {
		t.Errorf("static-pie: %v", d)
	}
}

func TestPmemStepsAndVerify(t *testing.T) {
	env := &runEnv{
		Opts:    options{TestTimeout: 300e9, TestRun: "TestFile"},
		Kernel:  &kernel{Version: "6.1.0-48-amd64"},
		Modules: []*modInfo{{Name: "nfit", Path: "kernel/nfit.ko"}},
		Tools:   map[string]string{"ndctl": "/usr/bin/ndctl", "mke2fs": "/usr/sbin/mke2fs"},
	}
	text, err := (&initScript{Steps: pmemSteps(env)}).render()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"/usr/bin/ndctl create-namespace -f -e namespace0.0 -m fsdax -M mem",
		"/usr/sbin/mke2fs -t ext4 -q -F -b 4096",
		"mount -t ext4 -o dax /dev/pmem0 /mnt/pmem0",
		"/vmlab/guestcheck -dax /mnt/pmem0 -control /tmp",
		"env VESTA_PMEM_DIR=/mnt/pmem0 VESTA_PMEM_REQUIRE_DAX=1 /vmlab/pmem.test -test.v -test.count=1 -test.timeout=300s -test.run=TestFile",
		"vmlab_run umount umount optional",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("init lacks %q", want)
		}
	}
	tr := &transcript{}
	tr.observe("@@VMLAB check mapsync=refused dir=/tmp err=EOPNOTSUPP control=ok", 0)
	env.Opts.TestRun = ""
	if err := pmemVerify(env, tr); err == nil {
		t.Error("passed without a MAP_SYNC ok")
	}
	tr.observe("@@VMLAB check mapsync=ok dir=/mnt/pmem0 statx_dax=1", 0)
	if err := pmemVerify(env, tr); err == nil || !strings.Contains(err.Error(), "VESTA_PMEM_DIR") {
		t.Errorf("passed without a dax log in the tests: %v", err)
	}
	tr.observe("    file_test.go:70: /mnt/pmem0/vesta-pmem-test-1/mode.log: durability dax (), flush clwb", 0)
	if err := pmemVerify(env, tr); err != nil {
		t.Error(err)
	}
}
