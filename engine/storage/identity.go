package storage

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/vestalabs/vesta/engine/wire"
)

// Identity says whose a durable log is: the cluster, the replica of that
// cluster, and the member set the cluster was created with. It is written
// into a log when the log is created and checked every time the log is
// opened, so that a replica never runs on another cluster's or another
// replica's promises and votes (one acceptor's votes on two replicas breaks
// quorum intersection), and never starts afresh on a directory that lost
// its log without being told this is a new cluster.
type Identity struct {
	ClusterID uint64
	ReplicaID wire.ReplicaID
	// Members in ascending order (Validate refuses anything else).
	Members []wire.ReplicaID
}

// Validate reports whether the identity can be written into a log: a
// non-zero cluster ID, a replica that is one of the members, members in
// ascending order without repeats and none of them zero.
func (id Identity) Validate() error {
	if id.ClusterID == 0 {
		return errors.New("storage: identity: cluster ID 0 (cluster IDs start at 1)")
	}
	if len(id.Members) == 0 {
		return errors.New("storage: identity: no members")
	}
	for i, m := range id.Members {
		if m == 0 {
			return errors.New("storage: identity: member ID 0")
		}
		if i > 0 && id.Members[i-1] >= m {
			return fmt.Errorf("storage: identity: members %v not in ascending order without repeats", id.Members)
		}
	}
	if !slices.Contains(id.Members, id.ReplicaID) {
		return fmt.Errorf("storage: identity: replica %d is not one of the members %v", id.ReplicaID, id.Members)
	}
	return nil
}

// Equal reports whether two identities are the same.
func (id Identity) Equal(o Identity) bool {
	return id.ClusterID == o.ClusterID && id.ReplicaID == o.ReplicaID && slices.Equal(id.Members, o.Members)
}

func (id Identity) String() string {
	return fmt.Sprintf("cluster %d, replica %d, members %s", id.ClusterID, id.ReplicaID, formatMembers(id.Members))
}

func formatMembers(ms []wire.ReplicaID) string {
	parts := make([]string, len(ms))
	for i, m := range ms {
		parts[i] = strconv.FormatUint(uint64(m), 10)
	}
	return "{" + strings.Join(parts, ",") + "}"
}

// Check compares the identity found in a log (id) with the one the caller
// expects, and returns a *IdentityError naming the first field that differs
// (cluster first, then replica, then members), or nil.
func (id Identity) Check(path string, want Identity) error {
	switch {
	case id.ClusterID != want.ClusterID:
		return &IdentityError{Path: path, Field: "cluster", Found: id, Want: want}
	case id.ReplicaID != want.ReplicaID:
		return &IdentityError{Path: path, Field: "replica", Found: id, Want: want}
	case !slices.Equal(id.Members, want.Members):
		return &IdentityError{Path: path, Field: "members", Found: id, Want: want}
	}
	return nil
}

// IdentityError refuses a log that belongs to someone else: another cluster,
// another replica of the same cluster, or the same replica under another
// member set. Field says which ("cluster", "replica" or "members").
type IdentityError struct {
	Path  string // the log's file or directory
	Field string
	Found Identity // what the log records
	Want  Identity // what the caller asked for
}

func (e *IdentityError) Error() string {
	var what string
	switch e.Field {
	case "cluster":
		what = fmt.Sprintf("belongs to cluster %d, not cluster %d: this is another cluster's log (check -cluster-id and -data)",
			e.Found.ClusterID, e.Want.ClusterID)
	case "replica":
		what = fmt.Sprintf("belongs to replica %d, not replica %d: running one replica's promises and votes as another's breaks quorum intersection (check -id and -data; a replica whose log was lost must join as a new member)",
			e.Found.ReplicaID, e.Want.ReplicaID)
	default:
		what = fmt.Sprintf("was created for members %s, not %s (the member set comes from the log; check -peers)",
			formatMembers(e.Found.Members), formatMembers(e.Want.Members))
	}
	return "storage: log " + e.Path + " " + what
}

// ErrNoLog is returned (wrapped, with the path) by a durable log's open when
// there is no log to open and the caller did not ask to create one
// (bootstrap). A replica whose log is gone must not start afresh: it would
// have forgotten its promises and votes and could vote again.
var ErrNoLog = errors.New("no log here; if this is a new cluster, start it with -bootstrap (a replica that lost its log must not rejoin under its old identity)")

// ErrAlreadyBootstrapped is returned (wrapped, with the path) by a durable
// log's open when the caller asked to create a new log (bootstrap) where one
// already exists.
var ErrAlreadyBootstrapped = errors.New("a log already exists here: this replica was bootstrapped before (start it without -bootstrap)")

// Identified is implemented by a durable log that records its Identity. The
// engine checks it against its own configuration at start.
type Identified interface {
	Identity() Identity
}

// CreateMode says what opening a durable log may do when there is no log.
// The zero value, MustExist, is the safe one for a replica's restart.
type CreateMode uint8

const (
	// MustExist opens an existing log and refuses (ErrNoLog) where there
	// is none: a replica's every start after the first.
	MustExist CreateMode = iota
	// MustCreate creates a new log with the given identity and refuses
	// (ErrAlreadyBootstrapped) where a log exists: bootstrap.
	MustCreate
	// CreateIfMissing opens the log, creating it where there is none. For
	// tests, tools and benchmarks that make their own fresh directories;
	// a replica of a real cluster uses MustExist or MustCreate.
	CreateIfMissing
)

func (m CreateMode) String() string {
	switch m {
	case MustExist:
		return "must-exist"
	case MustCreate:
		return "must-create"
	case CreateIfMissing:
		return "create-if-missing"
	}
	return "CreateMode(" + strconv.Itoa(int(m)) + ")"
}
