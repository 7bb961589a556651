// Package session gives replicated state machines exactly-once writes.
//
// A proposer that gets engine.ErrOutcomeUnknown from Replica.Propose (the
// leader lost its leadership after proposing) cannot tell whether its
// command was applied. Retrying it blindly may apply it twice. A client
// session makes the retry safe: every write carries the client's session
// ID and a sequence number, and the replicated state machine keeps, per
// session, the result of every write the client may still retry. A retried
// write is not applied again; it gets the result of its first application.
//
// The package has three parts, usable separately:
//
//   - Table: the deterministic session table a state machine keeps inside
//     Apply (sessions, sequence numbers, cached results, eviction in log
//     order), with a canonical binary encoding for checkpoints. vestad's
//     key-value store (tools/vestad/kv) uses it directly.
//   - Wrap: an engine.StateMachine that gives any state machine
//     exactly-once writes. Its commands are envelopes (AppendWrite,
//     AppendNewSession); it decodes them, answers duplicates from the table
//     and hands the fresh payloads to the inner machine.
//   - Client: the proposer's side, over anything with Replica.Propose's
//     signature. Open opens a session; Client.Propose numbers a command and
//     retries it with the same number until its result arrives.
//
// # Sessions
//
// A write carries (client, seq, low): the session ID, the write's sequence
// number (from 1), and the lowest sequence number the client has not yet
// seen completed (its acknowledgement low mark). A session keeps the result
// of every write it applied whose sequence number is at or above its low
// mark, and forgets the rest as the mark advances. So a write retried with
// its sequence number applies once and the retry gets the first result,
// even when the client's later writes applied before it (several commands
// in flight). A write below the mark is refused as stale and not applied:
// the client saw it completed, or abandoned it.
//
// Sessions are opened through the log (NewSession) under IDs the table
// issues in log order from the reserved range [IssuedBase,
// IssuedBase+IssuedSpan): every replica issues the same ID to the same
// open. The table keeps at most Options.MaxSessions sessions and evicts the
// least recently used, by log order, so every replica evicts the same one.
// A write naming a session the table does not hold is refused as expired
// and not applied: never re-executed under a forgotten session. Since an
// issued ID is never issued again, a duplicate of an open applied after the
// session's eviction cannot bring the session back empty.
//
// # Determinism
//
// Every replica applies the same log, so it must take the same decisions:
// a Table's results depend only on the calls made on it, in order, and on
// its Options (which every replica must set alike; a checkpoint records
// them and a table refuses one written with others). Nothing in it reads a
// clock, a random number or map iteration order. The results a Machine
// returns for a command, including its error messages, are part of the
// replicated state machine's meaning.
package session
