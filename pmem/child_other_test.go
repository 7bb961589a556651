//go:build !linux

package pmem

const childEnv = "VESTA_PMEM_CRASH_CHILD"

func crashChild(string) { panic("the process-crash child runs on Linux only") }

const createCrashEnv = "VESTA_PMEM_CREATE_CRASH"

func createCrashChild(string) { panic("the creation-crash child runs on Linux only") }
