package main

import (
	"strconv"
	"strings"
)

// marker is one parsed "@@VMLAB ..." line from the guest:
//
//	@@VMLAB init t=0.93
//	@@VMLAB step=load-modules begin t=1.02
//	@@VMLAB step=load-modules end rc=0 t=1.51
//	@@VMLAB check mapsync=ok dir=/mnt/pmem0 ...
//	@@VMLAB done rc=0 t=40.2
//
// Words without '=' make up Kind (the first) and Phase (the second, for
// steps); key=value words go to Fields.
type marker struct {
	Kind   string // "init", "step", "done", "check", ...
	Phase  string // "begin" or "end" for steps
	Step   string // the step's name, for steps
	RC     int    // "rc=", -1 when absent or unparsable
	T      float64
	HasT   bool // "t=" present and numeric (guest uptime in seconds)
	Fields map[string]string
}

// parseMarker finds a marker in a console line. The prefix may follow
// other text: kernel messages can share a line with the guest's output.
func parseMarker(line string) (marker, bool) {
	i := strings.Index(line, markerPrefix+" ")
	if i < 0 {
		return marker{}, false
	}
	m := marker{RC: -1, Fields: map[string]string{}}
	var words []string
	for _, w := range strings.Fields(line[i+len(markerPrefix):]) {
		k, v, ok := strings.Cut(w, "=")
		if !ok {
			words = append(words, w)
			continue
		}
		m.Fields[k] = v
	}
	if s, ok := m.Fields["step"]; ok {
		m.Kind, m.Step = "step", s
		if len(words) > 0 {
			m.Phase = words[0]
		}
	} else if len(words) > 0 {
		m.Kind = words[0]
	}
	if m.Kind == "" {
		return marker{}, false
	}
	if s, ok := m.Fields["rc"]; ok {
		if n, err := strconv.Atoi(s); err == nil {
			m.RC = n
		}
	}
	if s, ok := m.Fields["t"]; ok {
		if f, err := strconv.ParseFloat(s, 64); err == nil {
			m.T, m.HasT = f, true
		}
	}
	return m, true
}
