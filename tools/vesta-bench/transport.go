package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// checkTransport validates -transport: tcp, rdma or auto (vestad's
// -transport, passed to every replica); rdma and auto need process mode.
func (o *options) checkTransport() error {
	switch o.transport {
	case "tcp":
		return nil
	case "rdma", "auto":
		if o.inproc {
			return fmt.Errorf("-transport %s: replicas over RDMA run as processes (drop -inproc)", o.transport)
		}
		return nil
	}
	return fmt.Errorf("-transport %q: want tcp, rdma or auto", o.transport)
}

// vestadBuildTags are the tags vesta-bench builds vestad with (when no
// -vestad is given): rdma for the RDMA transports.
func (o *options) vestadBuildTags() []string {
	if o.transport == "tcp" {
		return nil
	}
	return []string{"-tags", "rdma"}
}

// linkReport reads replica 1's peer links from its /status (waiting, up to
// deadline, until auto mode has decided every link) and describes them for
// the report's conditions: "rdma (replica 1's links: 2=rdma 3=rdma)".
func linkReport(metricsAddr, mode string, deadline time.Time) string {
	type link struct {
		Peer      uint32 `json:"peer"`
		Transport string `json:"transport"`
		Why       string `json:"why"`
	}
	var st struct {
		Transport struct {
			Links []link `json:"links"`
		} `json:"transport"`
	}
	hc := http.Client{Timeout: 2 * time.Second}
	for {
		st.Transport.Links = nil
		resp, err := hc.Get("http://" + metricsAddr + "/status")
		if err == nil {
			err = json.NewDecoder(resp.Body).Decode(&st)
			resp.Body.Close()
		}
		undecided := false
		for _, l := range st.Transport.Links {
			undecided = undecided || strings.HasPrefix(l.Why, "probing")
		}
		if err == nil && !undecided {
			break
		}
		if time.Now().After(deadline) {
			if err != nil {
				return fmt.Sprintf("%s (replica 1's links unknown: %v)", mode, err)
			}
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	var parts []string
	for _, l := range st.Transport.Links {
		parts = append(parts, fmt.Sprintf("%d=%s", l.Peer, l.Transport))
	}
	return fmt.Sprintf("%s (replica 1's links: %s)", mode, strings.Join(parts, " "))
}
