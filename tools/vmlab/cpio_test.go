package main

import (
	"bytes"
	"strconv"
	"testing"
)

type readEntry struct {
	name string
	mode uint32
	ino  uint32
	data string
}

// readNewc is a minimal newc reader for checking the writer.
func readNewc(t *testing.T, b []byte) []readEntry {
	t.Helper()
	var out []readEntry
	off := 0
	align := func() { off = (off + 3) &^ 3 }
	for {
		if off+110 > len(b) {
			t.Fatalf("truncated header at %d", off)
		}
		h := b[off : off+110]
		if string(h[:6]) != "070701" {
			t.Fatalf("bad magic %q at %d", h[:6], off)
		}
		field := func(i int) uint32 {
			v, err := strconv.ParseUint(string(h[6+8*i:14+8*i]), 16, 32)
			if err != nil {
				t.Fatal(err)
			}
			return uint32(v)
		}
		ino, mode, size, namesize := field(0), field(1), int(field(6)), int(field(11))
		off += 110
		name := string(b[off : off+namesize-1])
		if b[off+namesize-1] != 0 {
			t.Fatalf("name %q not NUL-terminated", name)
		}
		off += namesize
		align()
		data := string(b[off : off+size])
		off += size
		align()
		if name == "TRAILER!!!" {
			if len(b)%512 != 0 {
				t.Errorf("archive of %d bytes is not padded to 512", len(b))
			}
			return out
		}
		out = append(out, readEntry{name, mode, ino, data})
	}
}

func TestCpioRoundTrip(t *testing.T) {
	tr := newCpioTree()
	tr.File("/usr/bin/ndctl", 0o755, []byte("ELF..."))
	tr.File("init", 0o755, []byte("#!/bin/sh\n"))
	tr.Symlink("bin/sh", "busybox")
	tr.Dir("/proc")
	tr.File("etc/odd", 0o644, []byte("abc")) // a size that needs padding
	tr.File("etc/odd", 0o600, []byte("abcd"))
	var buf bytes.Buffer
	if err := tr.WriteTo(&buf, 100); err != nil {
		t.Fatal(err)
	}
	got := readNewc(t, buf.Bytes())
	want := []readEntry{
		{"bin", cpioModeDir | 0o755, 101, ""},
		{"bin/sh", cpioModeSymlink | 0o777, 102, "busybox"},
		{"etc", cpioModeDir | 0o755, 103, ""},
		{"etc/odd", cpioModeFile | 0o600, 104, "abcd"},
		{"init", cpioModeFile | 0o755, 105, "#!/bin/sh\n"},
		{"proc", cpioModeDir | 0o755, 106, ""},
		{"usr", cpioModeDir | 0o755, 107, ""},
		{"usr/bin", cpioModeDir | 0o755, 108, ""},
		{"usr/bin/ndctl", cpioModeFile | 0o755, 109, "ELF..."},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d entries, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("entry %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
	if !tr.Has("/usr/bin") || tr.Has("usr/lib") {
		t.Error("Has")
	}
}
