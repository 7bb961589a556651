package main

// Members: how a start finds its place in the cluster (-bootstrap, -join and
// the durable identity), and the operator endpoints that show and change the
// member set (GET and POST /members, vestactl member).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vestalabs/vesta/engine"
	"github.com/vestalabs/vesta/engine/paxos"
	"github.com/vestalabs/vesta/engine/storage"
	"github.com/vestalabs/vesta/engine/storage/vfs"
	"github.com/vestalabs/vesta/engine/wire"
)

// parseMembers parses -members ("ID,ID,..."); "" means every ID in the
// address book. Every ID must be in it. The result is ascending.
func parseMembers(s string, peers map[wire.ReplicaID]string) ([]wire.ReplicaID, error) {
	var out []wire.ReplicaID
	if strings.TrimSpace(s) == "" {
		for id := range peers {
			out = append(out, id)
		}
		slices.Sort(out)
		return out, nil
	}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		n, err := strconv.ParseUint(part, 10, 32)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("%q is not a replica ID (1 to %d)", part, uint32(1<<32-1))
		}
		id := wire.ReplicaID(n)
		if slices.Contains(out, id) {
			return nil, fmt.Errorf("replica %d appears twice", id)
		}
		if _, ok := peers[id]; !ok {
			return nil, fmt.Errorf("replica %d is not in -peers (the address book of every replica that may ever be a member)", id)
		}
		out = append(out, id)
	}
	slices.Sort(out)
	return out, nil
}

// formatIDs writes IDs as -members takes them: "1,2,3".
func formatIDs(ids []wire.ReplicaID) string {
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = strconv.FormatUint(uint64(id), 10)
	}
	return strings.Join(parts, ",")
}

// withID returns ids with id added, ascending.
func withID(ids []wire.ReplicaID, id wire.ReplicaID) []wire.ReplicaID {
	out := slices.Clone(ids)
	if !slices.Contains(out, id) {
		out = append(out, id)
		slices.Sort(out)
	}
	return out
}

// joinMarker is the file that says this replica joined a running cluster
// (-join) rather than being one of its first members: every later start
// then starts the engine with Join too, so that a joiner that stopped
// before it held any state fetches a checkpoint again instead of starting
// as a first member of the replicas it asked. "" with -log mem (nothing is
// durable there).
func joinMarker(cfg *config) string {
	switch {
	case cfg.memLog:
		return ""
	case cfg.pmemPath != "":
		return cfg.pmemPath + ".joined"
	}
	return filepath.Join(cfg.dataDir, "JOINED")
}

// durableIdentity reads whose log this replica's -data (or -log pmem file)
// holds, without opening it. found is false where there is no log; err is
// set where there is something unreadable, which the log's open then
// judges.
func durableIdentity(cfg *config) (id storage.Identity, found bool, err error) {
	switch {
	case cfg.memLog:
		return storage.Identity{}, false, nil
	case cfg.pmemPath != "":
		if _, err := os.Stat(cfg.pmemPath); errors.Is(err, iofs.ErrNotExist) {
			return storage.Identity{}, false, nil
		}
		id, err = readPmemIdentity(cfg.pmemPath)
	default:
		id, err = storage.WALIdentity(vfs.Default, cfg.dataDir)
		if errors.Is(err, iofs.ErrNotExist) || errors.Is(err, storage.ErrNoLog) {
			return storage.Identity{}, false, nil
		}
	}
	if err != nil {
		return storage.Identity{}, false, err
	}
	return id, true, nil
}

// checkStart decides, before the log is opened, what this start is: a
// first member's first start (-bootstrap), a new member's (-join), or a
// restart; and refuses flags that disagree with the durable identity,
// naming the flag and what the log records. It returns whether this replica
// joined (its identity's members are then -members and itself), and leaves
// the join marker in place for a first -join.
func checkStart(cfg *config) (joined bool, err error) {
	marker := joinMarker(cfg)
	joined = cfg.join
	markerFound := false
	if marker != "" {
		if _, err := os.Stat(marker); err == nil {
			joined, markerFound = true, true
		}
	}
	where := "-data " + cfg.dataDir
	if cfg.pmemPath != "" {
		where = "-log pmem:" + cfg.pmemPath
	}
	durable, found, rerr := durableIdentity(cfg)
	switch {
	case rerr != nil:
		// Damaged or unreadable: opening the log says what is wrong.
		return joined, nil
	case found:
		recorded := fmt.Sprintf("its log records cluster %d, replica %d, members %s", durable.ClusterID, durable.ReplicaID, formatIDs(durable.Members))
		members := cfg.members
		if joined {
			members = withID(members, cfg.id)
		}
		switch {
		case cfg.bootstrap:
			return false, fmt.Errorf("-bootstrap: %s already holds a log (%s): this replica was bootstrapped before; start it without -bootstrap", where, recorded)
		case cfg.join:
			return false, fmt.Errorf("-join: %s already holds a log (%s): -join is for a new member's first start only; start it without -join", where, recorded)
		case durable.ClusterID != cfg.clusterID:
			return false, fmt.Errorf("-cluster-id %d: %s belongs to another cluster (%s); check -cluster-id and -data", cfg.clusterID, where, recorded)
		case durable.ReplicaID != cfg.id:
			return false, fmt.Errorf("-id %d: %s belongs to another replica (%s): running one replica's promises and votes as another's breaks quorum intersection; "+
				"check -id and -data (a replica whose data directory was lost comes back only as a new member, under a new ID: -join)", cfg.id, where, recorded)
		case !slices.Equal(durable.Members, members):
			hint := "give -members as at -bootstrap (the default is every ID in -peers); the member set itself comes from the log"
			if joined {
				hint = "give -members as at -join (the replicas it asked; the log records them and this replica)"
			}
			return false, fmt.Errorf("-members %s: %s was created with other members (%s): %s", formatIDs(cfg.members), where, recorded, hint)
		}
		return joined, nil
	}
	// No log here.
	switch {
	case cfg.bootstrap:
		return false, nil
	case cfg.join:
		if !markerFound {
			if cfg.dataDir != "" {
				if err := os.MkdirAll(cfg.dataDir, 0o755); err != nil {
					return false, fmt.Errorf("-data %s: %w", cfg.dataDir, err)
				}
			}
			note := fmt.Sprintf("replica %d joined cluster %d, asking %s; its identity records those and itself\n", cfg.id, cfg.clusterID, formatIDs(cfg.members))
			if err := writeSynced(marker, []byte(note)); err != nil {
				return false, fmt.Errorf("-join: %w", err)
			}
		}
		return true, nil
	case cfg.memLog:
		return false, nil
	case markerFound:
		return false, fmt.Errorf("%s: a -join started here never created its log; start it again with -join", where)
	}
	return false, fmt.Errorf("%s: no log here; a new cluster's first members start with -bootstrap, a new member of a running cluster with -join. "+
		"A replica whose data directory was lost must not come back under its old identity (it would have forgotten its promises and votes): "+
		"start it with -join under a new -id, then vestactl member replace OLD NEW", where)
}

// writeSynced writes a small file durably (the file, then its directory).
func writeSynced(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// membershipJSON is one configuration as /members and /status show it.
type membershipJSON struct {
	Epoch    uint64   `json:"epoch"`
	From     uint64   `json:"from"` // the first slot it governs
	Alpha    uint64   `json:"alpha"`
	Voters   []uint32 `json:"voters"`
	Learners []uint32 `json:"learners"`
}

func toMembershipJSON(m engine.Membership) membershipJSON {
	out := membershipJSON{Epoch: m.Epoch, From: uint64(m.From), Alpha: m.Alpha, Voters: []uint32{}, Learners: []uint32{}}
	for _, id := range m.Voters {
		out.Voters = append(out.Voters, uint32(id))
	}
	for _, id := range m.Learners {
		out.Learners = append(out.Learners, uint32(id))
	}
	return out
}

// membersJSON is GET /members: the configurations this replica knows as of
// what it applied, oldest first (the first governs its applied index; any
// later one is chosen and governs from its From on), and who it is.
type membersJSON struct {
	ID             uint32           `json:"id"`
	Leader         uint32           `json:"leader"`
	Applied        uint64           `json:"applied"`
	Commit         uint64           `json:"commit"`
	Configurations []membershipJSON `json:"configurations"`
}

// memberChangeJSON is POST /members's body: the new member set.
type memberChangeJSON struct {
	Voters   []uint32 `json:"voters"`
	Learners []uint32 `json:"learners"`
}

// memberErrorJSON is every non-200 answer of /members. Leader (0: unknown)
// is who leads as this replica knows it, for a caller that asked a
// follower; Retry says the same request may succeed shortly.
type memberErrorJSON struct {
	Error      string `json:"error"`
	Leader     uint32 `json:"leader,omitempty"`
	LeaderAddr string `json:"leader_addr,omitempty"` // the leader's client address
	Retry      bool   `json:"retry,omitempty"`
}

// memberTimeout bounds one POST /members: the change is chosen within a
// few round trips of a leader that has room in its window.
const memberTimeout = 20 * time.Second

// membersHandler serves GET /members (the configurations) and POST
// /members (change them at the leader; 421 with the leader elsewhere, 409
// while another change is not chosen, 503 with retry set when it may
// succeed shortly: a full window, or a change that leadership moved past
// and so was not made).
func membersHandler(r *engine.Replica, peers, clients map[wire.ReplicaID]string) http.HandlerFunc {
	fail := func(w http.ResponseWriter, code int, e memberErrorJSON) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(e)
	}
	return func(w http.ResponseWriter, req *http.Request) {
		switch req.Method {
		case http.MethodGet, http.MethodHead:
			st := r.Status()
			out := membersJSON{ID: uint32(st.ID), Leader: uint32(st.Leader), Applied: st.Applied, Commit: st.Commit, Configurations: []membershipJSON{}}
			for _, m := range r.Memberships() {
				out.Configurations = append(out.Configurations, toMembershipJSON(m))
			}
			w.Header().Set("Content-Type", "application/json")
			enc := json.NewEncoder(w)
			enc.SetIndent("", "  ")
			_ = enc.Encode(out)
			return
		case http.MethodPost:
		default:
			w.Header().Set("Allow", "GET, POST")
			http.Error(w, "GET the configurations, or POST {\"voters\":[...],\"learners\":[...]} to change them", http.StatusMethodNotAllowed)
			return
		}
		var body memberChangeJSON
		dec := json.NewDecoder(io.LimitReader(req.Body, 64<<10))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&body); err != nil {
			fail(w, http.StatusBadRequest, memberErrorJSON{Error: "the body is not {\"voters\":[...],\"learners\":[...]}: " + err.Error()})
			return
		}
		var voters, learners []wire.ReplicaID
		for _, l := range []struct {
			in  []uint32
			out *[]wire.ReplicaID
		}{{body.Voters, &voters}, {body.Learners, &learners}} {
			for _, id := range l.in {
				if _, ok := peers[wire.ReplicaID(id)]; !ok {
					fail(w, http.StatusBadRequest, memberErrorJSON{Error: fmt.Sprintf("replica %d is not in -peers, the address book: no replica could reach it", id)})
					return
				}
				*l.out = append(*l.out, wire.ReplicaID(id))
			}
		}
		slices.Sort(voters)
		slices.Sort(learners)
		ctx, cancel := context.WithTimeout(req.Context(), memberTimeout)
		defer cancel()
		m, err := r.ChangeMembership(ctx, voters, learners)
		if err == nil {
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(toMembershipJSON(m))
			return
		}
		st := r.Status()
		e := memberErrorJSON{Error: err.Error(), Leader: uint32(st.Leader), LeaderAddr: clients[st.Leader]}
		switch {
		case errors.Is(err, engine.ErrNotLeader), errors.Is(err, paxos.ErrNotLeader), errors.Is(err, paxos.ErrHandover):
			// Ask the leader (as /leader/transfer's 409 says, with who it is).
			e.Retry = true
			fail(w, http.StatusMisdirectedRequest, e)
		case errors.Is(err, paxos.ErrChangeInProgress):
			e.Retry = true
			fail(w, http.StatusConflict, e)
		case errors.Is(err, paxos.ErrQueueFull), errors.Is(err, engine.ErrChangeNotChosen):
			// Try again shortly; a change not chosen (leadership moved)
			// changed nothing.
			e.Retry = true
			fail(w, http.StatusServiceUnavailable, e)
		case errors.Is(err, engine.ErrStopped):
			fail(w, http.StatusServiceUnavailable, e)
		case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled), errors.Is(err, engine.ErrOutcomeUnknown):
			e.Error += " (the change may still be chosen: GET /members before trying again)"
			fail(w, http.StatusGatewayTimeout, e)
		default:
			// Refused: the sets are not a configuration.
			fail(w, http.StatusBadRequest, e)
		}
	}
}

// statusMembers is the configuration part of /status.
type statusMembers struct {
	// Epoch and Configuration are the configuration that governs the
	// applied index; Pending lists chosen changes that govern later slots.
	Epoch         uint64           `json:"epoch"`
	Configuration *membershipJSON  `json:"configuration,omitempty"`
	Pending       []membershipJSON `json:"pending_configurations,omitempty"`
}

// memberships is what /status needs of the replica (tests fake the rest).
type memberships interface{ Memberships() []engine.Membership }

func membersStatus(r replica) statusMembers {
	mr, ok := r.(memberships)
	if !ok {
		return statusMembers{}
	}
	ms := mr.Memberships()
	if len(ms) == 0 {
		return statusMembers{}
	}
	cur := toMembershipJSON(ms[0])
	out := statusMembers{Epoch: cur.Epoch, Configuration: &cur}
	for _, m := range ms[1:] {
		out.Pending = append(out.Pending, toMembershipJSON(m))
	}
	return out
}
