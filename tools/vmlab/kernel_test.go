package main

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"strings"
	"testing"
)

func TestParseKernelDepends(t *testing.T) {
	out := "linux-image-amd64\n  Depends: linux-image-6.1.0-48-amd64\n"
	if v := parseKernelDepends(out); v != "6.1.0-48-amd64" {
		t.Errorf("got %q", v)
	}
	if v := parseKernelDepends("linux-image-amd64\n  Depends: <linux-image-6.1.0-56-amd64>\n"); v != "6.1.0-56-amd64" {
		t.Errorf("virtual: got %q", v)
	}
	if v := parseKernelDepends("E: No packages found\n"); v != "" {
		t.Errorf("nothing: got %q", v)
	}
	if v := parseKernelDepends("x\n  Depends: linux-image-6.1.0-48-amd64-unsigned\n  Depends: linux-image-6.1.0-48-amd64\n"); v != "6.1.0-48-amd64" {
		t.Errorf("skips near misses: got %q", v)
	}
}

// fakeBzImage builds the parts of a bzImage that bzImagePayload reads.
func fakeBzImage(setupSects byte, payload []byte) []byte {
	pm := (int(setupSects) + 1) * 512
	if setupSects == 0 {
		pm = 5 * 512
	}
	b := make([]byte, pm+64+len(payload)+32)
	b[0x1f1] = setupSects
	copy(b[0x202:], "HdrS")
	binary.LittleEndian.PutUint16(b[0x206:], 0x20f)
	binary.LittleEndian.PutUint32(b[0x248:], 64)
	binary.LittleEndian.PutUint32(b[0x24c:], uint32(len(payload)))
	copy(b[pm+64:], payload)
	return b
}

func TestBzImagePayload(t *testing.T) {
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	zw.Write([]byte(strings.Repeat("kernel", 100)))
	zw.Close()
	got, format, olen, err := bzImagePayload(fakeBzImage(27, z.Bytes()))
	if err != nil || format != "gzip" || olen != 600 || !bytes.Equal(got, z.Bytes()) {
		t.Errorf("gzip: %v %q olen %d", err, format, olen)
	}
	xz := append([]byte("\xfd7zXZ\x00 fake stream"), 0x10, 0x20, 0, 0) // size appended
	_, format, olen, err = bzImagePayload(fakeBzImage(0, xz))
	if err != nil || format != "xz" || olen != 0x2010 {
		t.Errorf("xz: %v %q olen %#x", err, format, olen)
	}
	if _, _, _, err := bzImagePayload([]byte("MZ not a kernel")); err == nil {
		t.Error("garbage accepted")
	}
	bad := fakeBzImage(27, []byte("????????"))
	if _, _, _, err := bzImagePayload(bad); err == nil {
		t.Error("unknown compression accepted")
	}
	short := fakeBzImage(27, xz)
	binary.LittleEndian.PutUint32(short[0x24c:], 1<<30)
	if _, _, _, err := bzImagePayload(short); err == nil {
		t.Error("payload past the end accepted")
	}
}

func TestCheckPVHRejectsNonELF(t *testing.T) {
	if err := checkPVH([]byte("not an elf")); err == nil {
		t.Error("accepted")
	}
}
