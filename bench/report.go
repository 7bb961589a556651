package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"
)

// Conditions are everything a figure depends on. A report prints them next
// to the figures, and the JSON carries them.
type Conditions struct {
	CPU        string  `json:"cpu"`
	Cores      int     `json:"cores"`
	GOMAXPROCS int     `json:"gomaxprocs"`
	GoVersion  string  `json:"go_version"`
	Kernel     string  `json:"kernel"`
	Mode       string  `json:"mode"` // "processes" or "inproc"
	Replicas   int     `json:"replicas"`
	Log        string  `json:"log"`
	Transport  string  `json:"transport"`
	Clients    int     `json:"clients"`
	Inflight   int     `json:"inflight_per_client"`
	Rate       float64 `json:"rate,omitempty"`
	Size       int     `json:"command_bytes"`
	ReadRatio  float64 `json:"read_ratio"`
	ReadMode   string  `json:"read_mode,omitempty"` // how reads stay consistent: "index", "lease", "log" or "bounded"
	Keys       int     `json:"keys"`
	Zipf       float64 `json:"zipf,omitempty"`
	Duration   string  `json:"duration"`
	Warmup     string  `json:"warmup"`
	// Batching settings of the replicas.
	Window           int  `json:"window"`
	MaxBatchCommands int  `json:"max_batch_commands"`
	MaxBatchBytes    int  `json:"max_batch_bytes"`
	Contracts        bool `json:"contracts"`
	// CPUIdle is how idle CPUs wake: the machine's idle policy and any PM
	// QoS wake-up latency limit held during the run.
	CPUIdle string `json:"cpu_idle,omitempty"`
	// Sched is the Linux scheduling policy of the benchmark's processes.
	Sched string `json:"sched,omitempty"`
	Notes string `json:"notes,omitempty"`
}

// MachineConditions fills in what the machine and toolchain say.
func MachineConditions() Conditions {
	c := Conditions{Cores: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0), GoVersion: runtime.Version(), CPU: "unknown"}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "model name") {
				if _, v, ok := strings.Cut(line, ":"); ok {
					c.CPU = strings.TrimSpace(v)
				}
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		c.Kernel = "Linux " + strings.TrimSpace(string(b))
	} else {
		c.Kernel = runtime.GOOS
	}
	return c
}

// Report is one run's figures and conditions, in the shape of -json output.
type Report struct {
	OpsPerSec  float64 `json:"ops_per_sec"`
	Ops        uint64  `json:"ops"`
	Errors     uint64  `json:"errors"`
	FirstError string  `json:"first_error,omitempty"`
	Overloaded bool    `json:"overloaded,omitempty"`
	// Interrupted: the run was stopped (Ctrl-C, SIGTERM) before its end;
	// the figures cover MeasuredSeconds of the measurement window.
	Interrupted bool `json:"interrupted,omitempty"`
	// Failure: the cluster stopped serving (a stall, a replica that
	// exited); the figures cover MeasuredSeconds and the run failed.
	Failure         string             `json:"failure,omitempty"`
	MeasuredSeconds float64            `json:"measured_seconds"`
	LatencyUS       map[string]float64 `json:"latency_us"`
	Series          []float64          `json:"ops_per_second_series"`
	Conditions      Conditions         `json:"conditions"`
	When            time.Time          `json:"when"`
}

// NewReport combines a result with its conditions.
func NewReport(res Result, cond Conditions) Report {
	us := func(d time.Duration) float64 { return float64(d) / 1e3 }
	h := res.Latency
	return Report{
		OpsPerSec: res.OpsPerSec, Ops: res.Ops, Errors: res.Errors, FirstError: res.FirstError,
		Overloaded: res.Overloaded, Interrupted: res.Interrupted && res.Failure == "", Failure: res.Failure, MeasuredSeconds: res.Elapsed.Seconds(),
		Series: res.Series, Conditions: cond, When: time.Now().UTC(),
		LatencyUS: map[string]float64{
			"p50": us(h.Quantile(0.5)), "p90": us(h.Quantile(0.9)), "p99": us(h.Quantile(0.99)),
			"p999": us(h.Quantile(0.999)), "max": us(h.Max()),
		},
	}
}

// WriteJSON writes the report as indented JSON.
func (r Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteTable prints the figures, then the conditions they were measured in.
func (r Report) WriteTable(w io.Writer) error {
	c := r.Conditions
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "\nthroughput\t%.0f ops/s\t(%d ops in %s", r.OpsPerSec, r.Ops, time.Duration(r.MeasuredSeconds*1e9).Round(time.Millisecond))
	if r.Errors > 0 {
		fmt.Fprintf(tw, ", %d errors, first: %s", r.Errors, r.FirstError)
	}
	fmt.Fprintln(tw, ")")
	fmt.Fprintf(tw, "latency\tp50 %.1f µs\tp90 %.1f µs\tp99 %.1f µs\tp99.9 %.1f µs\tmax %.1f µs\n",
		r.LatencyUS["p50"], r.LatencyUS["p90"], r.LatencyUS["p99"], r.LatencyUS["p999"], r.LatencyUS["max"])
	tw.Flush()
	if r.Overloaded {
		fmt.Fprintln(w, "OVERLOADED: the open-loop rate outran the system; the run stopped early")
	}
	if r.Interrupted {
		fmt.Fprintf(w, "INTERRUPTED: stopped after %.1f s of the %s measurement window; the figures cover only that\n", r.MeasuredSeconds, c.Duration)
	}
	if r.Failure != "" {
		fmt.Fprintf(w, "FAILED: %s; stopped after %.1f s of the %s measurement window\n", r.Failure, r.MeasuredSeconds, c.Duration)
	}
	fmt.Fprintln(w, "\nconditions")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	load := fmt.Sprintf("closed loop: %d clients x %d in flight", c.Clients, c.Inflight)
	if c.Rate > 0 {
		load = fmt.Sprintf("open loop at %.0f ops/s (latency from intended send time)", c.Rate)
	}
	rows := [][2]string{
		{"machine", fmt.Sprintf("%s, %d cores (bench process GOMAXPROCS %d), %s", c.CPU, c.Cores, c.GOMAXPROCS, c.Kernel)},
		{"cpu idle", c.CPUIdle},
		{"scheduling", c.Sched},
		{"go", c.GoVersion + map[bool]string{true: ", contracts ON (slower)", false: ""}[c.Contracts]},
		{"cluster", fmt.Sprintf("%d replicas as %s, log %s, transport %s", c.Replicas, c.Mode, c.Log, c.Transport)},
		{"load", load},
		{"commands", fmt.Sprintf("%d B values, %.0f%% reads%s, %d keys, zipf %v", c.Size, c.ReadRatio*100, readModeNote(c.ReadMode), c.Keys, c.Zipf)},
		{"batching", fmt.Sprintf("window %d slots, batches up to %d commands / %d bytes", c.Window, c.MaxBatchCommands, c.MaxBatchBytes)},
		{"timing", fmt.Sprintf("%s measured after %s warm-up", c.Duration, c.Warmup)},
	}
	if c.Notes != "" {
		rows = append(rows, [2]string{"notes", c.Notes})
	}
	for _, row := range rows {
		if row[1] == "" {
			continue
		}
		fmt.Fprintf(tw, "  %s\t%s\n", row[0], row[1])
	}
	return tw.Flush()
}

// readModeNote names how reads stay linearizable, when the run had reads.
func readModeNote(mode string) string {
	switch mode {
	case "index":
		return " (by the leader's read index, no log append)"
	case "log":
		return " (each through the log)"
	case "lease":
		return " (under the leader's lease, no round)"
	case "bounded":
		return " (bounded staleness at every replica in turn, never older than the client has seen; not linearizable)"
	}
	return ""
}
