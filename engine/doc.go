// Package engine is Vesta's public API: a Replica that keeps an application's
// StateMachine identical on every member of a cluster, using the pipelined
// multi-Paxos core of package paxos over a storage.Log and a
// transport.Transport.
//
// # Goroutines and hand-offs
//
// A write's path, and the goroutine that owns each hop:
//
//  1. Propose, from any goroutine, appends the command to the submission
//     queue and waits on its own completion; no goroutine per request.
//  2. The core loop owns the protocol (paxos.Node). It drains the submission
//     queue into batches (bounded by Config.MaxBatchCommands and
//     MaxBatchBytes), proposes them, steps inbound message batches and ticks,
//     and hands each Ready on: its Send messages to the transport at once, the
//     Ready itself to the log writer, its chosen entries to the applier.
//  3. The log writer appends every Ready that arrived while the previous sync
//     ran and syncs once (group commit); then it sends their
//     SendAfterPersist messages and tells the core loop how many Readys are
//     durable, which the core loop Advances.
//  4. The transport frames and sends; its readers hand inbound batches to the
//     core loop.
//  5. The applier applies chosen batches in slot order and completes the
//     callers whose commands they hold.
//
// Every hand-off moves a batch (of commands, messages, Readys or entries),
// never a single item.
package engine
