package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/vestalabs/vesta/engine"
	"github.com/vestalabs/vesta/engine/checkpoint"
	"github.com/vestalabs/vesta/engine/paxos"
	"github.com/vestalabs/vesta/engine/storage"
	"github.com/vestalabs/vesta/engine/storage/vfs"
	"github.com/vestalabs/vesta/engine/wire"
	"github.com/vestalabs/vesta/pmem"
	"github.com/vestalabs/vesta/tools/vestad/kv"
)

const replaySynopsis = "replay [-to SLOT] [-checkpoints DIR] [-max-sessions N] (DIR | pmem:PATH)"

// replay rebuilds a stopped replica's key-value state offline, as RSL's
// Replay tool does: the newest checkpoint that verifies whole (its
// directory as vestad's default: DIR/checkpoints, or PATH.checkpoints), then
// the chosen entries of its log after it, up to the log's durable commit
// index or -to. It prints the slot reached and a digest of the state (the
// SHA-256 of its canonical image), which equals the digest of every replica
// of the cluster at that slot. It opens the log as vestad would (a torn tail
// is dropped), so the replica must not be running.
func replay(args []string, out io.Writer, logger *slog.Logger) (int, error) {
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	to := fs.Uint64("to", 0, "stop at this slot (every slot below it applied); 0: the log's durable commit index")
	ckDir := fs.String("checkpoints", "", "the replica's checkpoint directory (default: vestad's for the log)")
	maxSessions := fs.Int("max-sessions", 100_000, "vestad's -max-sessions for the replica (a checkpoint records it)")
	if err := fs.Parse(args); err != nil {
		return 0, &usageError{"replay: " + err.Error() + ": vestactl " + replaySynopsis}
	}
	if fs.NArg() != 1 {
		return 0, &usageError{"replay takes the replica's log: vestactl " + replaySynopsis}
	}
	where := fs.Arg(0)
	p, defaultCk, err := loadLog(where)
	if err != nil {
		return 0, fmt.Errorf("replay: %w", err)
	}
	if *ckDir == "" {
		*ckDir = defaultCk
	}
	store := kv.New(kv.Options{MaxSessions: *maxSessions})
	var from wire.Slot
	rd, err := checkpoint.OpenNewestValid(vfs.Default, *ckDir, logger)
	switch {
	case errors.Is(err, checkpoint.ErrNoCheckpoint):
		fmt.Fprintf(out, "checkpoint: none in %s; replaying the log from slot 0\n", *ckDir)
	case err != nil:
		return 0, fmt.Errorf("replay: %w", err)
	default:
		err := store.Restore(rd)
		rd.Close()
		if err != nil {
			return 0, fmt.Errorf("replay: restoring %s: %w", rd.Info().Path, err)
		}
		from = rd.Meta().Slot
		fmt.Fprintf(out, "checkpoint: %s (slot %d, %d bytes)\n", rd.Info().Path, from, rd.Meta().Size)
	}
	end := p.HardState.Commit
	if *to != 0 {
		if wire.Slot(*to) > end {
			return 0, fmt.Errorf("replay: -to %d is beyond the log's durable commit index %d", *to, end)
		}
		if wire.Slot(*to) < from {
			return 0, fmt.Errorf("replay: -to %d is below the checkpoint's slot %d (give -checkpoints a directory with an older one)", *to, from)
		}
		end = wire.Slot(*to)
	}
	// A later entry for a slot replaces an earlier one (the Log contract);
	// below the durable commit index every slot holds its chosen value.
	chosen := map[wire.Slot]wire.Value{}
	for _, e := range p.Entries {
		if e.Slot >= from && e.Slot < end {
			chosen[e.Slot] = e.Value
		}
	}
	var cmds, results [][]byte
	applied := 0
	for s := from; s < end; s++ {
		v, ok := chosen[s]
		if !ok {
			return 0, fmt.Errorf("replay: slot %d is in neither the checkpoint (slot %d) nor the log: the log was compacted below a checkpoint that is missing or damaged", s, from)
		}
		if cmds, err = engine.BatchCommands(v, cmds); err != nil {
			return 0, fmt.Errorf("replay: slot %d: %w (every replica skips it alike)", s, err)
		}
		if len(cmds) == 0 {
			continue
		}
		results = append(results[:0], make([][]byte, len(cmds))...)
		store.Apply(cmds, results)
		applied += len(cmds)
	}
	d := store.Digest()
	fmt.Fprintf(out, "log: slots %d to %d, %d commands applied\n", from, end, applied)
	fmt.Fprintf(out, "slot %d: %d keys, %d sessions, digest %s\n", end, store.Keys(), store.Sessions(), hex.EncodeToString(d[:]))
	return 0, nil
}

// loadLog reads a stopped replica's log: a WAL directory, or pmem:PATH. It
// returns the durable state and vestad's default checkpoint directory for it.
func loadLog(where string) (paxos.Persisted, string, error) {
	var l storage.Log
	var ck string
	if path, ok := strings.CutPrefix(where, "pmem:"); ok {
		id, err := pmem.ReadIdentity(path)
		if err != nil {
			return paxos.Persisted{}, "", err
		}
		pl, err := pmem.Open(path, pmem.Options{Identity: id})
		if err != nil {
			return paxos.Persisted{}, "", err
		}
		l, ck = pl, path+".checkpoints"
	} else {
		id, err := storage.WALIdentity(vfs.Default, where)
		if err != nil {
			return paxos.Persisted{}, "", err
		}
		w, err := storage.OpenWAL(where, storage.WALOptions{Identity: id, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			return paxos.Persisted{}, "", err
		}
		l, ck = w, filepath.Join(where, "checkpoints")
	}
	defer l.Close()
	p, err := l.Load()
	return p, ck, err
}

// checkpointNow asks the replica whose operator endpoint (vestad
// -metrics-addr) is addr to take a checkpoint now.
func checkpointNow(ctx context.Context, addr string, out io.Writer) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/checkpoint", nil)
	if err != nil {
		return 0, &usageError{"checkpoint: " + err.Error()}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("checkpoint: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return 1, fmt.Errorf("checkpoint: %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	var r struct {
		Slot uint64 `json:"slot"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return 0, fmt.Errorf("checkpoint: the answer %q: %w", body, err)
	}
	fmt.Fprintf(out, "checkpoint at slot %d\n", r.Slot)
	return 0, nil
}

// leaderTransfer asks the leader at addr (its -metrics-addr) to hand
// leadership to replica to ("": the most caught-up one) and prints who
// leads once another replica does.
func leaderTransfer(ctx context.Context, addr, to string, out io.Writer) (int, error) {
	u := "http://" + addr + "/leader/transfer"
	if to != "" {
		if _, err := strconv.ParseUint(to, 10, 32); err != nil {
			return 0, &usageError{fmt.Sprintf("leader transfer: %q is not a replica ID", to)}
		}
		u += "?to=" + to
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, nil)
	if err != nil {
		return 0, &usageError{"leader transfer: " + err.Error()}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("leader transfer: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return 1, fmt.Errorf("leader transfer: %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	var r struct {
		Leader uint32 `json:"leader"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return 0, fmt.Errorf("leader transfer: the answer %q: %w", body, err)
	}
	fmt.Fprintf(out, "replica %d leads\n", r.Leader)
	return 0, nil
}
