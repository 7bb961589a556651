package main

import (
	"bytes"
	"debug/elf"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Kernel modules are resolved on the host, in Go, from each module's
// .modinfo section (the "depends=" list modpost writes, the "softdep=" lines
// and the "alias=" lines) and the package's modules.builtin. This is what
// depmod reads too, but it needs neither kmod on the host nor a depmod run,
// and it is immune to ndctl's modprobe hook in /etc/modprobe.d (a pitfall of
// `modprobe --show-depends` noted in the lab facts). The guest then insmods
// the files in the resolved order; no modprobe runs there.

// modInfo is what the lab needs from one module's .modinfo section.
type modInfo struct {
	Name    string   // "name=", or the file name with '-' as '_'
	Path    string   // path relative to lib/modules/<version>
	Depends []string // hard dependencies, loaded first
	SoftPre []string // softdep "pre:" names (module names or aliases)
	Aliases []string
}

// parseModinfo parses the NUL-separated key=value strings of a .modinfo
// section. fileName names the module when the section lacks "name=".
func parseModinfo(section []byte, fileName string) modInfo {
	mi := modInfo{}
	for _, kv := range bytes.Split(section, []byte{0}) {
		k, v, ok := strings.Cut(string(kv), "=")
		if !ok {
			continue
		}
		switch k {
		case "name":
			mi.Name = v
		case "depends":
			for _, d := range strings.Split(v, ",") {
				if d = strings.TrimSpace(d); d != "" {
					mi.Depends = append(mi.Depends, d)
				}
			}
		case "softdep":
			mi.SoftPre = append(mi.SoftPre, parseSoftdep(v)...)
		case "alias":
			mi.Aliases = append(mi.Aliases, v)
		}
	}
	if mi.Name == "" {
		mi.Name = moduleNameFromFile(fileName)
	}
	return mi
}

// parseSoftdep returns the "pre:" names of a softdep value such as
// "pre: crypto-crc32c post: foo".
func parseSoftdep(v string) []string {
	var pre []string
	in := false
	for _, f := range strings.Fields(v) {
		switch f {
		case "pre:":
			in = true
		case "post:":
			in = false
		default:
			if in {
				pre = append(pre, f)
			}
		}
	}
	return pre
}

// moduleNameFromFile turns ".../crc32c-intel.ko" into "crc32c_intel".
func moduleNameFromFile(p string) string {
	b := filepath.Base(p)
	for _, ext := range []string{".ko.xz", ".ko.zst", ".ko.gz", ".ko"} {
		b = strings.TrimSuffix(b, ext)
	}
	return strings.ReplaceAll(b, "-", "_")
}

// normModName makes '-' and '_' equivalent, as the kernel does.
func normModName(n string) string { return strings.ReplaceAll(n, "-", "_") }

// modIndex is every module of one kernel.
type modIndex struct {
	Mods    map[string]*modInfo // by normalized name
	Builtin map[string]bool     // built-in modules, by normalized name
	Aliases map[string][]string // alias -> module names providing it
}

func newModIndex() *modIndex {
	return &modIndex{Mods: map[string]*modInfo{}, Builtin: map[string]bool{}, Aliases: map[string][]string{}}
}

func (ix *modIndex) add(mi modInfo) {
	mi.Name = normModName(mi.Name)
	ix.Mods[mi.Name] = &mi
	for _, a := range mi.Aliases {
		ix.Aliases[a] = append(ix.Aliases[a], mi.Name)
	}
}

// loadModIndex reads every module under moddir (lib/modules/<version>).
// Uncompressed modules only: Debian 12's kernel is built with
// CONFIG_MODULE_COMPRESS_NONE, and busybox insmod could not load others.
func loadModIndex(moddir string) (*modIndex, error) {
	ix := newModIndex()
	if b, err := os.ReadFile(filepath.Join(moddir, "modules.builtin")); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if l = strings.TrimSpace(l); l != "" {
				ix.Builtin[moduleNameFromFile(l)] = true
			}
		}
	}
	err := filepath.WalkDir(filepath.Join(moddir, "kernel"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !strings.HasSuffix(p, ".ko") {
			return nil
		}
		sec, err := readModinfoSection(p)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		rel, _ := filepath.Rel(moddir, p)
		mi := parseModinfo(sec, p)
		mi.Path = rel
		ix.add(mi)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(ix.Mods) == 0 {
		return nil, fmt.Errorf("no modules (*.ko) under %s", moddir)
	}
	return ix, nil
}

func readModinfoSection(p string) ([]byte, error) {
	f, err := elf.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	s := f.Section(".modinfo")
	if s == nil {
		return nil, fmt.Errorf("no .modinfo section")
	}
	return s.Data()
}

// lookup finds the module for a name or an alias. An alias provided by
// several modules resolves to "<alias>_generic" when that is one of them
// (the portable implementation, e.g. crc32c_generic rather than
// crc32c_intel), else to the first by name. ok is false for built-ins and
// for names nothing provides.
func (ix *modIndex) lookup(name string) (mi *modInfo, builtin bool, ok bool) {
	n := normModName(name)
	if m, ok := ix.Mods[n]; ok {
		return m, false, true
	}
	if ix.Builtin[n] {
		return nil, true, false
	}
	prov := append([]string(nil), ix.Aliases[name]...)
	if len(prov) == 0 {
		return nil, false, false
	}
	sort.Strings(prov)
	pick := prov[0]
	for _, p := range prov {
		if p == normModName(name)+"_generic" || p == strings.TrimPrefix(normModName(name), "crypto_")+"_generic" {
			pick = p
		}
	}
	return ix.Mods[pick], false, true
}

// resolve returns the modules to load, in an order where every module
// comes after its hard dependencies and its softdep "pre:" modules. Wanted
// names may be module names or aliases; a wanted name that is built in is
// skipped, one that nothing provides is an error. A softdep that nothing
// provides is skipped (it is a hint, and may be built in under another
// name). A cycle is an error.
func (ix *modIndex) resolve(want []string) ([]*modInfo, error) {
	var order []*modInfo
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(name string, chain []string, soft bool) error
	visit = func(name string, chain []string, soft bool) error {
		mi, builtin, ok := ix.lookup(name)
		if builtin {
			return nil
		}
		if !ok {
			if soft {
				return nil
			}
			return fmt.Errorf("module %q not found (wanted via %s)", name, strings.Join(append(chain, name), " -> "))
		}
		switch state[mi.Name] {
		case 2:
			return nil
		case 1:
			return fmt.Errorf("module dependency cycle: %s", strings.Join(append(chain, mi.Name), " -> "))
		}
		state[mi.Name] = 1
		chain = append(chain, mi.Name)
		for _, d := range mi.SoftPre {
			if err := visit(d, chain, true); err != nil {
				return err
			}
		}
		for _, d := range mi.Depends {
			if err := visit(d, chain, false); err != nil {
				return err
			}
		}
		state[mi.Name] = 2
		order = append(order, mi)
		return nil
	}
	for _, w := range want {
		if err := visit(w, nil, false); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// loadModIndexCached reads the index saved next to the unpacked kernel, or
// builds and saves it (reading 4000 modules takes a few seconds).
func loadModIndexCached(k *kernel) (*modIndex, error) {
	p := filepath.Join(k.Dir, "modindex.json")
	if b, err := os.ReadFile(p); err == nil {
		ix := newModIndex()
		if json.Unmarshal(b, ix) == nil && len(ix.Mods) > 0 {
			return ix, nil
		}
	}
	ix, err := loadModIndex(k.ModDir)
	if err != nil {
		return nil, err
	}
	if b, err := json.Marshal(ix); err == nil {
		if os.WriteFile(p+".tmp", b, 0o644) == nil {
			os.Rename(p+".tmp", p)
		}
	}
	return ix, nil
}
