//go:build !race

package zerocopy

const race = false
