package client

import (
	"encoding/json"
	"strconv"
	"strings"
	"time"

	"github.com/vestalabs/vesta/client/proto"
)

// This file is the client's sweeper: its coarse clock, the attempt and call
// timeouts, and failover. A leader that stops answering (SIGSTOP, a
// partition) keeps its TCP connections open, so nothing fails: requests just
// wait. The sweeper notices a connection that owes answers and has been
// silent for the hedge delay, a small multiple of that server's response
// time. If the silent server is the one the client takes for the leader, it
// asks the other servers for their status (OpStatus, answered locally, not
// through the log), and again every hedge delay while the silence lasts; a
// server that answers it leads under a ballot newer than the one the client
// knows becomes the client's leader. A silent connection to a server that is
// not (or no longer) the client's leader gives its waiting requests to the
// leader. So a client finds a new leader about one hedge delay after the
// cluster elects it, not an AttemptTimeout after the old one went quiet.
//
// Moving a request is a retry like any other: a write keeps its session and
// sequence number, so if the silent server wakes up and its copy applies too,
// the server's session dedups the second (package comment). Requests are
// taken out of the silent connection's pending table under its lock, which
// makes the sweeper their owner (call.go); a late answer from the old server
// then finds nothing pending under its ID and is dropped.

// sweepTiming is the sweeper's schedule, fixed at New. Durations in ns of the
// coarse clock.
type sweepTiming struct {
	fast, slow time.Duration // ticks while requests wait, and while none do
	scan       int64         // between scans of the pending tables for timeouts
	attempt    int64         // AttemptTimeout plus clock slack (0: no bound)
	hedge      int64         // Options.HedgeDelay: fixed (> 0), off (< 0), adaptive (0)
	hedgeMin   int64         // bounds of the adaptive hedge delay
	hedgeMax   int64
}

// The adaptive hedge delay's bounds (see Options.HedgeDelay), and the
// sweeper's ticks: fast enough to notice a silence a tick after the hedge
// delay; slow while the client has nothing in flight, when only the coarse
// clock needs a refresh (a send that finds the sweeper slow refreshes it).
const (
	hedgeMin    = 50 * time.Millisecond
	hedgeMax    = 500 * time.Millisecond
	fastTick    = 10 * time.Millisecond
	maxScan     = 250 * time.Millisecond
	idleToSlowN = 25 // fast ticks with nothing in flight before ticking slowly
)

func newSweepTiming(o *Options) sweepTiming {
	fast := fastTick
	if o.HedgeDelay > 0 {
		fast = min(fast, max(o.HedgeDelay/4, time.Millisecond))
	}
	if o.AttemptTimeout > 0 {
		fast = min(fast, max(o.AttemptTimeout/4, time.Millisecond))
	}
	scan := maxScan
	if o.AttemptTimeout > 0 {
		scan = min(scan, o.AttemptTimeout/4)
	}
	if o.CallTimeout > 0 {
		scan = min(scan, o.CallTimeout/4)
	}
	scan = max(scan, fast)
	sw := sweepTiming{fast: fast, slow: scan, scan: int64(scan), hedge: int64(o.HedgeDelay)}
	if o.AttemptTimeout > 0 {
		// sentAt is the coarse clock, up to a tick before the send: an
		// attempt times out between AttemptTimeout and AttemptTimeout+2 ticks.
		sw.attempt = int64(o.AttemptTimeout + fast)
	}
	hmax := hedgeMax
	if o.AttemptTimeout > 0 {
		hmax = min(hmax, max(o.AttemptTimeout/4, time.Millisecond))
	}
	sw.hedgeMax, sw.hedgeMin = int64(hmax), int64(min(hedgeMin, hmax))
	return sw
}

// touch refreshes the coarse clock and wakes the sweeper if it ticks slowly:
// a request is about to wait for an answer, and its send time and the
// silence of its connection must be measured from now.
func (c *Client) touch() {
	if !c.slow.Load() {
		return
	}
	c.now.Store(int64(time.Since(c.epoch)))
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// sweep runs the sweeper until the client closes: every tick it refreshes
// the coarse clock and looks at each connection that owes answers.
func (c *Client) sweep() {
	defer close(c.sweeperDone)
	timer := time.NewTimer(c.sw.fast)
	defer timer.Stop()
	var conns []*conn
	var buf []*op
	var lastScan int64
	idle := 0
	for {
		select {
		case <-c.quit:
			return
		case <-timer.C:
		case <-c.wake:
		}
		now := int64(time.Since(c.epoch))
		c.now.Store(now)
		scan := now-lastScan >= c.sw.scan
		if scan {
			lastScan = now
		}
		c.mu.Lock()
		for _, cn := range c.conns {
			conns = append(conns, cn)
		}
		c.mu.Unlock()
		busy := false
		for i, cn := range conns {
			var owed bool
			owed, buf = c.sweepConn(cn, now, scan, buf[:0])
			busy = busy || owed
			conns[i] = nil
		}
		conns = conns[:0]
		if busy {
			idle = 0
		} else {
			idle++
		}
		slow := idle >= idleToSlowN
		c.slow.Store(slow)
		if slow {
			timer.Reset(c.sw.slow)
		} else {
			timer.Reset(c.sw.fast)
		}
	}
}

// sweepConn handles one connection: on a scan, it fails the attempts past
// AttemptTimeout and the calls past their deadline; if the connection has
// been silent for its hedge delay, it moves its requests to the leader (not
// the leader's connection) or probes for a new leader (the leader's). It
// reports whether the connection owes answers; out is scratch space,
// returned for reuse.
func (c *Client) sweepConn(cn *conn, now int64, scan bool, out []*op) (bool, []*op) {
	attempt := c.sw.attempt
	cn.mu.Lock()
	if cn.pending.len() == 0 && len(cn.queued) == 0 {
		cn.mu.Unlock()
		return false, out
	}
	if scan {
		out = cn.pending.takeIf(func(o *op) bool {
			return (attempt > 0 && o.sentAt < now-attempt) || (o.deadline != 0 && o.deadline <= now)
		}, out)
	}
	expired := len(out)
	silent := now - max(cn.owedSince, cn.lastRecv)
	hedge := c.hedgeDelayLocked(cn)
	leader := *c.leader.Load()
	probe := false
	// A server whose only waiting requests are bounded reads may be
	// catching up to their min slot: its silence is no news of the leader
	// (it answers within its wait bound; AttemptTimeout bounds it if not).
	onlyBounded := cn.pending.bounded == cn.pending.len()
	for _, o := range cn.queued {
		onlyBounded = onlyBounded && o.bounded
	}
	if hedge > 0 && silent >= hedge && !onlyBounded {
		if cn.addr != leader {
			if cn.pending.movable() > 0 {
				out = cn.pending.takeIf(func(o *op) bool { return !o.stays() }, out)
			}
			// Requests queued for a dial that has not finished either.
			kept := cn.queued[:0]
			for _, o := range cn.queued {
				if o.stays() {
					kept = append(kept, o)
				} else {
					out = append(out, o)
				}
			}
			clear(cn.queued[len(kept):])
			cn.queued = kept
		} else {
			probe = true
		}
	}
	cn.mu.Unlock()
	if expired > 0 {
		timedOutAttempt := false
		for _, o := range out[:expired] {
			if o.deadline != 0 && o.deadline <= now {
				o.timedOut()
				continue
			}
			timedOutAttempt = true
			o.attemptFailed(cn.addr, errAttemptTimeout)
		}
		if timedOutAttempt {
			c.note(cn.addr, noteFailed, "no answer within the attempt timeout ("+c.opts.AttemptTimeout.String()+")", 0)
		}
	}
	if moved := out[expired:]; len(moved) > 0 {
		c.log.Debug("vesta client: moving requests off a silent server", "addr", cn.addr, "to", leader,
			"silent", time.Duration(silent), "requests", len(moved))
		c.note(cn.addr, noteFailed, "no answer for "+time.Duration(silent).Round(time.Millisecond).String(), 0)
		for _, o := range moved {
			c.move(o, leader)
		}
	}
	if probe {
		c.probe(cn.addr, silent, hedge, now)
	}
	clear(out)
	return true, out[:0]
}

// hedgeDelayLocked is cn's hedge delay in ns (0: off); cn.mu is held.
func (c *Client) hedgeDelayLocked(cn *conn) int64 {
	switch sw := &c.sw; {
	case sw.hedge < 0:
		return 0
	case sw.hedge > 0:
		return sw.hedge
	case !cn.sampled:
		return sw.hedgeMin
	default:
		return min(max(cn.srtt+4*cn.rttvar, sw.hedgeMin), sw.hedgeMax)
	}
}

// sampleLocked adds a response time (ns of the coarse clock) to cn's
// smoothed estimate, as TCP does (RFC 6298: gains 1/8 and 1/4); cn.mu is
// held. The coarse clock makes one sample crude, but its error averages
// out. Samples are capped at the hedge delay's upper bound, so that the
// late answers of a server that was paused do not hold its hedge delay high
// long after it recovered.
func (c *Client) sampleLocked(cn *conn, s int64) {
	s = min(max(s, 0), c.sw.hedgeMax)
	if !cn.sampled {
		cn.srtt, cn.rttvar, cn.sampled = s, s/2, true
		return
	}
	d := s - cn.srtt
	cn.srtt += d / 8
	if d < 0 {
		d = -d
	}
	cn.rttvar += (d - cn.rttvar) / 4
}

// move sends o, taken from a silent connection, to the leader at once: a
// new leader is news, so no backoff, and the backoff starts afresh.
func (c *Client) move(o *op, to string) {
	if o.state.Load() != 0 {
		return // abandoned: its caller has its answer
	}
	o.addr, o.hops, o.delay = to, 0, c.opts.BackoffMin
	c.send(o)
}

// probe asks every server but the silent leader at addr for its status,
// unless a round began less than hedge ago; a server already asked and not
// yet answering is not asked again.
func (c *Client) probe(addr string, silent, hedge, now int64) {
	c.mu.Lock()
	if c.closed || now-c.probedAt < hedge {
		c.mu.Unlock()
		return
	}
	c.probedAt = now
	var to []string
	for _, a := range c.addrs {
		if a != addr && !c.probing[a] {
			c.probing[a] = true
			to = append(to, a)
		}
	}
	c.noteLocked(addr, noteFailed, "no answer for "+time.Duration(silent).Round(time.Millisecond).String(), 0)
	c.mu.Unlock()
	c.log.Debug("vesta client: the leader is silent; asking the others who leads", "addr", addr, "silent", time.Duration(silent))
	for _, a := range to {
		c.sendProbe(a)
	}
}

// sendProbe sends a status request to addr, which c.probing marks.
func (c *Client) sendProbe(addr string) {
	o := c.newOp()
	o.req = proto.Request{Op: proto.OpStatus}
	o.addr, o.fixed = addr, true
	o.onDone = c.probed
	c.send(o)
}

// probed takes a probe's answer: a server that says it leads, under a ballot
// newer than the one the client's leader reported (if it did), and has not
// stopped, becomes the leader; a follower that names a leader the client
// does not take for one gets that leader probed too.
func (c *Client) probed(o *op, resp proto.Response, err error) {
	addr := o.addr
	o.release()
	var st ServerStatus
	// A replica that stopped (failed) may still call itself the leader.
	ok := err == nil && resp.Status == proto.StatusOK && json.Unmarshal(resp.Value, &st) == nil && !st.Stopped && st.Err == ""
	c.mu.Lock()
	delete(c.probing, addr)
	if !ok || c.closed {
		c.mu.Unlock()
		return
	}
	cur := *c.leader.Load()
	if st.Role == "leader" {
		b := parseBallot(st.Ballot)
		switch {
		case addr == cur:
			if c.leaderBallot.less(b) {
				c.leaderBallot = b
			}
		case c.leaderBallot.less(b):
			p := new(string)
			*p = addr
			c.leader.Store(p)
			c.leaderBallot = b
			c.mu.Unlock()
			c.log.Debug("vesta client: a new leader", "from", cur, "to", addr, "ballot", st.Ballot)
			return
		}
		c.mu.Unlock()
		return
	}
	hint := st.LeaderAddr
	ask := hint != "" && hint != cur && hint != addr && !c.probing[hint]
	if ask {
		c.probing[hint] = true
	}
	c.mu.Unlock()
	if ask {
		c.sendProbe(hint)
	}
}

// ballot is a replica's ballot as its status shows it ("round.replica"),
// ordered as the protocol orders them. The zero ballot is below every real
// one and stands for "unknown".
type ballot struct {
	round   uint64
	replica uint64
}

// parseBallot parses "round.replica"; anything else gives the zero ballot.
func parseBallot(s string) ballot {
	r, id, ok := strings.Cut(s, ".")
	if !ok {
		return ballot{}
	}
	round, err1 := strconv.ParseUint(r, 10, 64)
	replica, err2 := strconv.ParseUint(id, 10, 32)
	if err1 != nil || err2 != nil {
		return ballot{}
	}
	return ballot{round, replica}
}

func (b ballot) less(o ballot) bool {
	return b.round < o.round || (b.round == o.round && b.replica < o.replica)
}
