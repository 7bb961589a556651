package engine

import (
	"fmt"
	"slices"

	"github.com/vestalabs/vesta/engine/storage"
)

// checkIdentity refuses a log that records another replica, another member
// set or (when Config.ClusterID is set) another cluster than cfg (the member
// set it was created with: Config.Members, and itself when it joined; the
// configuration itself comes from checkpoints and the log): a replica
// must never run on another's promises and votes. Logs that record no
// identity (storage.MemLog) are not checked.
func checkIdentity(cfg *Config) error {
	il, ok := cfg.Log.(storage.Identified)
	if !ok {
		return nil
	}
	id := il.Identity()
	members := slices.Clone(cfg.Members)
	if cfg.Join && !slices.Contains(members, cfg.ID) {
		// A replica that joined records the replicas it asked, and itself.
		members = append(members, cfg.ID)
	}
	slices.Sort(members)
	want := storage.Identity{ClusterID: id.ClusterID, ReplicaID: cfg.ID, Members: members}
	if cfg.ClusterID != 0 {
		want.ClusterID = cfg.ClusterID
	}
	if err := id.Check(logName(cfg.Log), want); err != nil {
		return fmt.Errorf("vesta: %w", err)
	}
	return nil
}

// logName names a log in errors: its path where it has one.
func logName(l storage.Log) string {
	switch v := l.(type) {
	case interface{ Path() string }:
		return v.Path()
	case interface{ Dir() string }:
		return v.Dir()
	}
	return fmt.Sprintf("%T", l)
}
