//go:build !linux

package main

import (
	"errors"

	"github.com/vestalabs/vesta/engine/storage"
)

// readPmemIdentity: pmem log files need Linux; opening one says so.
func readPmemIdentity(string) (storage.Identity, error) {
	return storage.Identity{}, errors.New("pmem: file-backed logs need Linux")
}
