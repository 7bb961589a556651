package paxos

// Bug is a protocol defect planted on purpose to prove that the simulator's
// checkers are not vacuous. Bugs can be planted only from test builds (see
// PlantBug, which exists only with the contracts build tag); in every other
// build a Node's bug set is always empty.
type Bug uint32

const (
	// BugAcceptBelowPromise: the acceptor accepts (and acknowledges)
	// proposals whose ballot is below its promise.
	BugAcceptBelowPromise Bug = 1 << iota
	// BugRevealBeforePersist: promises and votes leave before they are durable.
	BugRevealBeforePersist
	// BugCountUnpersistedVote: the leader counts its own vote before it is durable.
	BugCountUnpersistedVote
	// BugPromiseForgets: a promise omits the acceptor's accepted entries.
	BugPromiseForgets
	// BugSmallQuorum: a quorum is one replica smaller than a majority.
	BugSmallQuorum
	// BugLeadBeforeOwnPromise: a candidate leads on its peers' promises
	// alone, before its own promise of the ballot is durable. A crash then
	// lets the next incarnation pick the same ballot and propose a second
	// value in a slot under it (issue 12, item 1).
	BugLeadBeforeOwnPromise
	// BugInstallOffByOne: a replica that installs a checkpoint of slot s
	// takes it for one of slot s+1, so it never applies slot s (issue 13).
	BugInstallOffByOne
	// BugReadWithoutQuorum: a leader serves a read index without its probe
	// round, as if every replica had confirmed it still leads (issue 15).
	BugReadWithoutQuorum
	// BugConfigAtChosenSlot: a membership change takes effect in the slot
	// after the one it is chosen in, instead of α slots later (issue 15).
	BugConfigAtChosenSlot
)

// AllBugs lists every plantable bug with its name.
var AllBugs = []struct {
	Bug  Bug
	Name string
}{
	{BugAcceptBelowPromise, "accept-below-promise"},
	{BugRevealBeforePersist, "reveal-before-persist"},
	{BugCountUnpersistedVote, "count-unpersisted-vote"},
	{BugPromiseForgets, "promise-forgets-accepted"},
	{BugSmallQuorum, "small-quorum"},
	{BugLeadBeforeOwnPromise, "lead-before-own-promise"},
	{BugInstallOffByOne, "install-snapshot-off-by-one"},
	{BugReadWithoutQuorum, "read-index-without-quorum"},
	{BugConfigAtChosenSlot, "config-at-chosen-slot"},
}
