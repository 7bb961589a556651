package main

import (
	"strings"
	"testing"
)

// The default size is fixed, whatever the run's length or load.
func TestPmemAutoSizeIsFixed(t *testing.T) {
	dir := t.TempDir()
	size, why, err := pmemAutoSize(dir, 3)
	if err != nil {
		t.Fatal(err)
	}
	if size != pmemDefaultSize && !strings.Contains(why, "has room for") {
		t.Errorf("%d MiB per replica (%s), want the default %d MiB", size>>20, why, pmemDefaultSize>>20)
	}
	if size > 1<<30 || size < pmemMinSize {
		t.Errorf("%d MiB per replica: outside [%d MiB, 1 GiB]", size>>20, pmemMinSize>>20)
	}
}
