package main

import (
	"strings"
	"testing"
	"time"
)

func TestPmemRunRate(t *testing.T) {
	cases := []struct {
		rate     float64
		inflight int
		want     float64
	}{
		{0, 4 * 512, pmemAutoRate}, // the default load: the most measured, and more
		{0, 1, 1e5},                // unloaded: one per 10 µs at most
		{1000, 1, 1250},            // open loop: its rate, a quarter more
		{1e9, 1, pmemAutoRate},     // never above the automatic rate
	}
	for _, c := range cases {
		if got := pmemRunRate(c.rate, c.inflight); got != c.want {
			t.Errorf("pmemRunRate(%v, %d) = %v, want %v", c.rate, c.inflight, got, c.want)
		}
	}
}

func TestPmemAutoSizeFollowsTheRate(t *testing.T) {
	dir := t.TempDir()
	small, _, err := pmemAutoSize(dir, 3, 64, pmemRunRate(0, 1), 2*time.Second, 8*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if small != pmemAutoMin {
		t.Errorf("unloaded 10 s run: %d MiB per replica, want the minimum %d MiB", small>>20, pmemAutoMin>>20)
	}
	big, why, err := pmemAutoSize(dir, 1, 64, 1e5, time.Second, 60*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// 66 s (the margin included) at 100 000 ops/s of 128 B: ~806 MiB,
	// rounded up to a multiple of 64 MiB; unless the directory's free space
	// capped it, which the explanation then says.
	if want := int64(832 << 20); big != want && !strings.Contains(why, "has room for") {
		t.Errorf("66 s at 100 k ops/s: %d MiB (%s), want %d MiB", big>>20, why, want>>20)
	}
}
