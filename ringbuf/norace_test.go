//go:build !race

package ringbuf

const race = false
