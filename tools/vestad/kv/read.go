package kv

import (
	"errors"
	"fmt"
)

// Read answers a command made only of gets (see Commands) from the store
// as it is, without it going through the log: the engine's read entry point
// (engine.Reader), which serves linearizable and lease reads at the leader
// and bounded-staleness reads anywhere. The result has the format and the
// meaning Apply gives the same command, read cap included, and is computed
// the way Apply computes it (decoded ahead, the keys' memory touched in
// groups, so their cache misses overlap). A command with any other
// operation, or malformed, is an error: writes go through the log. Call it
// between applies (the engine does), never during one.
func (s *Store) Read(cmd []byte) ([]byte, error) {
	cmds := [][]byte{cmd}
	res := [][]byte{nil}
	s.decode(cmds, res)
	if res[0] != nil { // refused: malformed
		_, err := parseCommand(cmd, nil)
		if err == nil {
			err = errors.New("kv: read of a malformed command")
		}
		return nil, err
	}
	n := s.ends[0]
	if n == 0 {
		return nil, errors.New("kv: read of a command with no operations")
	}
	for i, r := range s.recs[:n] {
		if r.kind != Get {
			return nil, fmt.Errorf("kv: read of a command holding a %v (operation %d): only gets skip the log", r.kind, i)
		}
	}
	s.execute(cmds, res)
	return res[0], nil
}
