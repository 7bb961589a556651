package main

import (
	"strings"
	"testing"
)

func modinfoBytes(kv ...string) []byte {
	return []byte(strings.Join(kv, "\x00") + "\x00")
}

func TestParseModinfo(t *testing.T) {
	mi := parseModinfo(modinfoBytes(
		"softdep=pre: crypto-crc32c post: foo",
		"license=GPL",
		"alias=fs-ext4",
		"alias=ext3",
		"depends=jbd2,mbcache,crc16",
		"name=ext4",
		"vermagic=6.1.0-48-amd64 SMP preempt mod_unload modversions ",
	), "/x/ext4.ko")
	if mi.Name != "ext4" || strings.Join(mi.Depends, ",") != "jbd2,mbcache,crc16" ||
		strings.Join(mi.SoftPre, ",") != "crypto-crc32c" || strings.Join(mi.Aliases, ",") != "fs-ext4,ext3" {
		t.Errorf("%+v", mi)
	}
	mi = parseModinfo(modinfoBytes("depends=", "license=GPL"), "/x/crc32c-intel.ko")
	if mi.Name != "crc32c_intel" || len(mi.Depends) != 0 {
		t.Errorf("no name, empty depends: %+v", mi)
	}
}

func TestParseSoftdep(t *testing.T) {
	for in, want := range map[string]string{
		"pre: a b":            "a,b",
		"post: x pre: a":      "a",
		"pre: a post: x":      "a",
		"post: x":             "",
		"pre:  crypto-crc32c": "crypto-crc32c",
	} {
		if got := strings.Join(parseSoftdep(in), ","); got != want {
			t.Errorf("parseSoftdep(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestModuleNameFromFile(t *testing.T) {
	for in, want := range map[string]string{
		"kernel/arch/x86/crypto/crc32c-intel.ko": "crc32c_intel",
		"nd_pmem.ko":                             "nd_pmem",
		"kernel/lib/crc32.ko":                    "crc32",
		"foo-bar.ko.xz":                          "foo_bar",
	} {
		if got := moduleNameFromFile(in); got != want {
			t.Errorf("%s: %s, want %s", in, got, want)
		}
	}
}

// testIndex mirrors the dependencies of Debian 12's 6.1 kernel for the
// modules the lab loads.
func testIndex() *modIndex {
	ix := newModIndex()
	for _, m := range []modInfo{
		{Name: "libnvdimm"},
		{Name: "nfit", Depends: []string{"libnvdimm"}},
		{Name: "nd_btt", Depends: []string{"libnvdimm"}},
		{Name: "nd_pmem", Depends: []string{"libnvdimm", "nd_btt"}},
		{Name: "dax_pmem", Depends: []string{"libnvdimm"}},
		{Name: "jbd2", SoftPre: []string{"crypto-crc32c"}},
		{Name: "mbcache"},
		{Name: "crc16"},
		{Name: "ext4", Depends: []string{"jbd2", "mbcache", "crc16"}, SoftPre: []string{"crypto-crc32c"}, Aliases: []string{"fs-ext4"}},
		{Name: "crc32c_intel", Aliases: []string{"crypto-crc32c", "crc32c"}},
		{Name: "crc32c_generic", Aliases: []string{"crypto-crc32c", "crc32c"}},
		{Name: "crc32_generic", Aliases: []string{"crypto-crc32", "crc32"}},
		{Name: "ib_core"},
		{Name: "ib_uverbs", Depends: []string{"ib_core"}},
		{Name: "udp_tunnel"},
		{Name: "ip6_udp_tunnel"},
		{Name: "rdma_rxe", Depends: []string{"ib_uverbs", "ib_core", "udp_tunnel", "ip6_udp_tunnel"}},
		{Name: "cyc_a", Depends: []string{"cyc_b"}},
		{Name: "cyc_b", Depends: []string{"cyc_a"}},
		{Name: "wants_missing", Depends: []string{"nowhere"}},
		{Name: "soft_missing", SoftPre: []string{"nowhere"}},
	} {
		m.Path = "kernel/" + m.Name + ".ko"
		ix.add(m)
	}
	ix.Builtin["dax"] = true
	ix.Builtin["crc32"] = true
	return ix
}

func names(ms []*modInfo) string {
	s := make([]string, len(ms))
	for i, m := range ms {
		s[i] = m.Name
	}
	return strings.Join(s, " ")
}

func TestResolveOrdersDependenciesFirst(t *testing.T) {
	got, err := testIndex().resolve([]string{"nfit", "nd_pmem", "dax_pmem", "ext4"})
	if err != nil {
		t.Fatal(err)
	}
	// The order the real lab run printed for Debian's 6.1.0-48 kernel.
	want := "libnvdimm nfit nd_btt nd_pmem dax_pmem crc32c_generic jbd2 mbcache crc16 ext4"
	if names(got) != want {
		t.Errorf("got  %s\nwant %s", names(got), want)
	}
}

func TestResolveAliasesBuiltinsAndExtras(t *testing.T) {
	ix := testIndex()
	got, err := ix.resolve([]string{"crc32", "crc32_generic", "rdma_rxe", "fs-ext4", "dax"})
	if err != nil {
		t.Fatal(err)
	}
	// crc32 is built in; crc32_generic (the soft-RoCE pitfall) is asked
	// for by name; fs-ext4 is an alias; rdma_rxe's dependencies come first.
	want := "crc32_generic ib_core ib_uverbs udp_tunnel ip6_udp_tunnel rdma_rxe crc32c_generic jbd2 mbcache crc16 ext4"
	if names(got) != want {
		t.Errorf("got  %s\nwant %s", names(got), want)
	}
	if m, _, ok := ix.lookup("crc32c"); !ok || m.Name != "crc32c_generic" {
		t.Errorf("alias crc32c resolved to %+v", m)
	}
}

func TestResolveErrors(t *testing.T) {
	ix := testIndex()
	if _, err := ix.resolve([]string{"cyc_a"}); err == nil || !strings.Contains(err.Error(), "cycle: cyc_a -> cyc_b -> cyc_a") {
		t.Errorf("cycle: %v", err)
	}
	if _, err := ix.resolve([]string{"wants_missing"}); err == nil || !strings.Contains(err.Error(), "wants_missing -> nowhere") {
		t.Errorf("missing dependency: %v", err)
	}
	if _, err := ix.resolve([]string{"no_such_module"}); err == nil {
		t.Error("unknown module accepted")
	}
	if got, err := ix.resolve([]string{"soft_missing"}); err != nil || names(got) != "soft_missing" {
		t.Errorf("missing softdep: %v %v", names(got), err)
	}
}
