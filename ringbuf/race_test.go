//go:build race

package ringbuf

const race = true
