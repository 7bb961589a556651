package engine

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the replica's Prometheus series. They exist even without a
// Registerer (then nobody scrapes them), so the hot path never checks.
type metrics struct {
	proposals     prometheus.Counter
	batches       prometheus.Counter
	batchCommands prometheus.Histogram
	applied       prometheus.Counter
	syncSeconds   prometheus.Histogram
	syncReadys    prometheus.Histogram
	elections     prometheus.Counter
	leader        prometheus.Gauge
	isLeader      prometheus.Gauge
	commitIndex   prometheus.Gauge
	appliedIndex  prometheus.Gauge
	badMessages   prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		proposals: prometheus.NewCounter(prometheus.CounterOpts{Name: "vesta_proposals_total",
			Help: "Commands proposed by this replica."}),
		batches: prometheus.NewCounter(prometheus.CounterOpts{Name: "vesta_proposed_batches_total",
			Help: "Batches (slots) proposed by this replica."}),
		batchCommands: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "vesta_batch_commands",
			Help: "Commands per proposed batch.", Buckets: prometheus.ExponentialBuckets(1, 2, 12)}),
		applied: prometheus.NewCounter(prometheus.CounterOpts{Name: "vesta_commands_applied_total",
			Help: "Commands applied to the state machine (committed)."}),
		syncSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "vesta_log_sync_seconds",
			Help: "Latency of one log append+sync covering a group of Readys.", Buckets: prometheus.ExponentialBuckets(1e-6, 4, 12)}),
		syncReadys: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "vesta_log_sync_readys",
			Help: "Readys covered by one log sync (group commit).", Buckets: prometheus.ExponentialBuckets(1, 2, 10)}),
		elections: prometheus.NewCounter(prometheus.CounterOpts{Name: "vesta_elections_won_total",
			Help: "Times this replica became leader."}),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{Name: "vesta_leader_id",
			Help: "The replica this one believes leads (0: unknown)."}),
		isLeader: prometheus.NewGauge(prometheus.GaugeOpts{Name: "vesta_is_leader",
			Help: "1 while this replica leads."}),
		commitIndex: prometheus.NewGauge(prometheus.GaugeOpts{Name: "vesta_commit_index",
			Help: "Every slot below is chosen."}),
		appliedIndex: prometheus.NewGauge(prometheus.GaugeOpts{Name: "vesta_applied_index",
			Help: "Every slot below is applied to the state machine."}),
		badMessages: prometheus.NewCounter(prometheus.CounterOpts{Name: "vesta_messages_refused_total",
			Help: "Inbound protocol messages the core refused as malformed."}),
	}
	if reg != nil {
		reg.MustRegister(m.proposals, m.batches, m.batchCommands, m.applied, m.syncSeconds, m.syncReadys,
			m.elections, m.leader, m.isLeader, m.commitIndex, m.appliedIndex, m.badMessages)
	}
	return m
}
