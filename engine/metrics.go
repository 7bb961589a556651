package engine

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vestalabs/vesta/engine/paxos"
)

// metrics are the replica's Prometheus series. They exist even without a
// Registerer (then nobody scrapes them), so the hot path never checks.
//
// Every series carries the labels cluster and replica (Config.ClusterID,
// Config.ID), so several replicas, of one cluster or of several, share one
// registry; Stop unregisters them, so a replica restarted in the same
// process registers again.
type metrics struct {
	reg           prometheus.Registerer // wrapped with the labels; nil: none
	all           []prometheus.Collector
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
	refused       *prometheus.CounterVec // by reason: paxos.Refusal
	badMessages   prometheus.Counter     // refused{reason="malformed"}
	tooFar        prometheus.Counter     // refused{reason="slot_too_far"}
	slowApplies   prometheus.Counter
	applyBacklog  prometheus.GaugeFunc
	failed        prometheus.Gauge

	checkpoints           prometheus.Counter
	checkpointFailures    prometheus.Counter
	checkpointSeconds     prometheus.Histogram
	checkpointSlot        prometheus.Gauge
	compactions           prometheus.Counter
	compactFailures       prometheus.Counter
	transfersSent         prometheus.Counter
	transfersReceived     prometheus.Counter
	transfersInstalled    prometheus.Counter
	transferBytesSent     prometheus.Counter
	transferBytesReceived prometheus.Counter
	logThrottled          prometheus.Gauge
	acceptsRefusedFull    prometheus.Counter
	reads                 prometheus.Counter
	peerLastContact       *prometheus.GaugeVec
	peerCommitLag         *prometheus.GaugeVec
	peerOutstanding       *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer, cluster uint64, id uint64, backlog func() float64) (*metrics, error) {
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
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vesta_messages_refused_total",
			Help: "Inbound protocol messages the core refused: malformed, or carrying a slot beyond this replica's reach (slot_too_far)."}, []string{"reason"}),
		slowApplies: prometheus.NewCounter(prometheus.CounterOpts{Name: "vesta_slow_applies_total",
			Help: "Apply calls that took longer than a heartbeat interval (commands waited; heartbeats and votes did not)."}),
		applyBacklog: prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "vesta_apply_backlog_slots",
			Help: "Chosen slots handed to the applier and not yet applied."}, backlog),
		failed: prometheus.NewGauge(prometheus.GaugeOpts{Name: "vesta_replica_failed",
			Help: "1 once the replica failed (a log that cannot persist): it stopped and must be restarted."}),
	}
	m.checkpoints = prometheus.NewCounter(prometheus.CounterOpts{Name: "vesta_checkpoints_total",
		Help: "Checkpoints of the state machine written durably by this replica."})
	m.checkpointFailures = prometheus.NewCounter(prometheus.CounterOpts{Name: "vesta_checkpoint_failures_total",
		Help: "Checkpoints that could not be written (the log is not compacted until one is)."})
	m.checkpointSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "vesta_checkpoint_seconds",
		Help: "Time to write one checkpoint durably.", Buckets: prometheus.ExponentialBuckets(1e-3, 4, 10)})
	m.checkpointSlot = prometheus.NewGauge(prometheus.GaugeOpts{Name: "vesta_checkpoint_slot",
		Help: "Slot of the newest checkpoint held: every slot below is in it."})
	m.compactions = prometheus.NewCounter(prometheus.CounterOpts{Name: "vesta_log_compactions_total",
		Help: "Times the durable log released its records below a checkpoint."})
	m.compactFailures = prometheus.NewCounter(prometheus.CounterOpts{Name: "vesta_log_compaction_failures_total",
		Help: "Log compactions that failed (the space stays used)."})
	m.transfersSent = prometheus.NewCounter(prometheus.CounterOpts{Name: "vesta_checkpoint_transfers_sent_total",
		Help: "Checkpoint transfers started to replicas behind this one's log."})
	m.transfersReceived = prometheus.NewCounter(prometheus.CounterOpts{Name: "vesta_checkpoint_transfers_received_total",
		Help: "Checkpoint transfers this replica started receiving."})
	m.peerLastContact = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "vesta_peer_last_contact_seconds",
		Help: "Leader only: how long ago each peer was last heard from."}, []string{"peer"})
	m.peerCommitLag = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "vesta_peer_commit_lag_slots",
		Help: "Leader only: how far each peer's durable commit index is behind the leader's."}, []string{"peer"})
	m.peerOutstanding = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "vesta_peer_outstanding_slots",
		Help: "Leader only: slots sent to each peer and not acknowledged."}, []string{"peer"})
	m.reads = prometheus.NewCounter(prometheus.CounterOpts{Name: "vesta_reads_total",
		Help: "Reads that skip the log (Replica.Read) asked of this replica."})
	m.transfersInstalled = prometheus.NewCounter(prometheus.CounterOpts{Name: "vesta_checkpoint_transfers_installed_total",
		Help: "Checkpoints received from a peer and installed (the state machine restored from them)."})
	m.transferBytesSent = prometheus.NewCounter(prometheus.CounterOpts{Name: "vesta_checkpoint_transfer_sent_bytes_total",
		Help: "Checkpoint bytes sent to peers (retransmissions included)."})
	m.transferBytesReceived = prometheus.NewCounter(prometheus.CounterOpts{Name: "vesta_checkpoint_transfer_received_bytes_total",
		Help: "Checkpoint bytes received from peers and written."})
	m.logThrottled = prometheus.NewGauge(prometheus.GaugeOpts{Name: "vesta_log_full_throttled",
		Help: "1 while this leader takes no new commands because its log is nearly full (checkpoints do not keep up)."})
	m.acceptsRefusedFull = prometheus.NewCounter(prometheus.CounterOpts{Name: "vesta_log_full_accepts_refused_total",
		Help: "Accepts not voted on because this replica's log was nearly full (the leader resends them)."})
	m.badMessages = m.refused.WithLabelValues(paxos.RefusedMalformed.String())
	m.tooFar = m.refused.WithLabelValues(paxos.RefusedSlotTooFar.String())
	m.all = []prometheus.Collector{m.reads, m.peerLastContact, m.peerCommitLag, m.peerOutstanding, m.proposals, m.batches, m.batchCommands, m.applied, m.syncSeconds, m.syncReadys,
		m.elections, m.leader, m.isLeader, m.commitIndex, m.appliedIndex, m.refused, m.slowApplies, m.applyBacklog, m.failed,
		m.checkpoints, m.checkpointFailures, m.checkpointSeconds, m.checkpointSlot, m.compactions, m.compactFailures,
		m.transfersSent, m.transfersReceived, m.transfersInstalled, m.transferBytesSent, m.transferBytesReceived,
		m.logThrottled, m.acceptsRefusedFull}
	if reg == nil {
		return m, nil
	}
	m.reg = prometheus.WrapRegistererWith(prometheus.Labels{
		"cluster": strconv.FormatUint(cluster, 10), "replica": strconv.FormatUint(id, 10)}, reg)
	for i, c := range m.all {
		if err := m.reg.Register(c); err != nil {
			for _, done := range m.all[:i] {
				m.reg.Unregister(done)
			}
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, fmt.Errorf("vesta: metrics: replica %d of cluster %d is already registered on this Registerer (stop it first, or give each cluster its own Config.ClusterID): %w", id, cluster, err)
			}
			return nil, fmt.Errorf("vesta: metrics: %w", err)
		}
	}
	return m, nil
}

// unregister removes every series from the Registerer: the replica stopped.
func (m *metrics) unregister() {
	if m.reg == nil {
		return
	}
	for _, c := range m.all {
		m.reg.Unregister(c)
	}
}
