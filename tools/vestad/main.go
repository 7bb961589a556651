// Command vestad runs one replica of a Vesta cluster serving a replicated
// key-value store to clients (package client, command vestactl).
//
//	vestad -id 1 -peers 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003 \
//	       -clients 1=127.0.0.1:7101,2=127.0.0.1:7102,3=127.0.0.1:7103 \
//	       -data /var/lib/vesta/1 -metrics-addr 127.0.0.1:7201
//
// Every replica of a cluster gets the same -peers (the address book: every
// replica that may ever be a member), -clients and -cluster-id. A first
// member's first start, on an empty -data directory, takes -bootstrap, which
// records the cluster ID, the replica's ID and the first voters (-members,
// default every ID in -peers) in its log; a replica added later starts once
// with -join instead (it fetches a checkpoint from -members, then catches
// up; vestactl member add makes it a member). Every later start omits both,
// and a log of another cluster, of another replica or with another member
// set is refused, as is an empty directory without -bootstrap or -join (a
// replica that lost its log must not rejoin under its old identity: it would
// have forgotten its promises and votes; it joins under a new ID). The
// member set then comes from the log: GET and POST /members on
// -metrics-addr (vestactl member) show and change it. A replica removed
// from the cluster logs "removed from the cluster" and exits with status 0.
// A replica whose log fails (full, or a sync error) answers "replica
// failed: <cause>" for a moment and exits with status 1.
// It serves the client protocol on its -clients address (or -client-addr),
// Prometheus metrics on /metrics and its status as JSON on /status of
// -metrics-addr. SIGTERM or SIGINT stops it gracefully.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/vestalabs/vesta/engine"
	"github.com/vestalabs/vesta/engine/storage"
	"github.com/vestalabs/vesta/engine/transport"
	"github.com/vestalabs/vesta/engine/wire"
	"github.com/vestalabs/vesta/pmem"
	"github.com/vestalabs/vesta/pmqos"
	"github.com/vestalabs/vesta/schedpolicy"
	"github.com/vestalabs/vesta/tools/vestad/kv"
)

var _ engine.StateMachine = kv.Machine{}

func main() {
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "vestad:", err)
		fmt.Fprintln(os.Stderr, "run 'vestad -h' for the flags")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, cfg, nil); err != nil {
		slog.Error("vestad failed", "err", err)
		os.Exit(1)
	}
}

// config is vestad's parsed command line.
type config struct {
	id            wire.ReplicaID
	peers         map[wire.ReplicaID]string // replication addresses, this replica's included: the address book
	members       []wire.ReplicaID          // -members, ascending: the first voters, or with -join the replicas to ask
	join          bool                      // -join
	clients       map[wire.ReplicaID]string // client addresses (may be partial)
	clientAddr    string
	metricsAddr   string
	dataDir       string
	memLog        bool
	pmemPath      string // -log pmem:PATH
	pmemSize      int64
	pmemPrefault  bool
	window        int
	maxBatch      int
	maxBatchBytes int
	clusterID     uint64
	bootstrap     bool
	tick          time.Duration
	electionTicks int
	leaseTicks    int
	maxDrift      int
	maxSessions   int
	clientLimits  clientLimits  // -max-client-conns, -client-read-timeout, -client-idle-timeout, -client-buffer-bytes
	wakeLatency   time.Duration // -cpu-wake-latency; negative: leave the machine's setting
	sched         schedpolicy.Policy
	logger        *slog.Logger
	// Checkpoints: the directory ("" for none), the value bytes between
	// two, and how many to keep.
	checkpointDir   string
	checkpointBytes int64
	checkpointKeep  int
	checkpointEvery time.Duration
	walSegment      int64
	transport       transportFlags // -transport, -rdma-device (transport.go)
}

func parseFlags(args []string, stderr io.Writer) (*config, error) {
	fs := flag.NewFlagSet("vestad", flag.ContinueOnError)
	fs.SetOutput(stderr)
	id := fs.Uint("id", 0, "this replica's ID, one of -peers (required)")
	peers := fs.String("peers", "", "the address book: the replication address of every replica that may ever be a member, `ID=HOST:PORT,...` "+
		"(required; the same on every replica; the member set itself comes from the log)")
	membersFlag := fs.String("members", "", "the cluster's first voters, `ID,...`, recorded in the log at -bootstrap and checked at every start (default: every ID in -peers); "+
		"with -join: the replicas to ask for a checkpoint")
	join := fs.Bool("join", false, "start a new member of a running cluster on an empty -data directory: fetch a checkpoint from -members, then catch up "+
		"(make it a member with vestactl member add); only at the replica's first start, like -bootstrap, and under an ID the cluster never used")
	clients := fs.String("clients", "", "replicas' client addresses, `ID=HOST:PORT,...`: this replica listens on its own, and not-leader replies name the leader's")
	clientAddr := fs.String("client-addr", "", "`HOST:PORT` to serve clients on (default: this replica's entry in -clients)")
	metricsAddr := fs.String("metrics-addr", "", "`HOST:PORT` to serve /metrics, /status, /members, POST /checkpoint and POST /leader/transfer on (default: none)")
	dataDir := fs.String("data", "", "`DIR` of this replica's write-ahead log (required unless -log mem)")
	logKind := fs.String("log", "wal", "`KIND` of log: wal (durable, in -data), pmem:PATH (persistent-memory log file at PATH; DAX-mapped where the file system allows) or mem (NO DURABILITY: for experiments only)")
	pmemSize := fs.Int64("pmem-size", 1<<30, "size in `BYTES` of a new -log pmem file (an existing file keeps its size); checkpoints free its space, so it needs to hold only a few checkpoints' worth (-checkpoint-bytes)")
	checkpointDir := fs.String("checkpoint-dir", "", "`DIR` of this replica's checkpoints (default: DIR/checkpoints with -data DIR, PATH.checkpoints with -log pmem:PATH, none with -log mem); 'off' for none: then the log keeps every record")
	checkpointBytes := fs.Int64("checkpoint-bytes", 0, "`BYTES` of commands applied between two checkpoints (0: 64 MiB, or a third of a -log pmem file: the log holds about two intervals, from the older of the two checkpoints kept)")
	walSegment := fs.Int64("wal-segment-bytes", 0, "size in `BYTES` of each file WAL segment, preallocated (0: 64 MiB); compaction deletes whole segments, so smaller ones return space sooner")
	checkpointEvery := fs.Duration("checkpoint-interval", 0, "also take a checkpoint once this long passed since the last one and anything was applied (0: by -checkpoint-bytes only); bounds what a restart of a quiet replica replays")
	checkpointKeep := fs.Int("checkpoint-keep", 2, "checkpoints kept; the log is compacted below the oldest, so a damaged newest one falls back to the next")
	pmemPrefault := fs.Bool("pmem-prefault", true, "-log pmem: map every page of the log at start, so appends never take a page fault (costs start-up time in proportion to the file's size)")
	window := fs.Int("window", 0, "the leader's pipeline window, in slots (0: the engine's default)")
	maxBatch := fs.Int("max-batch", 0, "most commands per proposed batch (0: the engine's default)")
	maxBatchBytes := fs.Int("max-batch-bytes", 0, "most bytes per proposed batch (0: the engine's default)")
	clusterID := fs.Uint64("cluster-id", 0, "cluster `ID` (required, 1 or more): the same on every replica of this cluster and unlike any other cluster's; "+
		"recorded in the log at -bootstrap and checked at every start; replicas of other clusters are refused")
	bootstrap := fs.Bool("bootstrap", false, "create this replica's log for a new cluster, with -cluster-id, -id and -members as its identity: "+
		"only at the replica's first start (an empty -data directory, or no -log pmem file); every later start omits it")
	tick := fs.Duration("tick", 10*time.Millisecond, "the protocol's unit of time")
	electionTicks := fs.Int("election-ticks", 0, "ticks without a leader before an election (0: the engine's default)")
	leaseTicks := fs.Int("lease-ticks", 0, "ticks of a leader lease, for lease reads (0: three quarters of -election-ticks; -1: no leases, lease reads take a read-index round)")
	maxDrift := fs.Int("max-clock-drift", 10, "how much faster, in `PERCENT`, any replica's clock may run than another's: lease reads are linearizable only within it")
	maxSessions := fs.Int("max-sessions", 100_000, "client sessions kept; the least recently used is evicted beyond it")
	clientLimits := addClientLimitFlags(fs)
	transportFlag := addTransportFlags(fs)
	wakeLatency := new(time.Duration)
	*wakeLatency = -1
	fs.Var(pmqos.Flag{D: wakeLatency}, "cpu-wake-latency", "hold a PM QoS request that idle CPUs wake within this `DURATION` (0: idle CPUs poll; "+
		"costs power, cuts every wake-up on virtual machines by tens of µs; needs root) for as long as vestad runs; off (the default): leave the machine's setting")
	sched := fs.String("sched", "normal", "Linux scheduling `POLICY` of vestad's threads: normal, or batch (no wake-up preemption: faster where replicas and clients share few cores and have them to themselves; "+
		"a woken thread waits for a busy CPU's current slice when the machine runs other work too)")
	logLevel := fs.String("log-level", "info", "`LEVEL` of logs: debug, info, warn or error")
	logFormat := fs.String("log-format", "text", "`FORMAT` of logs: text or json")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: vestad -id N -peers ID=ADDR,... -clients ID=ADDR,... -data DIR [-bootstrap | -join] [flags]\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (every setting is a flag)", fs.Arg(0))
	}
	cfg := &config{clientAddr: *clientAddr, metricsAddr: *metricsAddr, dataDir: *dataDir, clusterID: *clusterID, bootstrap: *bootstrap, join: *join,
		tick: *tick, electionTicks: *electionTicks, leaseTicks: *leaseTicks, maxDrift: *maxDrift, maxSessions: *maxSessions, pmemSize: *pmemSize, pmemPrefault: *pmemPrefault, wakeLatency: *wakeLatency,
		window: *window, maxBatch: *maxBatch, maxBatchBytes: *maxBatchBytes, checkpointBytes: *checkpointBytes, checkpointKeep: *checkpointKeep, checkpointEvery: *checkpointEvery, walSegment: *walSegment}
	var err error
	if cfg.sched, err = schedpolicy.Parse(*sched); err != nil {
		return nil, fmt.Errorf("-sched: %w", err)
	}
	for _, f := range []struct {
		name string
		v    int
	}{{"-window", *window}, {"-max-batch", *maxBatch}, {"-max-batch-bytes", *maxBatchBytes}} {
		if f.v < 0 {
			return nil, fmt.Errorf("%s: %d is negative", f.name, f.v)
		}
	}
	if *maxBatchBytes > engine.MaxCommandBytes {
		return nil, fmt.Errorf("-max-batch-bytes: %d is above %d, the most that keeps every protocol message within one frame", *maxBatchBytes, engine.MaxCommandBytes)
	}
	if *id == 0 || *id > 1<<32-1 {
		return nil, fmt.Errorf("-id: %d is not a replica ID (1 to %d)", *id, uint32(1<<32-1))
	}
	cfg.id = wire.ReplicaID(*id)
	if *peers == "" {
		return nil, errors.New("-peers: required (every replica's replication address, ID=HOST:PORT,...)")
	}
	if cfg.peers, err = parseAddrMap(*peers); err != nil {
		return nil, fmt.Errorf("-peers: %w", err)
	}
	if _, ok := cfg.peers[cfg.id]; !ok {
		return nil, fmt.Errorf("-peers: has no entry for this replica's -id %d", cfg.id)
	}
	if cfg.members, err = parseMembers(*membersFlag, cfg.peers); err != nil {
		return nil, fmt.Errorf("-members: %w", err)
	}
	switch {
	case cfg.bootstrap && cfg.join:
		return nil, errors.New("-bootstrap and -join: give one (-bootstrap: a first member of a new cluster; -join: a new member of a running one)")
	case cfg.bootstrap && !slices.Contains(cfg.members, cfg.id):
		return nil, fmt.Errorf("-members %s: does not include this replica's -id %d; a first member of a cluster is one of its first voters "+
			"(to add a replica to a running cluster, start it with -join)", formatIDs(cfg.members), cfg.id)
	case cfg.join && len(cfg.members) == 1 && cfg.members[0] == cfg.id:
		return nil, fmt.Errorf("-members %s: with -join, the replicas to ask for a checkpoint: at least one other than this replica", formatIDs(cfg.members))
	}
	cfg.clients = map[wire.ReplicaID]string{}
	if *clients != "" {
		if cfg.clients, err = parseAddrMap(*clients); err != nil {
			return nil, fmt.Errorf("-clients: %w", err)
		}
		for cid := range cfg.clients {
			if _, ok := cfg.peers[cid]; !ok {
				return nil, fmt.Errorf("-clients: replica %d is not in -peers", cid)
			}
		}
	}
	if cfg.clientAddr == "" {
		cfg.clientAddr = cfg.clients[cfg.id]
		if cfg.clientAddr == "" {
			return nil, fmt.Errorf("-client-addr: required when -clients has no entry for replica %d", cfg.id)
		}
	} else if err := checkAddr(cfg.clientAddr); err != nil {
		return nil, fmt.Errorf("-client-addr: %w", err)
	}
	if cfg.metricsAddr != "" {
		if err := checkAddr(cfg.metricsAddr); err != nil {
			return nil, fmt.Errorf("-metrics-addr: %w", err)
		}
	}
	switch kind := *logKind; {
	case strings.HasPrefix(kind, "pmem:"):
		cfg.pmemPath = strings.TrimPrefix(kind, "pmem:")
		if cfg.pmemPath == "" {
			return nil, errors.New("-log pmem:PATH: the path of the log file is missing")
		}
		if cfg.dataDir != "" {
			return nil, errors.New("-data: given with -log pmem:PATH, which keeps the log in that file; drop one of them")
		}
		if cfg.pmemSize < 1<<20 {
			return nil, fmt.Errorf("-pmem-size: %d bytes is too small (at least 1 MiB)", cfg.pmemSize)
		}
	case kind == "wal":
		if cfg.dataDir == "" {
			return nil, errors.New("-data: required (the directory of the write-ahead log), or -log mem for no durability")
		}
	case kind == "mem":
		if cfg.dataDir != "" {
			return nil, errors.New("-data: given with -log mem, which keeps nothing on disk; drop one of them")
		}
		cfg.memLog = true
	default:
		return nil, fmt.Errorf("-log: %q is not a log kind (wal, pmem:PATH or mem)", *logKind)
	}
	switch *checkpointDir {
	case "off":
	case "":
		if cfg.dataDir != "" {
			cfg.checkpointDir = filepath.Join(cfg.dataDir, "checkpoints")
		} else if cfg.pmemPath != "" {
			cfg.checkpointDir = cfg.pmemPath + ".checkpoints"
		}
	default:
		cfg.checkpointDir = *checkpointDir
	}
	if cfg.checkpointBytes < 0 {
		return nil, fmt.Errorf("-checkpoint-bytes: %d is negative", cfg.checkpointBytes)
	}
	if cfg.checkpointBytes == 0 {
		cfg.checkpointBytes = 64 << 20
		if cfg.pmemPath != "" {
			cfg.checkpointBytes = cfg.pmemSize / 3
		}
	}
	if cfg.walSegment != 0 && cfg.walSegment < storage.MinSegmentSize {
		return nil, fmt.Errorf("-wal-segment-bytes: %d, need 0 (the default) or at least %d", cfg.walSegment, storage.MinSegmentSize)
	}
	if cfg.checkpointEvery < 0 {
		return nil, fmt.Errorf("-checkpoint-interval: %v is negative", cfg.checkpointEvery)
	}
	if cfg.checkpointKeep < 1 {
		return nil, fmt.Errorf("-checkpoint-keep: %d, need at least 1", cfg.checkpointKeep)
	}
	if cfg.join && cfg.checkpointDir == "" {
		return nil, errors.New("-join: needs checkpoints (a new member starts from a peer's checkpoint); drop -checkpoint-dir off")
	}
	if cfg.clusterID == 0 {
		return nil, errors.New("-cluster-id: required, 1 or more: the same on every replica of this cluster and unlike any other cluster's " +
			"(for a new cluster pick one at random, e.g. $(shuf -i 1-4294967295 -n 1))")
	}
	if cfg.tick <= 0 {
		return nil, fmt.Errorf("-tick: %v is not positive", cfg.tick)
	}
	if cfg.maxDrift < 0 {
		return nil, fmt.Errorf("-max-clock-drift: %d is negative", cfg.maxDrift)
	}
	if cfg.electionTicks < 0 {
		return nil, fmt.Errorf("-election-ticks: %d is negative", cfg.electionTicks)
	}
	if cfg.maxSessions < 1 {
		return nil, fmt.Errorf("-max-sessions: %d, need at least 1", cfg.maxSessions)
	}
	if cfg.clientLimits, err = clientLimits(); err != nil {
		return nil, err // names the flag
	}
	if cfg.transport, err = transportFlag(); err != nil {
		return nil, err // names the flag
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return nil, fmt.Errorf("-log-level: %q is not debug, info, warn or error", *logLevel)
	}
	hopts := &slog.HandlerOptions{Level: level}
	switch *logFormat {
	case "text":
		cfg.logger = slog.New(slog.NewTextHandler(stderr, hopts))
	case "json":
		cfg.logger = slog.New(slog.NewJSONHandler(stderr, hopts))
	default:
		return nil, fmt.Errorf("-log-format: %q is not text or json", *logFormat)
	}
	return cfg, nil
}

// parseAddrMap parses "ID=HOST:PORT,ID=HOST:PORT,...".
func parseAddrMap(s string) (map[wire.ReplicaID]string, error) {
	out := map[wire.ReplicaID]string{}
	seen := map[string]wire.ReplicaID{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		idStr, addr, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("entry %q is not ID=HOST:PORT", part)
		}
		n, err := strconv.ParseUint(idStr, 10, 32)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("entry %q: %q is not a replica ID (1 to %d)", part, idStr, uint32(1<<32-1))
		}
		id := wire.ReplicaID(n)
		if _, dup := out[id]; dup {
			return nil, fmt.Errorf("replica %d appears twice", id)
		}
		if err := checkAddr(addr); err != nil {
			return nil, fmt.Errorf("entry %q: %w", part, err)
		}
		if other, dup := seen[addr]; dup {
			return nil, fmt.Errorf("replicas %d and %d share the address %s", other, id, addr)
		}
		out[id], seen[addr] = addr, id
	}
	return out, nil
}

func checkAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not HOST:PORT: %v", addr, err)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || (p == 0 && host != "") {
		if err != nil || p == 0 {
			return fmt.Errorf("%q: port %q is not 1 to 65535", addr, port)
		}
	}
	return nil
}

// run starts the replica and its servers and blocks until ctx ends, then
// stops them. ready, if set, is called with the client and metrics
// listeners' addresses once serving (tests).
func run(ctx context.Context, cfg *config, ready func(clientAddr, metricsAddr string)) error {
	log := cfg.logger
	// -peers is the address book: the transport knows every replica that
	// may ever be a member. The member set comes from the log.
	others := map[wire.ReplicaID]string{}
	for id, addr := range cfg.peers {
		if id != cfg.id {
			others[id] = addr
		}
	}

	if cfg.wakeLatency >= 0 {
		req, err := pmqos.Hold(cfg.wakeLatency)
		if err != nil {
			return fmt.Errorf("-cpu-wake-latency %v: %w", cfg.wakeLatency, err)
		}
		defer req.Close()
		log.Info("holding a CPU wake-up latency limit (PM QoS)", "limit", req.Limit(), "idle", pmqos.IdlePolicy())
	}

	if cfg.sched != schedpolicy.Normal {
		if err := schedpolicy.Set(cfg.sched); err != nil {
			return fmt.Errorf("-sched %s: %w", cfg.sched, err)
		}
		log.Info("threads scheduled", "policy", string(cfg.sched))
	}

	// The log records whose it is; -bootstrap or -join creates it, every
	// other start requires it. checkStart refuses, naming the flag, what
	// disagrees with what the log records.
	joined, err := checkStart(cfg)
	if err != nil {
		return err
	}
	members := cfg.members // the first voters; a joiner's: the replicas it asked
	idMembers := members
	if joined {
		idMembers = withID(members, cfg.id)
	}
	identity := storage.Identity{ClusterID: cfg.clusterID, ReplicaID: cfg.id, Members: idMembers}
	create := storage.MustExist
	if cfg.bootstrap || cfg.join {
		create = storage.MustCreate
	}
	var store storage.Log
	durability := "wal " + cfg.dataDir
	if cfg.memLog {
		durability = "memory (NO DURABILITY)"
		log.Warn("*** -log mem: the log is kept in memory only. NOTHING IS DURABLE: a replica that restarts " +
			"forgets its promises and votes, which can lose acknowledged writes and break consistency. " +
			"Use -data DIR for anything but experiments. ***")
		store = storage.NewMemLog()
	} else if cfg.pmemPath != "" {
		pl, err := pmem.Open(cfg.pmemPath, pmem.Options{
			Identity: identity, Create: create,
			Size: cfg.pmemSize, Prefault: cfg.pmemPrefault})
		if err != nil {
			return fmt.Errorf("-log pmem:%s: %w", cfg.pmemPath, err)
		}
		st := pl.Status()
		durability = fmt.Sprintf("pmem %s (%s)", cfg.pmemPath, st.Durability)
		log.Info("pmem log open", "path", cfg.pmemPath, "durability", st.Durability.String(),
			"why", st.DurabilityReason, "flush", st.Flush.String(), "capacity", st.Capacity)
		if st.Durability != pmem.DurabilityDAX {
			log.Warn("pmem log is not on DAX persistent memory", "durability", st.Durability.String(), "why", st.DurabilityReason)
		}
		store = pl
	} else {
		wal, err := storage.OpenWAL(cfg.dataDir, storage.WALOptions{Logger: log, Create: create, Identity: identity, SegmentSize: cfg.walSegment})
		if err != nil {
			return fmt.Errorf("-data %s: %w", cfg.dataDir, err)
		}
		store = wal
	}

	// Listen for clients before starting the replica, so a busy address
	// fails fast and names its flag.
	cln, err := net.Listen("tcp", cfg.clientAddr)
	if err != nil {
		store.Close()
		return fmt.Errorf("-client-addr %s: %w", cfg.clientAddr, err)
	}
	var mln net.Listener
	if cfg.metricsAddr != "" {
		if mln, err = net.Listen("tcp", cfg.metricsAddr); err != nil {
			cln.Close()
			store.Close()
			return fmt.Errorf("-metrics-addr %s: %w", cfg.metricsAddr, err)
		}
	}

	reg := prometheus.NewRegistry()
	logKind := "wal"
	switch {
	case cfg.memLog:
		logKind = "mem"
	case cfg.pmemPath != "":
		logKind = "pmem"
	}
	durabilityMode := "fdatasync"
	if pl, ok := store.(*pmem.Log); ok {
		durabilityMode = pl.Status().Durability.String()
		registerPmemMetrics(reg, pl)
	} else if cfg.memLog {
		durabilityMode = "none"
	}
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "vesta_log_info",
		Help:        "The replica's log: its kind and the durability it actually has (1 for the one in use).",
		ConstLabels: prometheus.Labels{"kind": logKind, "durability": durabilityMode},
	}, func() float64 { return 1 }))
	sm := kv.New(kv.Options{MaxSessions: cfg.maxSessions})
	metrics := newServerMetrics(reg, sm)
	if cfg.checkpointDir != "" {
		log.Info("checkpoints", "dir", cfg.checkpointDir, "every_bytes", cfg.checkpointBytes, "keep", cfg.checkpointKeep)
	} else {
		log.Warn("checkpoints off: the log keeps every record, and a replica behind its peers' logs cannot catch up")
	}
	var links *linkSet
	r, err := engine.Start(engine.Config{
		ClusterID: cfg.clusterID,
		ID:        cfg.id,
		Members:   members,
		Join:      joined,
		Log:       store,
		Transport: func(h transport.Handler) (transport.Transport, error) {
			t, err := newTransport(cfg, others, log, h) // -transport: transport.go
			if err != nil {
				return nil, err
			}
			reg.MustRegister(transport.NewCollector(t), linkCollector{t}) // vesta_transport_* (refused handshakes among them), vesta_link_*
			links = t
			return t, nil
		},
		TickInterval:         cfg.tick,
		ElectionTicks:        cfg.electionTicks,
		LeaseTicks:           cfg.leaseTicks,
		MaxClockDriftPercent: cfg.maxDrift,
		Window:               cfg.window,
		MaxBatchCommands:     cfg.maxBatch,
		MaxBatchBytes:        cfg.maxBatchBytes,
		Logger:               log,
		Registerer:           reg,
		Checkpoints:          engine.CheckpointConfig{Dir: cfg.checkpointDir, Bytes: cfg.checkpointBytes, Keep: cfg.checkpointKeep, Interval: cfg.checkpointEvery},
	}, kv.Machine{Store: sm})
	if err != nil {
		cln.Close()
		if mln != nil {
			mln.Close()
		}
		store.Close() // Start failed before the replica owned it, or after closing it: Close is safe twice
		return err
	}

	srv := newServer(r, cfg.clients, durability, log, metrics, cfg.clientLimits, reg)
	srv.marks = sm // responses carry a write's slot (server.go, appliedFor)
	go srv.serve(cln)
	var hs *http.Server
	if mln != nil {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
		// Profiles, on the operator's address only (never the client one).
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		// GET /members shows the configurations; POST /members changes
		// them at the leader (vestactl member, members.go).
		mux.HandleFunc("/members", membersHandler(r, cfg.peers, cfg.clients))
		mux.HandleFunc("/status", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			enc := json.NewEncoder(w)
			enc.SetIndent("", "  ")
			_ = enc.Encode(struct {
				statusJSON
				Transport transportStatus `json:"transport"`
			}{srv.status(), links.status()})
		})
		// POST /checkpoint takes a checkpoint now (vestactl checkpoint) and
		// answers its slot once it is durable.
		mux.HandleFunc("/checkpoint", func(w http.ResponseWriter, req *http.Request) {
			if req.Method != http.MethodPost {
				w.Header().Set("Allow", http.MethodPost)
				http.Error(w, "POST to take a checkpoint", http.StatusMethodNotAllowed)
				return
			}
			slot, err := r.Checkpoint(req.Context())
			if err != nil {
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(struct {
				Slot uint64 `json:"slot"`
			}{uint64(slot)})
		})
		// POST /leader/transfer[?to=ID] hands leadership to replica ID, or
		// to the most caught-up peer (vestactl leader transfer), and answers
		// the new leader once it leads.
		mux.HandleFunc("/leader/transfer", func(w http.ResponseWriter, req *http.Request) {
			if req.Method != http.MethodPost {
				w.Header().Set("Allow", http.MethodPost)
				http.Error(w, "POST to hand leadership over", http.StatusMethodNotAllowed)
				return
			}
			var to uint64
			if s := req.URL.Query().Get("to"); s != "" {
				var err error
				if to, err = strconv.ParseUint(s, 10, 32); err != nil {
					http.Error(w, fmt.Sprintf("to=%q: not a replica ID", s), http.StatusBadRequest)
					return
				}
			}
			ctx, cancel := context.WithTimeout(req.Context(), 10*time.Second)
			defer cancel()
			leader, err := r.TransferLeadership(ctx, wire.ReplicaID(to))
			if err != nil {
				code := http.StatusServiceUnavailable
				var nl *engine.NotLeaderError
				if errors.As(err, &nl) {
					code = http.StatusConflict
				}
				http.Error(w, err.Error(), code)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(struct {
				Leader uint32 `json:"leader"`
			}{uint32(leader)})
		})
		hs = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := hs.Serve(mln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("metrics server failed", "err", err)
			}
		}()
	}
	log.Info("vestad serving", "id", cfg.id, "transport", links.mode, "configuration", membersStatus(r).Configuration, "joined", joined, "client_addr", cln.Addr().String(),
		"metrics_addr", addrOf(mln), "log", durability, "cluster_id", cfg.clusterID)
	if ready != nil {
		ready(cln.Addr().String(), addrOf(mln))
	}

	var failed error
	removed := false
	select {
	case <-ctx.Done():
		log.Info("vestad stopping")
	case <-r.Done():
		if err := r.Err(); errors.Is(err, engine.ErrRemoved) {
			// A membership change removed it and the remaining members
			// no longer need it: its work is done; exit 0, so that a
			// supervisor does not restart it.
			removed = true
			log.Info("removed from the cluster by a membership change; exiting", "configuration", membersStatus(r).Configuration)
			break
		}
		// The replica failed (its log could not persist) and stopped.
		// Keep answering for a moment, so that clients learn why
		// ("replica failed: <cause>") instead of finding the port closed,
		// then exit non-zero for the supervisor.
		failed = r.Err()
		log.Error("replica failed; answering 'replica failed' for a moment, then exiting", "err", failed, "linger", failLinger)
		select {
		case <-ctx.Done():
		case <-time.After(failLinger):
		}
	}
	srv.stopReading()
	stopErr := r.Stop() // answers every request in flight (unavailable)
	if removed && errors.Is(stopErr, engine.ErrRemoved) {
		stopErr = nil
	}
	srv.wait(5 * time.Second)
	if hs != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = hs.Shutdown(sctx)
		cancel()
	}
	if failed != nil {
		return failed
	}
	if stopErr != nil {
		return fmt.Errorf("stopping the replica: %w", stopErr)
	}
	if removed {
		log.Info("vestad stopped: removed from the cluster")
		return nil
	}
	log.Info("vestad stopped")
	return nil
}

// failLinger is how long a vestad whose replica failed keeps answering
// before it exits.
const failLinger = 2 * time.Second

func addrOf(ln net.Listener) string {
	if ln == nil {
		return ""
	}
	return ln.Addr().String()
}

// registerPmemMetrics exposes the pmem log's counters and occupancy.
func registerPmemMetrics(reg prometheus.Registerer, l *pmem.Log) {
	gauge := func(name, help string, f func(pmem.Status) float64) {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help},
			func() float64 { return f(l.Status()) }))
	}
	counter := func(name, help string, f func(pmem.Status) float64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help},
			func() float64 { return f(l.Status()) }))
	}
	gauge("vesta_pmem_capacity_bytes", "Bytes in the pmem log's data area.", func(s pmem.Status) float64 { return float64(s.Capacity) })
	gauge("vesta_pmem_used_bytes", "Bytes between the pmem log's head and write position.", func(s pmem.Status) float64 { return float64(s.Used) })
	counter("vesta_pmem_appends_total", "Append calls on the pmem log.", func(s pmem.Status) float64 { return float64(s.Appends) })
	counter("vesta_pmem_syncs_total", "Sync calls on the pmem log.", func(s pmem.Status) float64 { return float64(s.Syncs) })
	counter("vesta_pmem_record_bytes_total", "Bytes of records written to the pmem log.", func(s pmem.Status) float64 { return float64(s.RecordBytes) })
	counter("vesta_pmem_full_rejects_total", "Appends refused because the pmem log was full.", func(s pmem.Status) float64 { return float64(s.FullRejects) })
}
