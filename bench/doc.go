// Package bench is Vesta's benchmark harness as a library: workloads (closed
// and open loop) that drive a Target, latency histograms, live progress, and
// reports that put every figure next to the conditions it was measured in.
// tools/vesta-bench is its command line.
//
// Latency in an open-loop run is measured from each operation's intended
// send time, not from when it was actually sent, so a system that falls
// behind cannot hide its queueing (coordinated omission).
package bench
