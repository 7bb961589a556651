package lograte

import (
	"testing"
	"time"
)

func TestLimiter(t *testing.T) {
	l := Limiter{Every: time.Second}
	t0 := time.Unix(1000, 0)
	if n, ok := l.Allow(t0); !ok || n != 0 {
		t.Fatalf("first: %d %v", n, ok)
	}
	for i := range 3 {
		if _, ok := l.Allow(t0.Add(time.Duration(i+1) * 100 * time.Millisecond)); ok {
			t.Fatal("let through within the interval")
		}
	}
	if _, _, ok := l.Flush(t0.Add(500 * time.Millisecond)); ok {
		t.Fatal("flushed within the interval")
	}
	if n, ok := l.Allow(t0.Add(time.Second)); !ok || n != 3 {
		t.Fatalf("after the interval: %d %v, want 3 held", n, ok)
	}
	l.Allow(t0.Add(1100 * time.Millisecond))
	if n, since, ok := l.Flush(t0.Add(2 * time.Second)); !ok || n != 1 || !since.Equal(t0.Add(time.Second)) {
		t.Fatalf("flush: %d %v %v", n, since, ok)
	}
	if _, _, ok := l.Flush(t0.Add(5 * time.Second)); ok {
		t.Fatal("flushed with nothing held")
	}
}
