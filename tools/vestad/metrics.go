package main

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/vestalabs/vesta/client/proto"
	"github.com/vestalabs/vesta/tools/vestad/kv"
)

// serverMetrics are vestad's own series, beside the engine's (vesta_*).
type serverMetrics struct {
	connections      prometheus.Gauge
	connectionsTotal prometheus.Counter
	protocolErrors   prometheus.Counter
	requests         [proto.OpStatus + 1]prometheus.Counter // by op
	responses        [proto.StatusSessionExpired + 1]prometheus.Counter
	groupSize        prometheus.Histogram
}

// newServerMetrics registers vestad's series, the key-value store's, and
// the Go runtime's and process's on reg.
func newServerMetrics(reg prometheus.Registerer, store *kv.Store) *serverMetrics {
	m := &serverMetrics{
		connections: prometheus.NewGauge(prometheus.GaugeOpts{Name: "vestad_client_connections",
			Help: "Client connections open."}),
		connectionsTotal: prometheus.NewCounter(prometheus.CounterOpts{Name: "vestad_client_connections_total",
			Help: "Client connections accepted."}),
		protocolErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "vestad_client_protocol_errors_total",
			Help: "Client connections closed for malformed input."}),
		groupSize: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "vestad_requests_per_command",
			Help:    "Client requests packed into one replicated command (the requests of one read).",
			Buckets: prometheus.ExponentialBuckets(1, 2, 9)}),
	}
	reqs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vestad_requests_total",
		Help: "Client requests received, by operation."}, []string{"op"})
	for op := proto.OpGet; op <= proto.OpStatus; op++ {
		m.requests[op] = reqs.WithLabelValues(op.String())
	}
	m.requests[0] = prometheus.NewCounter(prometheus.CounterOpts{Name: "unused"}) // never registered
	resps := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vestad_responses_total",
		Help: "Client responses sent, by status."}, []string{"status"})
	for st := proto.StatusOK; st <= proto.StatusSessionExpired; st++ {
		m.responses[st] = resps.WithLabelValues(st.String())
	}
	reg.MustRegister(m.connections, m.connectionsTotal, m.protocolErrors, m.groupSize, reqs, resps,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "vestad_kv_keys",
			Help: "Keys in the key-value store."}, func() float64 { return float64(store.Keys()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "vestad_kv_sessions",
			Help: "Client sessions the store keeps."}, func() float64 { return float64(store.Sessions()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "vestad_kv_sessions_evicted_total",
			Help: "Client sessions evicted (least recently used first)."}, func() float64 { return float64(store.Evicted()) }),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}
