//go:build race

package zerocopy

const race = true
