package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// skipError means the lab cannot run on this host (not a failure of the
// code under test): the program prints "SKIP: <reason>".
type skipError struct{ reason string }

func (e *skipError) Error() string { return e.reason }

func skipf(format string, args ...any) error {
	return &skipError{fmt.Sprintf(format, args...)}
}

// hostTool is a program the lab needs on the host, and the Debian package
// that provides it.
type hostTool struct {
	Cmd string // name looked up in PATH and the sbin directories
	Pkg string
}

// lookTool finds a command in PATH or the usual sbin directories (root's
// PATH under make or CI may lack them).
func lookTool(name string) (string, bool) {
	if p, err := exec.LookPath(name); err == nil {
		if a, err := filepath.Abs(p); err == nil {
			return a, true
		}
		return p, true
	}
	for _, d := range []string{"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"} {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, true
		}
	}
	return "", false
}

// host knows whether it may install, and does.
type host struct {
	p         *progress
	root      bool
	noInstall bool
	updated   bool // apt-get update ran in this process
}

func newHost(p *progress, noInstall bool) *host {
	return &host{p: p, root: os.Geteuid() == 0, noInstall: noInstall}
}

// ensureTools returns the path of every tool, installing the packages of
// missing ones with apt-get when running as root.
func (h *host) ensureTools(tools []hostTool) (map[string]string, error) {
	paths := map[string]string{}
	var missing []hostTool
	for _, t := range tools {
		if p, ok := lookTool(t.Cmd); ok {
			paths[t.Cmd] = p
		} else {
			missing = append(missing, t)
		}
	}
	if len(missing) == 0 {
		return paths, nil
	}
	var pkgs, cmds []string
	seen := map[string]bool{}
	for _, t := range missing {
		cmds = append(cmds, t.Cmd)
		if !seen[t.Pkg] {
			seen[t.Pkg] = true
			pkgs = append(pkgs, t.Pkg)
		}
	}
	if err := h.canInstall(); err != nil {
		return nil, skipf("missing %s (Debian packages %s) and %v", strings.Join(cmds, ", "), strings.Join(pkgs, " "), err)
	}
	if err := h.aptInstall(pkgs); err != nil {
		return nil, skipf("missing %s and could not install %s: %v", strings.Join(cmds, ", "), strings.Join(pkgs, " "), err)
	}
	for _, t := range missing {
		p, ok := lookTool(t.Cmd)
		if !ok {
			return nil, skipf("installed %s but %s is still not found", t.Pkg, t.Cmd)
		}
		paths[t.Cmd] = p
	}
	return paths, nil
}

// canInstall says why apt cannot be used, or nil.
func (h *host) canInstall() error {
	if h.noInstall {
		return errors.New("installing is off (-no-install)")
	}
	if !h.root {
		return errors.New("not running as root, so cannot install them")
	}
	if _, ok := lookTool("apt-get"); !ok {
		return errors.New("there is no apt-get")
	}
	return nil
}

// apt runs apt-get (or apt-cache) non-interactively, returning its output.
func (h *host) apt(tool string, args ...string) (string, error) {
	path, ok := lookTool(tool)
	if !ok {
		return "", fmt.Errorf("no %s", tool)
	}
	cmd := exec.Command(path, args...)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("%s %s: %w\n%s", tool, strings.Join(args, " "), err, tail(out.String(), 12))
	}
	return out.String(), nil
}

// aptUpdate runs apt-get update once per process.
func (h *host) aptUpdate() error {
	if h.updated {
		return nil
	}
	if err := h.canInstall(); err != nil {
		return err
	}
	t0 := time.Now()
	h.p.stepf("apt-get update")
	_, err := h.apt("apt-get", "update")
	h.updated = err == nil
	if err == nil {
		h.p.stepf("apt-get update done in %.1fs", time.Since(t0).Seconds())
	}
	return err
}

// aptInstall installs packages, running apt-get update first when the
// first try fails (a fresh machine has no package lists, an old one stale
// ones).
func (h *host) aptInstall(pkgs []string) error {
	t0 := time.Now()
	h.p.stepf("installing %s (apt-get)", strings.Join(pkgs, " "))
	args := append([]string{"install", "-y", "-q", "--no-install-recommends"}, pkgs...)
	if _, err := h.apt("apt-get", args...); err != nil {
		if uerr := h.aptUpdate(); uerr != nil {
			return fmt.Errorf("%v; apt-get update: %v", err, uerr)
		}
		if _, err := h.apt("apt-get", args...); err != nil {
			return err
		}
	}
	h.p.stepf("installed %s in %.1fs", strings.Join(pkgs, " "), time.Since(t0).Seconds())
	return nil
}

// run runs a host command, returning its combined output on failure.
func run(dir, name string, args ...string) error {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, tail(out.String(), 20))
	}
	return nil
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	ls := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return strings.Join(ls, "\n")
}
