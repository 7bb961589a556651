package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// scenario is one thing the lab can run in a guest. Adding one (test-rdma:
// the rxe modules plus crc32_generic, the rdma-core programs and their
// provider, steps that create the soft-RoCE device, a cgo test binary) means
// writing a new value of this type, not a new lab.
type scenario struct {
	Name    string
	Summary string
	// Tools are the host programs needed beyond the common ones; the
	// packages of missing ones are installed.
	Tools []hostTool
	// HostFiles are host files (headers, static libraries) needed to build
	// the Go programs; the packages of missing ones are installed.
	HostFiles []hostFile
	// GuestPrograms are Tools (by Cmd) copied into the guest with their
	// shared libraries, at their host paths.
	GuestPrograms []string
	// GuestFiles are host files copied when present (configuration).
	GuestFiles []string
	// Modules are the kernel modules to load, by name or alias; their
	// dependencies are resolved and loaded first.
	Modules []string
	// GoPrograms are built for every run, statically, into /vmlab/.
	GoPrograms []goProgram
	// NVDIMMs are emulated NVDIMMs backed by images in the cache.
	NVDIMMs []nvdimmSpec
	// Steps returns the guest's init steps.
	Steps func(env *runEnv) []step
	// Verify checks the transcript of a guest that finished all steps.
	Verify func(env *runEnv, t *transcript) error
	// Report summarizes the transcript in a few lines for the final verdict.
	Report func(t *transcript) []string
}

// goProgram is a Go program (or test binary) built for the guest.
type goProgram struct {
	Name string // file name under /vmlab/
	Pkg  string // package path relative to the module root, e.g. ./pmem
	Test bool   // go test -c instead of go build
	// Tags are build tags added to the run's -tags.
	Tags []string
	// Cgo builds with cgo, linked fully static (-linkmode external
	// -extldflags -static): the guest has no C libraries of its own.
	Cgo bool
	// Race adds -race (which needs Cgo).
	Race bool
	// RaceOptional builds without -race when the -race build fails (the
	// race runtime may not link statically), saying so; runEnv.Built
	// records what was built.
	RaceOptional bool
	// BuildEnv is added to the go command's environment (for example
	// GOEXPERIMENT=cgocheck2).
	BuildEnv []string
}

// nvdimmSpec is an NVDIMM image in the cache. The guest converts a fresh
// (raw) one to fsdax on first boot, and the image keeps that.
type nvdimmSpec struct {
	File    string
	SizeMiB int
}

// options are the command line's knobs.
type options struct {
	Cache       string
	KernelVer   string
	Timeout     time.Duration // whole guest run
	BootTimeout time.Duration // QEMU start to the init marker
	TestTimeout time.Duration // -test.timeout inside the guest
	TestRun     string        // -test.run
	Short       bool          // -test.short
	Tags        string
	MemMiB      int
	SMP         int
	NoInstall   bool
	Quiet       bool
	Keep        bool
}

// runEnv is what steps and checks may use.
type runEnv struct {
	Opts    options
	Kernel  *kernel
	Modules []*modInfo
	Tools   map[string]string
	// Built are the GoPrograms as built, by Name (Race false where an
	// optional -race build failed). Set before Steps is called.
	Built map[string]goProgram
}

// commonTools are needed by every scenario.
var commonTools = []hostTool{
	{Cmd: "qemu-system-x86_64", Pkg: "qemu-system-x86"},
	{Cmd: "busybox", Pkg: "busybox-static"},
	{Cmd: "ldd", Pkg: "libc-bin"},
	{Cmd: "xz", Pkg: "xz-utils"}, // Debian's bzImage payload is xz
}

// labResult is the outcome of one scenario run.
type labResult struct {
	Transcript *transcript
	Report     []string
}

// runScenario prepares everything and boots the guest. A *skipError means
// the host cannot run the lab.
func runScenario(ctx context.Context, p *progress, s *scenario, o options) (*labResult, error) {
	p.stepf("scenario %s: %s", s.Name, s.Summary)
	h := newHost(p, o.NoInstall)
	tools, err := h.ensureTools(append(append([]hostTool(nil), commonTools...), s.Tools...))
	if err != nil {
		return nil, err
	}
	if err := h.ensureFiles(s.HostFiles); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.Cache, 0o755); err != nil {
		return nil, skipf("cannot create the cache %s: %v", o.Cache, err)
	}
	unlock, err := lockCache(p, o.Cache)
	if err != nil {
		return nil, err
	}
	defer unlock()

	k, err := ensureKernel(h, o.Cache, o.KernelVer)
	if err != nil {
		return nil, err
	}
	t0 := time.Now()
	ix, err := loadModIndexCached(k)
	if err != nil {
		return nil, err
	}
	mods, err := ix.resolve(s.Modules)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(mods))
	for i, m := range mods {
		names[i] = m.Name
	}
	p.stepf("modules resolved in %.1fs: %s", time.Since(t0).Seconds(), strings.Join(names, " "))
	env := &runEnv{Opts: o, Kernel: k, Modules: mods, Tools: tools, Built: map[string]goProgram{}}

	var progs []string
	for _, c := range s.GuestPrograms {
		progs = append(progs, tools[c])
	}
	base, err := ensureBase(p, o.Cache, &baseSpec{Kernel: k, Modules: mods, Busybox: tools["busybox"], Programs: progs, Files: s.GuestFiles})
	if err != nil {
		return nil, err
	}

	runDir, err := os.MkdirTemp(o.Cache, "run-")
	if err != nil {
		return nil, err
	}
	if o.Keep {
		p.stepf("keeping the run directory %s", runDir)
	} else {
		defer os.RemoveAll(runDir)
	}
	root, err := moduleRoot()
	if err != nil {
		return nil, err
	}
	rt := newCpioTree()
	for _, g := range s.GoPrograms {
		t0 := time.Now()
		out := filepath.Join(runDir, g.Name)
		if err := buildGo(root, g, o.Tags, out); err != nil {
			if !g.Race || !g.RaceOptional {
				return nil, fmt.Errorf("building %s for the guest: %w", g.Pkg, err)
			}
			p.stepf("%s does not build with -race (%s); building it without", g.Name, firstLine(err.Error()))
			g.Race = false
			if err := buildGo(root, g, o.Tags, out); err != nil {
				return nil, fmt.Errorf("building %s for the guest: %w", g.Pkg, err)
			}
		}
		env.Built[g.Name] = g
		data, err := os.ReadFile(out)
		if err != nil {
			return nil, err
		}
		rt.File("vmlab/"+g.Name, 0o755, data)
		p.stepf("built %s (%s%s, %.1f MiB) in %.1fs", g.Name, g.Pkg, buildNote(g), float64(len(data))/(1<<20), time.Since(t0).Seconds())
	}
	script := &initScript{Steps: s.Steps(env)}
	text, err := script.render()
	if err != nil {
		return nil, err
	}
	rt.File("init", 0o755, []byte(text))
	initrd := filepath.Join(runDir, "initrd.cpio")
	if err := concatInitrd(initrd, base, rt); err != nil {
		return nil, err
	}

	m := machine{
		QEMU:    tools["qemu-system-x86_64"],
		Kernel:  k.bootImage(),
		Initrd:  initrd,
		Cmdline: []string{"console=ttyS0", "quiet", "loglevel=3", "panic=-1", "rdinit=/init", "mitigations=off"},
		MemMiB:  o.MemMiB,
		SMP:     o.SMP,
	}
	for i, d := range s.NVDIMMs {
		img, err := ensureNVDIMMImage(p, o.Cache, d)
		if err != nil {
			return nil, err
		}
		m.NVDIMMs = append(m.NVDIMMs, nvdimm{ID: fmt.Sprint(i), Path: img, SizeMiB: d.SizeMiB})
	}
	p.stepf("booting %s (TCG, %d vCPUs, %d MiB; kernel %s)", filepath.Base(m.Kernel), m.SMP, m.MemMiB, k.Version)
	t, err := runGuest(ctx, p, m, o.BootTimeout, o.Timeout, func(mk marker) {
		switch {
		case mk.Kind == "init":
			p.stepf("guest init is running")
		case mk.Kind == "step" && mk.Phase == "begin":
			p.stepf("guest step %s", mk.Step)
		case mk.Kind == "step" && mk.Phase == "end" && mk.RC != 0:
			p.stepf("guest step %s FAILED (rc=%d)", mk.Step, mk.RC)
		}
	})
	if err != nil {
		return nil, err
	}
	res := &labResult{Transcript: t}
	if s.Report != nil {
		res.Report = s.Report(t)
	}
	return res, judge(env, s, t)
}

// judge turns a transcript into nil (pass) or the reason it failed.
func judge(env *runEnv, s *scenario, t *transcript) error {
	switch {
	case t.InitAt == 0 && t.Timeout != "":
		return errors.New(t.Timeout)
	case t.InitAt == 0:
		return fmt.Errorf("the guest never reached init (QEMU exited: %v)", t.ExitErr)
	}
	if f := t.failedStep(); f != nil {
		if !f.finished {
			why := t.Timeout
			if why == "" {
				why = fmt.Sprintf("the guest stopped (QEMU exited: %v)", t.ExitErr)
			}
			return fmt.Errorf("guest step %s did not finish: %s", f.Name, why)
		}
		return fmt.Errorf("guest step %s failed (rc=%d)", f.Name, f.RC)
	}
	if t.Timeout != "" {
		return errors.New(t.Timeout)
	}
	if !t.Done || t.DoneRC != 0 {
		return fmt.Errorf("the guest did not finish cleanly (done=%v rc=%d, QEMU: %v)", t.Done, t.DoneRC, t.ExitErr)
	}
	if s.Verify != nil {
		return s.Verify(env, t)
	}
	return nil
}

func goTool() string {
	if p, ok := lookTool("go"); ok {
		return p
	}
	return "/usr/local/go/bin/go"
}

// moduleRoot is the directory of the main module (scenario packages are
// relative to it), wherever in the tree vmlab was started.
func moduleRoot() (string, error) {
	out, err := exec.Command(goTool(), "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside a Go module: run vmlab from the vesta tree")
	}
	return filepath.Dir(mod), nil
}

// buildGo builds a program or test binary for the guest in the module at
// root: pure Go, static, so that it needs nothing from the initramfs.
func buildGo(root string, g goProgram, tags, out string) error {
	args := []string{"build"}
	if g.Test {
		args = []string{"test", "-c"}
	}
	if tags = joinTags(tags, g.Tags); tags != "" {
		args = append(args, "-tags", tags)
	}
	cgo := "CGO_ENABLED=0"
	if g.Cgo {
		cgo = "CGO_ENABLED=1"
		args = append(args, "-ldflags", staticCgoLDFlags)
	}
	if g.Race {
		args = append(args, "-race")
	}
	args = append(args, "-o", out, g.Pkg)
	cmd := exec.Command(goTool(), args...)
	cmd.Dir = root
	cmd.Env = append(append(os.Environ(), cgo, "GOOS=linux", "GOARCH=amd64"), g.BuildEnv...)
	var b bytes.Buffer
	cmd.Stdout, cmd.Stderr = &b, &b
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, tail(b.String(), 30))
	}
	return nil
}

// concatInitrd writes the base archive followed by the run archive.
func concatInitrd(dst, base string, rt *cpioTree) error {
	b, err := os.ReadFile(base)
	if err != nil {
		return err
	}
	f, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	// Inode numbers distinct from the base archive's.
	if err := rt.WriteTo(f, 1<<24); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// ensureNVDIMMImage creates a sparse image of the right size when there is
// none (the guest then converts it to fsdax, once).
func ensureNVDIMMImage(p *progress, cache string, d nvdimmSpec) (string, error) {
	path := filepath.Join(cache, d.File)
	size := int64(d.SizeMiB) << 20
	if fi, err := os.Stat(path); err == nil && fi.Size() == size {
		return path, nil
	}
	os.Remove(path)
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return "", err
	}
	p.stepf("created NVDIMM image %s (%d MiB, raw until the guest converts it)", path, d.SizeMiB)
	return path, f.Close()
}

// lockCache serializes lab runs that share a cache (they share the NVDIMM
// image, which two guests must never map at once).
func lockCache(p *progress, cache string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(cache, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		p.stepf("waiting for another vmlab run that holds %s", f.Name())
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
			f.Close()
			return nil, err
		}
	}
	return func() { f.Close() }, nil
}
