package main

import (
	"strings"
)

// hostFile is a file the lab needs on the host that is not a program
// (a header, a static library), and the Debian package that provides it.
type hostFile struct {
	Path string
	Pkg  string
}

// ensureFiles installs the packages of missing files with apt-get when
// running as root; elsewhere, or when that fails, the lab skips.
func (h *host) ensureFiles(files []hostFile) error {
	var missing, pkgs []string
	seen := map[string]bool{}
	for _, f := range files {
		if fileExists(f.Path) {
			continue
		}
		missing = append(missing, f.Path)
		if !seen[f.Pkg] {
			seen[f.Pkg] = true
			pkgs = append(pkgs, f.Pkg)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if err := h.canInstall(); err != nil {
		return skipf("missing %s (Debian packages %s) and %v", strings.Join(missing, ", "), strings.Join(pkgs, " "), err)
	}
	if err := h.aptInstall(pkgs); err != nil {
		return skipf("missing %s and could not install %s: %v", strings.Join(missing, ", "), strings.Join(pkgs, " "), err)
	}
	for _, f := range files {
		if !fileExists(f.Path) {
			return skipf("installed %s but %s is still missing", f.Pkg, f.Path)
		}
	}
	return nil
}

// staticCgoLDFlags links a cgo program fully static: the guest's
// initramfs carries no C libraries for it. glibc warns that getaddrinfo
// and getprotobyname would need its shared libraries at run time (libnl
// refers to them); nothing the tests run calls them.
const staticCgoLDFlags = `-linkmode external -extldflags "-static"`

// joinTags adds extra build tags to a comma-separated list.
func joinTags(tags string, extra []string) string {
	var all []string
	seen := map[string]bool{}
	for _, t := range append(strings.Split(tags, ","), extra...) {
		if t = strings.TrimSpace(t); t != "" && !seen[t] {
			seen[t] = true
			all = append(all, t)
		}
	}
	return strings.Join(all, ",")
}

// buildNote describes how a program was built beyond the defaults.
func buildNote(g goProgram) string {
	var n []string
	if len(g.Tags) > 0 {
		n = append(n, "+tags "+strings.Join(g.Tags, ","))
	}
	if g.Cgo {
		n = append(n, "cgo static")
	}
	if g.Race {
		n = append(n, "-race")
	}
	n = append(n, g.BuildEnv...)
	if len(n) == 0 {
		return ""
	}
	return "; " + strings.Join(n, ", ")
}
