// Package paxos is Vesta's multi-Paxos protocol as a pure, deterministic state
// machine. It has no goroutines, clock, I/O or global state: the caller steps
// it with messages (Step), time (Tick) and commands (Propose), then collects
// what to persist, send and apply (Ready) and reports that it has done so
// (Advance). The same sequence of calls always produces the same Readys, which
// is what lets the simulator replay a failing run from its seed.
//
// Every replica is acceptor and learner; the elected leader also proposes.
// A ballot is (round, replica). A follower that hears no leader for a
// randomized number of ticks runs phase 1 once for its whole unchosen suffix;
// the new leader re-proposes the highest-ballot value reported for each slot
// and fills holes with no-ops. Phase 2 is pipelined: up to Config.Window slots
// beyond the commit index are in flight, acceptors accept them in any order
// and acknowledge ranges. The commit index (every slot below it is chosen)
// rides on every Accept and Heartbeat; a replica that cannot tell a chosen
// value from what it holds asks for it (catch-up).
//
// # The Ready contract
//
// A Ready lists, in this order of obligation:
//
//  1. Send: messages the caller may send at once. They reveal no unpersisted
//     promise or vote (the leader's Accepts carry its own proposal, which the
//     leader counts as its vote only once persisted).
//  2. HardState and Entries: to be made durable, entries first (in order, a
//     later entry for the same slot replacing an earlier one), then the hard
//     state. A crash may keep any prefix of that sequence.
//  3. SendAfterPersist: messages that reveal a promise or vote; they may leave
//     only after everything in item 2 — of this Ready and all earlier ones —
//     is durable.
//  4. Apply: chosen entries, in slot order, without gaps, to apply to the
//     state machine. Applying needs no local durability: a chosen value is
//     already durable on a quorum.
//
// Once a Ready is durable the caller calls Advance, which always refers to the
// oldest Ready not yet advanced. Persistence may be pipelined: the caller may
// go on calling Step, Tick, Propose and Ready while earlier Readys are being
// written, so the leader keeps sending accepts during its own log sync and a
// log writer can cover many Readys with one sync (group commit). Readys must
// become durable in the order they were handed out.
package paxos
