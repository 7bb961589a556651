//go:build !rdma

package rdma

import (
	"testing"

	"github.com/vestalabs/vesta/engine/wire"
)

func TestUnavailableWithoutTag(t *testing.T) {
	if Available {
		t.Fatal("Available in a build without the rdma tag")
	}
	if _, err := New(Config{ID: 1}, func([]wire.Message) {}); err != ErrUnavailable {
		t.Fatalf("New without the rdma tag: %v", err)
	}
}
