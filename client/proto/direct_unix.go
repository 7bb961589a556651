//go:build unix

package proto

import "syscall"

// directWrites says whether an appender may write to the connection itself
// (see Writer.append): it needs a non-blocking write on the raw descriptor.
const directWrites = true

// writeOnce makes one write system call on the (non-blocking) socket fd.
func writeOnce(fd uintptr, b []byte) (int, error) {
	n, err := syscall.Write(int(fd), b)
	if err != nil {
		n = 0
	}
	return n, err
}
