package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// machine is one QEMU guest: TCG (KVM does not work on the lab's machine
// class: /dev/kvm is a nested PVM that cannot run an unmodified kernel), no
// network device, the serial console on stdout.
type machine struct {
	QEMU    string   // qemu-system-x86_64
	Kernel  string   // an ELF vmlinux (PVH entry, boots fastest) or a bzImage
	Initrd  string   // one file; QEMU's x86 loader takes a single initrd
	Cmdline []string // kernel command line words
	MemMiB  int
	SMP     int
	NVDIMMs []nvdimm
	Shares  []share // 9p shares (virtio); the kernel needs 9p, 9pnet_virtio
}

// nvdimm is an emulated NVDIMM backed by a host file.
type nvdimm struct {
	ID      string // QEMU id suffix, e.g. "0"
	Path    string
	SizeMiB int
}

// share is a host directory exported to the guest over 9p.
type share struct {
	Path string
	Tag  string
}

// args returns QEMU's command line (without the program name).
func (m machine) args() []string {
	a := []string{
		"-nodefaults", "-no-user-config",
		"-display", "none",
		"-serial", "stdio",
		"-no-reboot",
		"-nic", "none",
		"-accel", "tcg,thread=multi",
		"-cpu", "max",
		"-smp", strconv.Itoa(m.SMP),
	}
	if len(m.NVDIMMs) > 0 {
		a = append(a, "-machine", "pc,nvdimm=on",
			"-m", fmt.Sprintf("%dM,slots=%d,maxmem=%dM", m.MemMiB, max(4, len(m.NVDIMMs)), m.MemMiB+8192))
	} else {
		a = append(a, "-machine", "pc", "-m", fmt.Sprintf("%dM", m.MemMiB))
	}
	for _, d := range m.NVDIMMs {
		a = append(a,
			"-object", fmt.Sprintf("memory-backend-file,id=nvm%s,share=on,mem-path=%s,size=%dM", d.ID, d.Path, d.SizeMiB),
			"-device", fmt.Sprintf("nvdimm,id=nv%s,memdev=nvm%s", d.ID, d.ID))
	}
	for _, s := range m.Shares {
		a = append(a, "-virtfs", fmt.Sprintf("local,path=%s,mount_tag=%s,security_model=none,readonly=on", s.Path, s.Tag))
	}
	a = append(a, "-kernel", m.Kernel)
	if m.Initrd != "" {
		a = append(a, "-initrd", m.Initrd)
	}
	a = append(a, "-append", strings.Join(m.Cmdline, " "))
	return a
}

// stepTiming is one guest step as the host saw it.
type stepTiming struct {
	Name       string
	RC         int     // -1 while running or when the guest died in it
	GuestSecs  float64 // guest uptime between begin and end, when known
	HostBegin  time.Duration
	HostEnd    time.Duration
	Optional   bool
	finished   bool
	guestBegin float64
}

// transcript is what a guest run produced.
type transcript struct {
	Lines    []string // console lines, in order
	Markers  []marker
	InitAt   time.Duration // host time from QEMU start to the init marker; 0 if never
	Steps    []*stepTiming
	Done     bool // the final marker was seen
	DoneRC   int
	ExitErr  error  // QEMU's exit status
	Timeout  string // which timeout fired, if any
	QEMUTime time.Duration
}

// failedStep returns the first step that ended non-zero or never ended.
func (t *transcript) failedStep() *stepTiming {
	for _, s := range t.Steps {
		if !s.finished || (s.RC != 0 && !s.Optional) {
			return s
		}
	}
	return nil
}

// observe updates the transcript with one console line at host time at.
func (t *transcript) observe(line string, at time.Duration) (marker, bool) {
	t.Lines = append(t.Lines, line)
	m, ok := parseMarker(line)
	if !ok {
		return m, false
	}
	t.Markers = append(t.Markers, m)
	switch m.Kind {
	case "init":
		if t.InitAt == 0 {
			t.InitAt = at
		}
	case "step":
		switch m.Phase {
		case "begin":
			t.Steps = append(t.Steps, &stepTiming{Name: m.Step, RC: -1, HostBegin: at, guestBegin: m.T})
		case "end":
			for i := len(t.Steps) - 1; i >= 0; i-- {
				s := t.Steps[i]
				if s.Name == m.Step && !s.finished {
					s.finished, s.RC, s.HostEnd = true, m.RC, at
					s.Optional = m.Fields["optional"] == "1"
					if m.HasT {
						s.GuestSecs = m.T - s.guestBegin
					}
					break
				}
			}
		}
	case "done":
		t.Done, t.DoneRC = true, m.RC
	}
	return m, true
}

// runGuest boots the machine and streams its console through p until the
// guest powers off or a timeout fires: bootTimeout until the init marker,
// total for the whole run. onMarker sees each marker as it arrives.
func runGuest(ctx context.Context, p *progress, m machine, bootTimeout, total time.Duration, onMarker func(marker)) (*transcript, error) {
	cmd := exec.Command(m.QEMU, m.args()...)
	cmd.Stdin = nil // /dev/null: the console is output only
	// If this program dies, QEMU must not spin on in TCG forever.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	type line struct {
		tag, text string
	}
	lines := make(chan line, 256)
	readDone := make(chan struct{}, 2)
	pump := func(tag string, r io.Reader) {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			lines <- line{tag, strings.TrimRight(sc.Text(), "\r")}
		}
		readDone <- struct{}{}
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", m.QEMU, err)
	}
	go pump("guest", stdout)
	go pump("qemu", stderr)

	t := &transcript{DoneRC: -1}
	bootTimer := time.NewTimer(bootTimeout)
	defer bootTimer.Stop()
	totalTimer := time.NewTimer(total)
	defer totalTimer.Stop()
	kill := func(why string) {
		if t.Timeout == "" {
			t.Timeout = why
		}
		cmd.Process.Kill()
	}
	open := 2
	for open > 0 {
		select {
		case l := <-lines:
			p.guest(l.tag, l.text)
			if l.tag != "guest" {
				continue
			}
			if mk, ok := t.observe(l.text, time.Since(start)); ok {
				if mk.Kind == "init" {
					bootTimer.Stop()
				}
				if onMarker != nil {
					onMarker(mk)
				}
			}
		case <-readDone:
			open--
		case <-bootTimer.C:
			if t.InitAt == 0 {
				kill(fmt.Sprintf("the guest did not reach init in %v", bootTimeout))
			}
		case <-totalTimer.C:
			kill(fmt.Sprintf("the guest run exceeded %v", total))
		case <-ctx.Done():
			kill("interrupted")
		}
	}
	// Drain what the pumps left in the channel.
	for {
		select {
		case l := <-lines:
			p.guest(l.tag, l.text)
			if l.tag == "guest" {
				t.observe(l.text, time.Since(start))
			}
			continue
		default:
		}
		break
	}
	t.ExitErr = cmd.Wait()
	t.QEMUTime = time.Since(start)
	return t, nil
}

// fileExists reports whether p exists (following links).
func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
