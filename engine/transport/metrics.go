package transport

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// NewCollector returns a Prometheus collector of tr's Stats, as
// vesta_transport_* series read at each scrape (nothing on the send or
// receive path). Register it once per transport:
//
//	reg.MustRegister(transport.NewCollector(tr))
//
// Among them, vesta_transport_handshake_refused_total{peer,reason} counts
// dials a peer refused and said why: a replica whose cluster ID or replica
// ID its peers refuse otherwise only sees its connections drop.
func NewCollector(tr Transport) prometheus.Collector { return &statsCollector{tr: tr} }

type statsCollector struct{ tr Transport }

var (
	descFramesSent = prometheus.NewDesc("vesta_transport_frames_sent_total",
		"Frames handed to a connection (TCP) or a peer's inbox (Mem).", nil, nil)
	descBytesSent = prometheus.NewDesc("vesta_transport_bytes_sent_total",
		"Bytes of frames sent.", nil, nil)
	descWriteCalls = prometheus.NewDesc("vesta_transport_write_calls_total",
		"Gathered writes (TCP); frames sent per write call is frames_sent / write_calls.", nil, nil)
	descFramesReceived = prometheus.NewDesc("vesta_transport_frames_received_total",
		"Frames that passed every check and reached the handler.", nil, nil)
	descBytesReceived = prometheus.NewDesc("vesta_transport_bytes_received_total",
		"Bytes of frames received.", nil, nil)
	descDeliveries = prometheus.NewDesc("vesta_transport_deliveries_total",
		"Handler calls (batches of received frames).", nil, nil)
	descDropped = prometheus.NewDesc("vesta_transport_dropped_total",
		"Messages dropped, by reason: queue_full, no_peer, unencodable, disconnect.", []string{"reason"}, nil)
	descConnects = prometheus.NewDesc("vesta_transport_connects_total",
		"Outbound connections established, handshake done (TCP).", nil, nil)
	descReconnects = prometheus.NewDesc("vesta_transport_reconnects_total",
		"Of the outbound connections, those after a peer's first (TCP).", nil, nil)
	descDialFailures = prometheus.NewDesc("vesta_transport_dial_failures_total",
		"Dials or handshakes that failed (TCP), refused ones included.", nil, nil)
	descClosed = prometheus.NewDesc("vesta_transport_connections_closed_total",
		"Connections closed, by reason (a malformed frame's, a refused handshake's, a disconnect's).", []string{"reason"}, nil)
	descRefused = prometheus.NewDesc("vesta_transport_handshake_refused_total",
		"Dials the peer refused and said why, by peer and reason (foreign_cluster, unknown_peer, wrong_replica, other): a misconfiguration.",
		[]string{"peer", "reason"}, nil)
)

func (c *statsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descFramesSent, descBytesSent, descWriteCalls, descFramesReceived,
		descBytesReceived, descDeliveries, descDropped, descConnects, descReconnects, descDialFailures,
		descClosed, descRefused} {
		ch <- d
	}
}

func (c *statsCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.tr.Stats()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	counter(descFramesSent, s.FramesSent)
	counter(descBytesSent, s.BytesSent)
	counter(descWriteCalls, s.WriteCalls)
	counter(descFramesReceived, s.FramesReceived)
	counter(descBytesReceived, s.BytesReceived)
	counter(descDeliveries, s.Deliveries)
	counter(descDropped, s.DroppedQueueFull, "queue_full")
	counter(descDropped, s.DroppedNoPeer, "no_peer")
	counter(descDropped, s.DroppedUnencodable, "unencodable")
	counter(descDropped, s.DroppedOnDisconnect, "disconnect")
	counter(descConnects, s.Connects)
	counter(descReconnects, s.Reconnects)
	counter(descDialFailures, s.DialFailures)
	for reason, n := range s.Closed {
		counter(descClosed, n, reason)
	}
	for k, n := range s.HandshakesRefused {
		counter(descRefused, n, strconv.FormatUint(uint64(k.Peer), 10), k.Reason)
	}
}
