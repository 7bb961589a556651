package kv

import (
	"errors"
	"fmt"
)

// Read answers a command made only of gets (see Commands) from the store
// as it is, without it going through the log: the engine's read entry point
// (engine.Reader), which serves linearizable and lease reads at the leader
// and bounded-staleness reads anywhere. The result has the format and the
// meaning Apply gives the same command, read cap included. A command with
// any other operation, or malformed, is an error: writes go through the log.
// Call it between applies (the engine does), never during one.
func (s *Store) Read(cmd []byte) ([]byte, error) {
	recs, err := parseCommand(cmd, nil)
	if err != nil {
		return nil, err
	}
	if len(recs) == 0 {
		return nil, errors.New("kv: read of a command with no operations")
	}
	var out []byte
	s.readBytes = 0
	for i := range recs {
		r := &recs[i]
		if r.kind != Get {
			return nil, fmt.Errorf("kv: read of a command holding a %v (operation %d): only gets skip the log", r.kind, i)
		}
		out = s.apply(out, cmd, r, s.data.hash(r.key.in(cmd)))
	}
	return out, nil
}
