// Command vestactl operates a vestad cluster: it shows each server's status,
// reads and writes keys, changes the member set (member), lists a replica's
// write-ahead log and checkpoints, and rebuilds a stopped replica's state
// offline (replay).
//
//	vestactl status
//	vestactl put KEY VALUE
//	vestactl get KEY
//	vestactl delete KEY
//	vestactl cas KEY EXPECTED VALUE
//	vestactl log dump DIR
//	vestactl checkpoint METRICS-ADDR
//	vestactl leader transfer METRICS-ADDR [ID]
//	vestactl member list|add|promote|remove|replace METRICS-ADDR[,...] ...
//	vestactl replay [-to SLOT] (DIR | pmem:PATH)
//
// -servers (or $VESTA_SERVERS) lists the servers' client addresses.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	iofs "io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/vestalabs/vesta/client"
	"github.com/vestalabs/vesta/engine/checkpoint"
	"github.com/vestalabs/vesta/engine/storage"
	"github.com/vestalabs/vesta/engine/storage/vfs"
)

const defaultServers = "127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usageText = `usage: vestactl [-servers HOST:PORT,...] [-timeout D] COMMAND [ARGS]

commands:
  status                     each server's role, leader, commit and applied index
                             (exit status 1 if a server does not answer)
  put KEY VALUE              set KEY to VALUE
  get KEY                    print KEY's value (exit status 1 if KEY does not exist);
                             -read-mode bounded [-min-slot N] [-allow-stale] reads at any
                             server once it has applied the slots below N
  delete KEY                 remove KEY
  cas KEY EXPECTED VALUE     set KEY to VALUE if its value is EXPECTED ("" matches a missing key)
  log dump DIR               list the write-ahead log in DIR: whose it is (cluster, replica,
                             members), then every record, checking its CRC
                             (exit status 1 if vestad would refuse to open it), and the
                             checkpoints in DIR/checkpoints
  checkpoint METRICS-ADDR    have the replica serving its operator endpoint (vestad -metrics-addr)
                             at METRICS-ADDR take a checkpoint now; print its slot once durable
  leader transfer METRICS-ADDR [ID]
                             have the leader serving its operator endpoint at METRICS-ADDR
                             hand leadership to replica ID (or the most caught-up one);
                             print who leads once another replica does
  member list ADDRS          the configurations (epoch, from slot, voters, learners), as the
                             leader (or else any replica) at ADDRS knows them: one or more
                             replicas' -metrics-addr, comma-separated
  member add [-voter] ADDRS ID
                             make replica ID (started with vestad -join) a learner; with
                             -voter, then a voter once it has caught up (-max-lag slots)
  member promote ADDRS ID    make learner ID a voter once it has caught up
  member remove ADDRS ID     remove replica ID (it exits once the others no longer need it)
  member replace ADDRS OLD NEW
                             NEW takes OLD's place in one change; NEW is added as a
                             learner first if it is not a member, and must catch up.
                             Each member command waits until its change is in effect,
                             retries while another change is in progress and follows
                             the leader among ADDRS (-timeout defaults to 2m for them)
  replay [-to SLOT] [-checkpoints CKDIR] (DIR | pmem:PATH)
                             rebuild a stopped replica's state offline: its newest valid
                             checkpoint, then its log; print the slot reached and the
                             state's digest (equal on every replica at that slot)

flags:
`

// usageError is a command line that cannot run; it prints the usage.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("vestactl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	servers := fs.String("servers", envOr("VESTA_SERVERS", defaultServers), "the servers' client `addresses`, comma-separated ($VESTA_SERVERS)")
	timeout := fs.Duration("timeout", 10*time.Second, "give up on a command after this long")
	verbose := fs.Bool("v", false, "log the client's redirects and retries")
	readMode := fs.String("read-mode", "index", "how get reads: index (the leader's read index, no log append), lease (the leader's lease, no round), log (through the log) "+
		"or bounded (at any server, round robin, once its replica has applied the slots below -min-slot; not linearizable)")
	var minSlot uint64
	fs.Uint64Var(&minSlot, "min-slot", 0, "-read-mode bounded: the `SLOT` the state read must have reached (every slot below it applied): another client's seen slot, or a replica's applied index")
	allowStale := fs.Bool("allow-stale", false, "-read-mode bounded: answer at once from what the server's replica has applied, even below -min-slot (said on stderr)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usageText)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	reads, err := client.ParseReadMode(*readMode)
	if err != nil {
		fmt.Fprintf(stderr, "vestactl: -read-mode: %v\n", err)
		return 2
	}
	if reads != client.ReadAtAnyReplica && (minSlot != 0 || *allowStale) {
		fmt.Fprintf(stderr, "vestactl: -min-slot and -allow-stale need -read-mode bounded (this is -read-mode %v)\n", reads)
		return 2
	}
	if *timeout <= 0 {
		fmt.Fprintf(stderr, "vestactl: -timeout: %v is not positive\n", *timeout)
		return 2
	}
	var addrs []string
	for _, a := range strings.Split(*servers, ",") {
		if a = strings.TrimSpace(a); a != "" {
			addrs = append(addrs, a)
		}
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	d := *timeout
	if fs.NArg() > 0 && fs.Arg(0) == "member" {
		set := false
		fs.Visit(func(f *flag.Flag) { set = set || f.Name == "timeout" })
		if !set {
			d = memberTimeoutDefault
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	opts := client.Options{Logger: logger, Reads: reads}
	code, err := command(ctx, fs.Args(), addrs, opts, getBounded{client.BoundedRead{MinSlot: client.Slot(minSlot), AllowStale: *allowStale}, stderr}, stdout)
	var ue *usageError
	switch {
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "vestactl: %v\n\n", err)
		fs.Usage()
		return 2
	case err != nil:
		fmt.Fprintf(stderr, "vestactl: %v\n", err)
		return 1
	}
	return code
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// want checks a command's argument count.
func want(args []string, n int, synopsis string) error {
	if len(args)-1 != n {
		return &usageError{fmt.Sprintf("%s takes %d argument(s), got %d: vestactl %s", args[0], n, len(args)-1, synopsis)}
	}
	return nil
}

// getBounded is how get reads with -read-mode bounded, and where it says a
// stale answer.
type getBounded struct {
	read   client.BoundedRead
	stderr io.Writer
}

func command(ctx context.Context, args, addrs []string, opts client.Options, gb getBounded, out io.Writer) (int, error) {
	logger := opts.Logger
	if len(args) == 0 {
		return 0, &usageError{"no command"}
	}
	if args[0] == "replay" {
		return replay(args[1:], out, logger)
	}
	if args[0] == "checkpoint" {
		if err := want(args, 1, "checkpoint METRICS-ADDR"); err != nil {
			return 0, err
		}
		return checkpointNow(ctx, args[1], out)
	}
	if args[0] == "leader" {
		if len(args) < 3 || len(args) > 4 || args[1] != "transfer" {
			return 0, &usageError{"leader: vestactl leader transfer METRICS-ADDR [ID] (the leader's -metrics-addr; ID: the new leader, or the most caught-up replica)"}
		}
		to := ""
		if len(args) == 4 {
			to = args[3]
		}
		return leaderTransfer(ctx, args[2], to, out)
	}
	if args[0] == "member" {
		return memberCommand(ctx, args, out)
	}
	if args[0] == "log" {
		if len(args) < 2 || args[1] != "dump" {
			return 0, &usageError{"log: the only subcommand is dump: vestactl log dump DIR"}
		}
		if len(args) != 3 {
			return 0, &usageError{"log dump takes one argument: vestactl log dump DIR"}
		}
		return logDump(args[2], out)
	}
	var err error
	switch args[0] {
	case "status":
		err = want(args, 0, "status")
	case "put":
		err = want(args, 2, "put KEY VALUE")
	case "get":
		err = want(args, 1, "get KEY")
	case "delete":
		err = want(args, 1, "delete KEY")
	case "cas":
		err = want(args, 3, "cas KEY EXPECTED VALUE")
	default:
		err = &usageError{fmt.Sprintf("unknown command %q", args[0])}
	}
	if err != nil {
		return 0, err
	}
	if len(addrs) == 0 {
		return 0, &usageError{"-servers: no addresses"}
	}
	c, err := client.New(addrs, opts)
	if err != nil {
		return 0, &usageError{"-servers: " + err.Error()}
	}
	defer c.Close()
	switch args[0] {
	case "status":
		return status(ctx, c, addrs, out)
	case "put":
		if err := c.Put(ctx, []byte(args[1]), []byte(args[2])); err != nil {
			return 0, err
		}
		fmt.Fprintln(out, "ok")
	case "get":
		var v []byte
		var found bool
		if opts.Reads == client.ReadAtAnyReplica {
			r, err := c.GetBounded(ctx, []byte(args[1]), gb.read)
			if err != nil {
				return 0, err
			}
			v, found = r.Value, r.Found
			if r.Stale {
				fmt.Fprintf(gb.stderr, "vestactl: stale: the replica had applied the slots below %d, not yet those below -min-slot %d\n", r.Applied, gb.read.MinSlot)
			}
		} else {
			v, found, err = c.Get(ctx, []byte(args[1]))
			if err != nil {
				return 0, err
			}
		}
		if !found {
			fmt.Fprintf(out, "%s: not found\n", args[1])
			return 1, nil
		}
		out.Write(append(v, '\n'))
	case "delete":
		existed, err := c.Delete(ctx, []byte(args[1]))
		if err != nil {
			return 0, err
		}
		if existed {
			fmt.Fprintln(out, "deleted")
		} else {
			fmt.Fprintln(out, "not found (nothing deleted)")
		}
	case "cas":
		swapped, err := c.CAS(ctx, []byte(args[1]), []byte(args[2]), []byte(args[3]))
		if err != nil {
			return 0, err
		}
		if !swapped {
			fmt.Fprintln(out, "not swapped: the value is not the expected one")
			return 1, nil
		}
		fmt.Fprintln(out, "swapped")
	}
	return 0, nil
}

// status prints every server's view; exit status 1 if any is unreachable.
func status(ctx context.Context, c *client.Client, addrs []string, out io.Writer) (int, error) {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVER\tID\tROLE\tLEADER\tCOMMIT\tAPPLIED\tLOG")
	code := 0
	for _, a := range addrs {
		st, err := c.Status(ctx, a)
		if err != nil {
			code = 1
			fmt.Fprintf(tw, "%s\t-\tunreachable\t-\t-\t-\t%v\n", a, err)
			continue
		}
		leader := "unknown"
		if st.Leader != 0 {
			leader = fmt.Sprint(st.Leader)
			if st.LeaderAddr != "" {
				leader += " (" + st.LeaderAddr + ")"
			}
		}
		role := st.Role
		if st.Err != "" {
			role += " (failed: " + st.Err + ")"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%d\t%d\t%s\n", a, st.ID, role, leader, st.Commit, st.Applied, st.Durability)
	}
	return code, tw.Flush()
}

func logDump(dir string, out io.Writer) (int, error) {
	if fi, err := os.Stat(dir); err != nil {
		return 0, fmt.Errorf("log dump: %w", err)
	} else if !fi.IsDir() {
		return 0, fmt.Errorf("log dump: %s is not a directory (give the replica's -data directory)", dir)
	}
	var buf bytes.Buffer
	if err := storage.DumpWAL(dir, &buf); err != nil {
		return 0, fmt.Errorf("log dump: %w", err)
	}
	if _, err := out.Write(buf.Bytes()); err != nil {
		return 0, err
	}
	listCheckpoints(filepath.Join(dir, "checkpoints"), out)
	if bytes.Contains(buf.Bytes(), []byte("\nOpenWAL refuses this log")) {
		return 1, nil
	}
	return 0, nil
}

// listCheckpoints lists the checkpoints in dir, newest first, with whatever
// makes one unusable.
func listCheckpoints(dir string, out io.Writer) {
	infos, err := checkpoint.List(vfs.Default, dir)
	if err != nil {
		if !errors.Is(err, iofs.ErrNotExist) {
			fmt.Fprintf(out, "checkpoints in %s: %v\n", dir, err)
		}
		return
	}
	fmt.Fprintf(out, "checkpoints in %s: %d\n", dir, len(infos))
	for _, in := range infos {
		verdict := "ok"
		if in.Err == nil {
			if err := checkpoint.Verify(vfs.Default, in.Path); err != nil {
				in.Err = err
			}
		}
		if in.Err != nil {
			verdict = "DAMAGED: " + in.Err.Error()
		}
		fmt.Fprintf(out, "  %s: slot %d, image %d bytes, cluster %d, written by replica %d; %s\n",
			filepath.Base(in.Path), in.Meta.Slot, in.Meta.Size, in.Meta.ClusterID, in.Meta.Replica, verdict)
	}
}
