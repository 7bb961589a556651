//go:build !unix

package main

// rawReadSupported is false: connReader reads with net.Conn.Read, holding
// its buffer while it waits.
const rawReadSupported = false

func rawRead(uintptr, []byte) (int, bool, error) {
	panic("vestad: raw reads are not supported on this system")
}
