package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// fakeReplica serves GET /members, POST /members and GET /status as vestad
// does, for one replica of a fake cluster whose configuration they share.
type fakeCluster struct {
	mu       sync.Mutex
	cfg      membership
	applied  uint64
	leader   uint32
	busy     int // POSTs to answer 409 (another change in progress) first
	posts    []memberChange
	peersLag uint64
}

type memberChange struct {
	Voters   []uint32 `json:"voters"`
	Learners []uint32 `json:"learners"`
}

func (fc *fakeCluster) replica(id uint32) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/members", func(w http.ResponseWriter, r *http.Request) {
		fc.mu.Lock()
		defer fc.mu.Unlock()
		if r.Method == http.MethodGet {
			_ = json.NewEncoder(w).Encode(members{ID: id, Leader: fc.leader, Applied: fc.applied, Configurations: []membership{fc.cfg}})
			return
		}
		if id != fc.leader {
			w.WriteHeader(http.StatusMisdirectedRequest)
			_ = json.NewEncoder(w).Encode(memberError{Error: "not the leader", Leader: fc.leader, Retry: true})
			return
		}
		if fc.busy > 0 {
			fc.busy--
			w.WriteHeader(http.StatusConflict)
			_ = json.NewEncoder(w).Encode(memberError{Error: "paxos: a membership change is already in progress", Leader: fc.leader, Retry: true})
			return
		}
		var c memberChange
		if err := json.NewDecoder(r.Body).Decode(&c); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fc.posts = append(fc.posts, c)
		fc.cfg = membership{Epoch: fc.cfg.Epoch + 1, From: fc.applied + 10, Alpha: 10, Voters: c.Voters, Learners: c.Learners}
		fc.applied += 20 // in effect at once
		_ = json.NewEncoder(w).Encode(fc.cfg)
	})
	mux.HandleFunc("/status", func(w http.ResponseWriter, r *http.Request) {
		fc.mu.Lock()
		defer fc.mu.Unlock()
		role := "follower"
		var peers []map[string]any
		if id == fc.leader {
			role = "leader"
			for _, p := range append(append([]uint32{}, fc.cfg.Voters...), fc.cfg.Learners...) {
				if p != id {
					peers = append(peers, map[string]any{"id": p, "commit_lag": fc.peersLag, "last_contact_ns": 1e6})
				}
			}
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"role": role, "peers": peers})
	})
	return mux
}

func TestMemberCommands(t *testing.T) {
	fc := &fakeCluster{cfg: membership{Epoch: 1, Alpha: 10, Voters: []uint32{1, 2, 3}, Learners: []uint32{}}, applied: 100, leader: 2}
	var addrs []string
	for id := uint32(1); id <= 3; id++ {
		s := httptest.NewServer(fc.replica(id))
		defer s.Close()
		addrs = append(addrs, strings.TrimPrefix(s.URL, "http://"))
	}
	all := strings.Join(addrs, ",")
	run := func(args ...string) string {
		t.Helper()
		code, out, errOut := runCLI(append([]string{"-timeout", "10s", "member"}, args...)...)
		if code != 0 {
			t.Fatalf("member %v: exit %d\n%s%s", args, code, out, errOut)
		}
		return out
	}

	// The first address is a follower: the change goes to the leader, and
	// waits out a change in progress.
	fc.busy = 2
	if out := run("add", all, "4"); !strings.Contains(out, "chosen: epoch 2: voters 1,2,3, learners 4") || !strings.Contains(out, "in effect") {
		t.Fatalf("add:\n%s", out)
	}
	if out := run("add", all, "4"); !strings.Contains(out, "nothing to change") {
		t.Fatalf("add again:\n%s", out)
	}
	if out := run("promote", all, "4"); !strings.Contains(out, "caught up") || !strings.Contains(out, "voters 1,2,3,4, learners -") {
		t.Fatalf("promote:\n%s", out)
	}
	if out := run("replace", all, "1", "5"); !strings.Contains(out, "add 5 as a learner: chosen") || !strings.Contains(out, "voters 2,3,4,5, learners -") {
		t.Fatalf("replace:\n%s", out)
	}
	if out := run("remove", all, "4"); !strings.Contains(out, "voters 2,3,5, learners -") {
		t.Fatalf("remove:\n%s", out)
	}
	if out := run("list", all); !strings.Contains(out, "the leader") || !strings.Contains(out, "2,3,5") {
		t.Fatalf("list:\n%s", out)
	}
	if len(fc.posts) != 5 {
		t.Fatalf("%d changes posted, want 5: %v", len(fc.posts), fc.posts)
	}

	// A learner that does not catch up is not promoted.
	fc.peersLag = 5000
	run("add", all, "6")
	code, out, errOut := runCLI("-timeout", "1s", "member", "promote", all, "6")
	if code != 1 || !strings.Contains(errOut, "did not catch up") || !strings.Contains(errOut, "5000 slots behind") {
		t.Fatalf("promote of a lagging learner: exit %d\n%s%s", code, out, errOut)
	}
	// Only a follower given: say whose address is missing.
	code, _, errOut = runCLI("-timeout", "1s", "member", "remove", addrs[0], "6")
	if code != 1 || !strings.Contains(errOut, "replica 2 leads, and its -metrics-addr is not among") {
		t.Fatalf("remove through a follower only: exit %d\n%s", code, errOut)
	}
}
