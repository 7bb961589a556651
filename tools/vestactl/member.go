package main

// vestactl member: show and change a cluster's member set through the
// replicas' operator endpoints (vestad -metrics-addr: GET and POST
// /members, GET /status).

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

const memberUsage = `member list ADDRS
  member add [-voter] ADDRS ID
  member promote ADDRS ID
  member remove ADDRS ID
  member replace ADDRS OLD NEW
(ADDRS: one or more replicas' -metrics-addr, comma-separated; the leader's among them)`

// memberTimeoutDefault is -timeout for member commands when not given: a
// replace adds a learner and waits for it to catch up.
const memberTimeoutDefault = 2 * time.Minute

// membership and members mirror vestad's /members answers.
type membership struct {
	Epoch    uint64   `json:"epoch"`
	From     uint64   `json:"from"`
	Alpha    uint64   `json:"alpha"`
	Voters   []uint32 `json:"voters"`
	Learners []uint32 `json:"learners"`
}

func (m membership) isVoter(id uint32) bool   { return slices.Contains(m.Voters, id) }
func (m membership) isLearner(id uint32) bool { return slices.Contains(m.Learners, id) }
func (m membership) isMember(id uint32) bool  { return m.isVoter(id) || m.isLearner(id) }

func (m membership) String() string {
	return fmt.Sprintf("epoch %d: voters %s, learners %s (governs from slot %d)", m.Epoch, ids(m.Voters), ids(m.Learners), m.From)
}

func ids(s []uint32) string {
	if len(s) == 0 {
		return "-"
	}
	parts := make([]string, len(s))
	for i, id := range s {
		parts[i] = strconv.FormatUint(uint64(id), 10)
	}
	return strings.Join(parts, ",")
}

type members struct {
	ID             uint32       `json:"id"`
	Leader         uint32       `json:"leader"`
	Applied        uint64       `json:"applied"`
	Commit         uint64       `json:"commit"`
	Configurations []membership `json:"configurations"`

	addr string // whose answer
}

func (m *members) newest() membership { return m.Configurations[len(m.Configurations)-1] }

type memberError struct {
	Error  string `json:"error"`
	Leader uint32 `json:"leader"`
	Retry  bool   `json:"retry"`
}

// memberOps talks to the replicas at addrs.
type memberOps struct {
	addrs  []string
	http   *http.Client
	out    io.Writer
	maxLag uint64
}

func memberCommand(ctx context.Context, args []string, out io.Writer) (int, error) {
	if len(args) < 2 {
		return 0, &usageError{"member: vestactl " + memberUsage}
	}
	sub := args[1]
	fs := flag.NewFlagSet("member "+sub, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	voter := fs.Bool("voter", false, "add: make it a voter once it has caught up (a learner first)")
	maxLag := fs.Uint64("max-lag", 1024, "add -voter, promote, replace: a learner counts as caught up within this many `SLOTS` of the leader's commit index")
	if err := fs.Parse(args[2:]); err != nil {
		return 0, &usageError{fmt.Sprintf("member %s: %v", sub, err)}
	}
	pos := fs.Args()
	nargs := map[string]int{"list": 1, "add": 2, "promote": 2, "remove": 2, "replace": 3}
	n, ok := nargs[sub]
	if !ok {
		return 0, &usageError{fmt.Sprintf("member: unknown subcommand %q: vestactl %s", sub, memberUsage)}
	}
	if len(pos) != n {
		return 0, &usageError{fmt.Sprintf("member %s takes %d argument(s), got %d: vestactl %s", sub, n, len(pos), memberUsage)}
	}
	if *voter && sub != "add" {
		return 0, &usageError{fmt.Sprintf("member %s: -voter is a flag of member add", sub)}
	}
	m := &memberOps{http: &http.Client{}, out: out, maxLag: *maxLag}
	for _, a := range strings.Split(pos[0], ",") {
		if a = strings.TrimSpace(a); a != "" {
			m.addrs = append(m.addrs, a)
		}
	}
	if len(m.addrs) == 0 {
		return 0, &usageError{"member: no METRICS-ADDR"}
	}
	var idArgs []uint32
	for _, s := range pos[1:] {
		id, err := strconv.ParseUint(s, 10, 32)
		if err != nil || id == 0 {
			return 0, &usageError{fmt.Sprintf("member %s: %q is not a replica ID", sub, s)}
		}
		idArgs = append(idArgs, uint32(id))
	}
	switch sub {
	case "list":
		return m.list(ctx)
	case "add":
		return m.add(ctx, idArgs[0], *voter)
	case "promote":
		return m.promote(ctx, idArgs[0])
	case "remove":
		return m.remove(ctx, idArgs[0])
	default:
		if idArgs[0] == idArgs[1] {
			return 0, &usageError{"member replace: OLD and NEW are the same replica"}
		}
		return m.replace(ctx, idArgs[0], idArgs[1])
	}
}

func (m *memberOps) list(ctx context.Context) (int, error) {
	v, err := m.leader(ctx, false)
	if err != nil {
		return 0, err
	}
	who := fmt.Sprintf("replica %d at %s", v.ID, v.addr)
	if v.Leader == v.ID {
		who += ", the leader"
	} else if v.Leader != 0 {
		who += fmt.Sprintf(" (replica %d leads)", v.Leader)
	}
	fmt.Fprintf(m.out, "%s; applied %d\n", who, v.Applied)
	tw := tabwriter.NewWriter(m.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "EPOCH\tFROM\tALPHA\tVOTERS\tLEARNERS\t")
	for i, c := range v.Configurations {
		note := ""
		if i > 0 {
			note = "(chosen, not in effect yet)"
		}
		fmt.Fprintf(tw, "%d\t%d\t%d\t%s\t%s\t%s\n", c.Epoch, c.From, c.Alpha, ids(c.Voters), ids(c.Learners), note)
	}
	return 0, tw.Flush()
}

func (m *memberOps) add(ctx context.Context, id uint32, voter bool) (int, error) {
	if _, err := m.change(ctx, "add", func(c membership) ([]uint32, []uint32, bool, error) {
		if c.isMember(id) {
			return nil, nil, true, nil
		}
		return c.Voters, sorted(append(slices.Clone(c.Learners), id)), false, nil
	}); err != nil {
		return 0, err
	}
	if !voter {
		return 0, nil
	}
	return m.promote(ctx, id)
}

func (m *memberOps) promote(ctx context.Context, id uint32) (int, error) {
	v, err := m.leader(ctx, true)
	if err != nil {
		return 0, err
	}
	if c := v.newest(); c.isVoter(id) {
		fmt.Fprintf(m.out, "replica %d already votes: %v\n", id, c)
		return 0, nil
	} else if !c.isLearner(id) {
		return 1, fmt.Errorf("member promote: replica %d is not a member (%v): member add it first", id, c)
	}
	if err := m.caughtUp(ctx, id); err != nil {
		return 1, err
	}
	_, err = m.change(ctx, "promote", func(c membership) ([]uint32, []uint32, bool, error) {
		if c.isVoter(id) {
			return nil, nil, true, nil
		}
		if !c.isLearner(id) {
			return nil, nil, false, fmt.Errorf("replica %d is no longer a learner (%v)", id, c)
		}
		return sorted(append(slices.Clone(c.Voters), id)), without(c.Learners, id), false, nil
	})
	return 0, err
}

func (m *memberOps) remove(ctx context.Context, id uint32) (int, error) {
	_, err := m.change(ctx, "remove", func(c membership) ([]uint32, []uint32, bool, error) {
		if !c.isMember(id) {
			return nil, nil, true, nil
		}
		voters := without(c.Voters, id)
		if len(voters) == 0 {
			return nil, nil, false, fmt.Errorf("replica %d is the only voter (%v): a cluster needs one", id, c)
		}
		return voters, without(c.Learners, id), false, nil
	})
	return 0, err
}

// replace swaps old for new in one change: new takes old's place (a voter
// for a voter). A new that is not a member yet is added as a learner first,
// and must catch up before the swap.
func (m *memberOps) replace(ctx context.Context, old, new uint32) (int, error) {
	v, err := m.leader(ctx, true)
	if err != nil {
		return 0, err
	}
	c := v.newest()
	switch {
	case !c.isMember(old) && c.isMember(new):
		fmt.Fprintf(m.out, "replica %d already replaced %d: %v\n", new, old, c)
		return 0, nil
	case !c.isMember(old):
		return 1, fmt.Errorf("member replace: replica %d is not a member (%v)", old, c)
	case c.isVoter(new):
		return 1, fmt.Errorf("member replace: replica %d already votes (%v): member remove %d instead", new, c, old)
	}
	if !c.isLearner(new) {
		if _, err := m.change(ctx, fmt.Sprintf("add %d as a learner", new), func(c membership) ([]uint32, []uint32, bool, error) {
			if c.isMember(new) {
				return nil, nil, true, nil
			}
			return c.Voters, sorted(append(slices.Clone(c.Learners), new)), false, nil
		}); err != nil {
			return 1, err
		}
	}
	if err := m.caughtUp(ctx, new); err != nil {
		return 1, err
	}
	_, err = m.change(ctx, "replace", func(c membership) ([]uint32, []uint32, bool, error) {
		switch {
		case !c.isMember(old) && c.isMember(new):
			return nil, nil, true, nil
		case !c.isLearner(new) || !c.isMember(old):
			return nil, nil, false, fmt.Errorf("the configuration changed meanwhile (%v)", c)
		}
		voters, learners := c.Voters, without(c.Learners, new)
		if c.isVoter(old) {
			voters = sorted(append(without(voters, old), new))
		} else {
			learners = sorted(append(without(learners, old), new))
		}
		return voters, learners, false, nil
	})
	return 0, err
}

func sorted(s []uint32) []uint32 { slices.Sort(s); return s }

func without(s []uint32, id uint32) []uint32 {
	return slices.DeleteFunc(slices.Clone(s), func(x uint32) bool { return x == id })
}

// change computes the new sets from the newest configuration at the leader
// and proposes them there, until the change is in effect. next says
// whether the configuration already is what the caller wants (done); it
// runs again after every retry, so a change that was chosen although its
// answer was lost is not proposed twice.
func (m *memberOps) change(ctx context.Context, what string, next func(membership) (voters, learners []uint32, done bool, err error)) (membership, error) {
	for attempt := 0; ; attempt++ {
		v, err := m.leader(ctx, true)
		if err != nil {
			return membership{}, err
		}
		c := v.newest()
		voters, learners, done, err := next(c)
		if err != nil {
			return membership{}, fmt.Errorf("member %s: %w", what, err)
		}
		if done {
			if attempt == 0 {
				fmt.Fprintf(m.out, "%s: nothing to change: %v\n", what, c)
			}
			return c, m.inEffect(ctx, c)
		}
		body, _ := json.Marshal(struct {
			Voters   []uint32 `json:"voters"`
			Learners []uint32 `json:"learners"`
		}{nonNil(voters), nonNil(learners)})
		code, resp, err := m.do(ctx, http.MethodPost, v.addr, "/members", body, 30*time.Second)
		if err != nil {
			if ctx.Err() != nil {
				return membership{}, fmt.Errorf("member %s: %w (the change may still be chosen: vestactl member list)", what, err)
			}
			sleep(ctx, 200*time.Millisecond) // the leader went away: find the next
			continue
		}
		if code == http.StatusOK {
			var nc membership
			if err := json.Unmarshal(resp, &nc); err != nil {
				return membership{}, fmt.Errorf("member %s: the answer %q: %w", what, resp, err)
			}
			fmt.Fprintf(m.out, "%s: chosen: %v\n", what, nc)
			return nc, m.inEffect(ctx, nc)
		}
		var e memberError
		_ = json.Unmarshal(resp, &e)
		if e.Error == "" {
			e.Error = strings.TrimSpace(string(resp))
		}
		switch {
		case code == http.StatusMisdirectedRequest || code == http.StatusConflict || (code == http.StatusServiceUnavailable && e.Retry):
			// Not the leader any more (the next round asks who is: the
			// hint's replica, if its address is among ADDRS), or another
			// change is not chosen yet: retry briefly.
			sleep(ctx, 200*time.Millisecond)
		case code == http.StatusGatewayTimeout:
			// The outcome is unknown: next sees whether it was chosen.
			sleep(ctx, 500*time.Millisecond)
		default:
			return membership{}, fmt.Errorf("member %s: replica %d at %s: %d %s", what, v.ID, v.addr, code, e.Error)
		}
	}
}

func nonNil(s []uint32) []uint32 {
	if s == nil {
		return []uint32{}
	}
	return s
}

// inEffect waits until the leader (or, once it is gone, another replica
// among ADDRS) has applied the slot from which c governs.
func (m *memberOps) inEffect(ctx context.Context, c membership) error {
	for {
		var best uint64
		for _, v := range m.views(ctx) {
			best = max(best, v.Applied)
		}
		if best >= c.From {
			fmt.Fprintf(m.out, "in effect at slot %d: voters %s, learners %s\n", c.From, ids(c.Voters), ids(c.Learners))
			return nil
		}
		if !sleep(ctx, 100*time.Millisecond) {
			return fmt.Errorf("epoch %d was chosen but is not in effect yet: no replica among %s has applied slot %d (%v)",
				c.Epoch, strings.Join(m.addrs, ","), c.From, ctx.Err())
		}
	}
}

// caughtUp waits until the leader's view of replica id (its /status peer
// health) is within maxLag slots of the leader's commit index. Where the
// leader shows no peer health (a vestad before it), it does not wait.
func (m *memberOps) caughtUp(ctx context.Context, id uint32) error {
	last := "the leader has not heard from it"
	for {
		v, err := m.leader(ctx, true)
		if err != nil {
			return err
		}
		code, body, err := m.do(ctx, http.MethodGet, v.addr, "/status", nil, 3*time.Second)
		if err == nil && code == http.StatusOK {
			var st struct {
				Role  string `json:"role"`
				Peers *[]struct {
					ID          uint32 `json:"id"`
					LastContact int64  `json:"last_contact_ns"`
					CommitLag   uint64 `json:"commit_lag"`
				} `json:"peers"`
			}
			if json.Unmarshal(body, &st) == nil && st.Role == "leader" {
				if st.Peers == nil {
					fmt.Fprintf(m.out, "replica %d at %s shows no peer health: not waiting for replica %d to catch up\n", v.ID, v.addr, id)
					return nil
				}
				for _, p := range *st.Peers {
					if p.ID != id {
						continue
					}
					if p.CommitLag <= m.maxLag && time.Duration(p.LastContact) < 2*time.Second {
						fmt.Fprintf(m.out, "replica %d caught up: %d slots behind the leader\n", id, p.CommitLag)
						return nil
					}
					last = fmt.Sprintf("%d slots behind the leader, last heard %v ago", p.CommitLag, time.Duration(p.LastContact).Round(time.Millisecond))
				}
			}
		}
		if !sleep(ctx, 200*time.Millisecond) {
			return fmt.Errorf("replica %d did not catch up to within %d slots of the leader (-max-lag): %s (%v); is it running (vestad -join)?", id, m.maxLag, last, ctx.Err())
		}
	}
}

// leader asks every address for /members and returns the leader's answer;
// with needLeader false, any answer will do (the leader's if there is one).
// It waits out an election.
func (m *memberOps) leader(ctx context.Context, needLeader bool) (*members, error) {
	for {
		vs := m.views(ctx)
		var any *members
		var hint uint32
		for _, v := range vs {
			if v.ID == v.Leader {
				return v, nil
			}
			if any == nil {
				any = v
			}
			if v.Leader != 0 {
				hint = v.Leader
			}
		}
		if !needLeader && any != nil {
			return any, nil
		}
		if !sleep(ctx, 200*time.Millisecond) {
			switch {
			case len(vs) == 0:
				return nil, fmt.Errorf("no replica at %s answers GET /members (%v): give replicas' -metrics-addr", strings.Join(m.addrs, ","), ctx.Err())
			case hint != 0:
				return nil, fmt.Errorf("replica %d leads, and its -metrics-addr is not among %s: add it", hint, strings.Join(m.addrs, ","))
			}
			return nil, fmt.Errorf("no replica at %s leads (%v)", strings.Join(m.addrs, ","), ctx.Err())
		}
	}
}

// views is every answering address's GET /members.
func (m *memberOps) views(ctx context.Context) []*members {
	var out []*members
	for _, a := range m.addrs {
		code, body, err := m.do(ctx, http.MethodGet, a, "/members", nil, 2*time.Second)
		if err != nil || code != http.StatusOK {
			continue
		}
		v := &members{addr: a}
		if json.Unmarshal(body, v) != nil || len(v.Configurations) == 0 {
			continue
		}
		out = append(out, v)
	}
	return out
}

func (m *memberOps) do(ctx context.Context, method, addr, path string, body []byte, timeout time.Duration) (int, []byte, error) {
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(rctx, method, "http://"+addr+path, rd)
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := m.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return 0, nil, err
	}
	return resp.StatusCode, b, nil
}

// sleep waits d, or less if ctx ends first; it reports whether ctx is
// still live.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
