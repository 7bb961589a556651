package main

import (
	"github.com/vestalabs/vesta/engine/storage"
	"github.com/vestalabs/vesta/pmem"
)

// readPmemIdentity reads whose log the pmem log file at path is, without
// opening it.
func readPmemIdentity(path string) (storage.Identity, error) { return pmem.ReadIdentity(path) }
