// Command vmlab boots Debian's stock kernel in QEMU and runs the project's
// tests where the host cannot: today package pmem's tests on an emulated
// NVDIMM mounted with -o dax, where MAP_SYNC must really be in force.
//
// Usage, from anywhere in the module:
//
//	go run ./tools/vmlab test-pmem          # what `make vmlab` (and `make test`) runs
//	go run ./tools/vmlab -q -run TestFile test-pmem
//	go run ./tools/vmlab -h
//
// Exit status: 0 when the guest's tests passed, and also when the lab
// cannot run on this host (a line "SKIP: vmlab <scenario>: <reason>" says
// why: not root and tools missing, no apt, packages that do not install, no
// kernel to download); 3 instead of 0 for a skip with -strict; 1 when the
// tests failed, a guest step failed, the guest did not come up or a timeout
// fired; 2 for bad usage.
//
// # What a run does
//
//  1. Host tools: qemu-system-x86_64 (qemu-system-x86), busybox
//     (busybox-static), ndctl, mke2fs (e2fsprogs), xz (xz-utils), ldd. Missing
//     ones are installed with apt-get install --no-install-recommends when
//     running as root, after apt-get update if the first try fails.
//  2. Kernel: the version linux-image-amd64 depends on (`apt-cache depends`),
//     fetched with `apt-get download` and unpacked with `dpkg-deb -x` into the
//     cache; the ELF vmlinux is extracted from the bzImage (payload fields of
//     the setup header, xz) and checked for a PVH entry note. Older cached
//     kernels are removed.
//  3. Modules: resolved in Go from each .ko's .modinfo (depends=, softdep
//     pre:, alias=) and modules.builtin; no depmod or modprobe on the host,
//     and none in the guest: /init insmods the files in dependency order.
//     The index is cached as modindex.json beside the kernel.
//  4. Initramfs: two newc archives written by Go into one file: a cached base
//     (busybox, ndctl and mke2fs with their ldd closure plus libgcc_s.so.1,
//     the modules) and a per-run archive (/init, the freshly built static Go
//     test binary and guestcheck). No staging tree: nothing is ever copied
//     through a busybox applet symlink onto the host's busybox.
//  5. Guest: qemu-system-x86_64 -accel tcg,thread=multi -cpu max -smp 2,
//     1 GiB, -nic none, -machine pc,nvdimm=on and a 256 MiB
//     memory-backend-file NVDIMM whose image lives in the cache. /init is
//     generated from named steps (initscript.go) framed by "@@VMLAB" marker
//     lines the host parses for progress, timings and failures.
//  6. test-pmem steps: mount /proc /sys devtmpfs; insmod libnvdimm nfit
//     nd_btt nd_pmem dax_pmem crc32c_generic jbd2 mbcache crc16 ext4; wait
//     for /dev/pmem0; convert a raw namespace to fsdax (once per image: ndctl
//     create-namespace -f -e namespace0.0 -m fsdax -M mem); mke2fs -b 4096;
//     mount -o dax; guestcheck (MAP_SHARED_VALIDATE|MAP_SYNC must succeed on
//     the mount, the file must carry STATX_ATTR_DAX, and MAP_SYNC must fail
//     with EOPNOTSUPP on tmpfs as a control); then
//     VESTA_PMEM_DIR=/mnt/pmem0 VESTA_PMEM_REQUIRE_DAX=1 pmem.test -test.v.
//     The host also requires a test log line "durability dax" under
//     /mnt/pmem0, so a renamed variable cannot silently test /dev/shm.
//
// # test-rdma (rdma.go)
//
// Host side: besides the common tools, gcc and iproute2 (ip, rdma), and
// the files of libibverbs-dev (headers, libibverbs.a, librxe-rdmav34.a),
// libnl-3-dev, libnl-route-3-dev and libc6-dev (HostFiles: installed like
// tools). Each suite in rdmaSuites (today cgo/verbs and rdma) is built with
// `go test -c -tags contracts,rdma,rdmastatic` as a fully static cgo binary
// (-ldflags '-linkmode external -extldflags "-static"', the rxe provider
// linked in), with -race (falling back to a build without, and saying
// so, if the race runtime ever fails to link statically), and, where the
// suite asks, a second time with GOEXPERIMENT=cgocheck2. Guest steps:
// insmod dummy crc32_generic ib_core ib_uverbs udp_tunnel ip6_udp_tunnel
// rdma_rxe; ip link add rxnet0 type dummy, 192.0.2.1/24, up; rdma link
// add rxe0 type rxe netdev rxnet0; wait for port 1 ACTIVE and
// /dev/infiniband/uverbs0; then each binary with VESTA_RDMA_REQUIRE=1
// VESTA_RDMA_DEVICE=rxe0 GODEBUG=cgocheck=1 -test.v, one step each. The
// host counts each step's PASS/FAIL/SKIP lines and prints them with a
// total ("RDMA tests in the guest: N passed, ..."). The third suite,
// cluster (tools/vestad's TestRDMACluster, built without -race for the
// guest's memory, with vestad and vesta-bench as static helper programs),
// runs 3 vestad over RDMA to 100,000 commands with the leader SIGKILLed
// and restarted, and prints a "cluster" marker the host requires
// (transport=rdma, linearizable=1); then TestRDMAAutoPartialDevices runs 3
// vestad with -transport auto where replica 3 names a device that does not
// exist, and checks that /status shows rdma between 1 and 2, tcp to and
// from 3, each with its reason, while the cluster commits. Then two steps run vesta-bench over
// TCP and over RDMA (benchArgs) for functional figures, and the host
// prints them with the verbs SEND/WRITE-with-immediate figures. A whole
// run with warm caches took 81–95 s here (the cluster test 34 s, each
// vesta-bench 8 s). Before the cluster suite, a run with a warm Go
// build cache took 15–20 s here (boot to init 3 s; verbs 2.4 s with -race,
// 0.9 s with cgocheck2; rdma 3.7 s with -race, once 20 s under load, 1–2 s
// with cgocheck2). With a cold build cache the cgocheck2 builds recompile
// the standard library for that experiment (about 45 s on 2 cores, once),
// and the first run adds about 2 s of apt-get install.
//
// The cache is $VESTA_VMLAB_CACHE, else $XDG_CACHE_HOME/vesta-vmlab, else
// ~/.cache/vesta-vmlab (flag -cache); runs sharing it are serialized by a
// lock, since two guests must never map one NVDIMM image.
//
// # Adding a scenario
//
// A scenario (scenario.go) lists host tools, programs to copy into the
// guest, modules by name or alias, Go programs to build, NVDIMMs, a step
// list and a verifier. test-rdma would add rdma_rxe and crc32_generic
// (rxe needs the crc32 shash: without it `rdma link add` fails with ENOENT),
// copy /usr/sbin/ip (called by full path: busybox's applets win over $PATH)
// and rdma-core's programs with the rxe provider (ibverbs-providers,
// libibverbs1, libnl-3-200, libnl-route-3-200 and the rxe.driver file, a
// GuestFiles entry), a step creating rxnet0 (dummy) and rxe0 on it, and a
// cgo test binary (static, or with its closure, as the facts note says).
//
// # Found on this machine class (Debian 12 userland, 2 vCPUs, no usable KVM)
//
//   - apt offered linux-image-6.1.0-48-amd64 (6.1.172-1); the 6.1.0-56
//     named in the lab notes is not in these package lists. QEMU 7.2.22
//     (1:7.2+dfsg-7+deb12u18+b2), ndctl 76.1, busybox-static 1.35.0,
//     e2fsprogs 1.47.0.
//   - Debian's 6.1 modules are uncompressed (CONFIG_MODULE_COMPRESS_NONE);
//     ext4 and jbd2 carry "softdep=pre: crypto-crc32c", an alias that both
//     crc32c_generic and crc32c_intel provide (the lab picks _generic);
//     CONFIG_DEVTMPFS_MOUNT is off, so /init mounts devtmpfs itself.
//   - The converted namespace reads "memory" in sysfs
//     (/sys/bus/nd/devices/namespace0.0/mode), not "fsdax" as ndctl says.
//   - mke2fs picks 1 KiB blocks for a volume under 512 MiB (the "small"
//     type); DAX needs the block size to equal the page size, hence -b 4096.
//   - ext4 shows the option as "dax=always" in /proc/mounts.
//   - Timings: installing qemu-system-x86, busybox-static and ndctl about
//     10 s; kernel download about 1 s and unpack 4–6 s (fast mirror);
//     initramfs base (16 MiB) 0.1 s; boot to init 3–6 s through PVH; the
//     pmem tests 40–85 s under TCG (6.5 s natively; the spread is the
//     shared machine's load); a cached run 45–100 s, a run from an empty
//     cache about 10 s more. QEMU's peak RSS about 500 MB.
package main
