package storage

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/vestalabs/vesta/engine/storage/vfs"
	"github.com/vestalabs/vesta/engine/wire"
)

// A log knows whose it is (issue 12, item 9): a replica never runs on
// another cluster's or another replica's promises and votes, and never
// starts afresh where its log is gone without being told to bootstrap.

func idOpts(id Identity, create CreateMode, segment int64) WALOptions {
	return WALOptions{Identity: id, Create: create, SegmentSize: segment, Logger: slog.New(slog.DiscardHandler)}
}

// bootstrapLog creates a log with id in dir (real files) and writes n
// entries over several segments, then closes it.
func bootstrapLog(t *testing.T, dir string, id Identity, n int) {
	t.Helper()
	w, err := OpenWAL(dir, idOpts(id, MustCreate, 1024))
	if err != nil {
		t.Fatal(err)
	}
	fillLog(t, w, n, 8, uint64(id.ReplicaID))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

func wantIdentityError(t *testing.T, err error, path, field string) {
	t.Helper()
	var ie *IdentityError
	if !errors.As(err, &ie) {
		t.Fatalf("OpenWAL = %v, want a *IdentityError", err)
	}
	if ie.Path != path || ie.Field != field {
		t.Fatalf("identity error for %s field %q, want %s field %q (%v)", ie.Path, ie.Field, path, field, err)
	}
	if !strings.Contains(err.Error(), path) {
		t.Fatalf("error %q does not name %s", err, path)
	}
}

func TestWALRefusesAnotherIdentity(t *testing.T) {
	dir := t.TempDir()
	bootstrapLog(t, dir, testIdentity, 40)
	first := segments(t, vfs.Default, dir)[0]
	for _, c := range []struct {
		field, says string
		id          Identity
	}{
		{"cluster", "another cluster's log", Identity{ClusterID: 8, ReplicaID: 2, Members: []wire.ReplicaID{1, 2, 3}}},
		{"replica", "breaks quorum intersection", Identity{ClusterID: 7, ReplicaID: 3, Members: []wire.ReplicaID{1, 2, 3}}},
		{"members", "members {1,2,3}", Identity{ClusterID: 7, ReplicaID: 2, Members: []wire.ReplicaID{1, 2, 3, 4}}},
	} {
		t.Run(c.field, func(t *testing.T) {
			for _, create := range []CreateMode{MustExist, CreateIfMissing} {
				_, err := OpenWAL(dir, idOpts(c.id, create, 1024))
				wantIdentityError(t, err, first, c.field)
				if !strings.Contains(err.Error(), c.says) {
					t.Fatalf("%v: error %q does not say %q", create, err, c.says)
				}
			}
		})
	}
	// Refusing touched nothing: the owner still opens its log whole.
	w, err := OpenWAL(dir, idOpts(testIdentity, MustExist, 1024))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if n := len(load(t, w).Entries); n != 40 {
		t.Fatalf("%d entries after the refusals, want 40", n)
	}
	if got := w.Identity(); !got.Equal(testIdentity) {
		t.Fatalf("Identity() = %v, want %v", got, testIdentity)
	}
	var _ Identified = w
	w.Identity().Members[0] = 99 // a copy: the WAL's own is not the caller's to change
	if !w.Identity().Equal(testIdentity) {
		t.Fatal("Identity() returned the WAL's own member slice")
	}
}

func TestWALWithoutALogNeedsBootstrap(t *testing.T) {
	t.Run("empty directory", func(t *testing.T) {
		dir := t.TempDir()
		_, err := OpenWAL(dir, idOpts(testIdentity, MustExist, 0))
		if !errors.Is(err, ErrNoLog) || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), "-bootstrap") {
			t.Fatalf("OpenWAL of an empty directory = %v, want ErrNoLog naming %s", err, dir)
		}
		if segs := segments(t, vfs.Default, dir); len(segs) != 0 {
			t.Fatalf("refusing created %v", segs)
		}
	})
	t.Run("missing directory", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "data")
		_, err := OpenWAL(dir, idOpts(testIdentity, MustExist, 0))
		if !errors.Is(err, ErrNoLog) || !strings.Contains(err.Error(), dir) {
			t.Fatalf("OpenWAL of a missing directory = %v, want ErrNoLog naming %s", err, dir)
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Fatalf("refusing created the directory: %v", err)
		}
	})
	t.Run("wiped directory", func(t *testing.T) {
		// The log was there and is gone: starting afresh would forget
		// promises and votes.
		dir := t.TempDir()
		bootstrapLog(t, dir, testIdentity, 10)
		for _, s := range segments(t, vfs.Default, dir) {
			os.Remove(s)
		}
		if _, err := OpenWAL(dir, idOpts(testIdentity, MustExist, 0)); !errors.Is(err, ErrNoLog) {
			t.Fatalf("OpenWAL of a wiped directory = %v, want ErrNoLog", err)
		}
	})
	t.Run("interrupted bootstrap", func(t *testing.T) {
		// The first segment never got its name: no log, and bootstrap may run again.
		fs := vfs.NewMemFS()
		fs.SetFault(func(op, _ string) error {
			if op == vfs.OpRename {
				return errors.New("power failure")
			}
			return nil
		})
		if _, err := OpenWAL("/wal", WALOptions{FS: fs, Identity: testIdentity, Create: MustCreate, SegmentSize: memSegment, Logger: slog.New(slog.DiscardHandler)}); err == nil {
			t.Fatal("bootstrap with a failing rename succeeded")
		}
		fs.SetFault(nil)
		if _, err := OpenWAL("/wal", WALOptions{FS: fs, Identity: testIdentity, Create: MustExist, Logger: slog.New(slog.DiscardHandler)}); !errors.Is(err, ErrNoLog) {
			t.Fatalf("OpenWAL after an interrupted bootstrap = %v, want ErrNoLog", err)
		}
		w, err := OpenWAL("/wal", WALOptions{FS: fs, Identity: testIdentity, Create: MustCreate, SegmentSize: memSegment, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatalf("bootstrap again: %v", err)
		}
		w.Close()
	})
}

func TestWALBootstrapOnAnExistingLogIsRefused(t *testing.T) {
	dir := t.TempDir()
	bootstrapLog(t, dir, testIdentity, 10)
	for _, id := range []Identity{testIdentity, {ClusterID: 9, ReplicaID: 1, Members: []wire.ReplicaID{1}}} {
		_, err := OpenWAL(dir, idOpts(id, MustCreate, 1024))
		if !errors.Is(err, ErrAlreadyBootstrapped) || !strings.Contains(err.Error(), dir) {
			t.Fatalf("bootstrap of %v on an existing log = %v, want ErrAlreadyBootstrapped naming %s", id, err, dir)
		}
	}
	// CreateIfMissing opens it.
	w, err := OpenWAL(dir, idOpts(testIdentity, CreateIfMissing, 1024))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if n := len(load(t, w).Entries); n != 10 {
		t.Fatalf("%d entries, want 10", n)
	}
}

// TestWALSegmentFromAnotherLogIsRefused: every segment records whose log it
// is, so one copied in from another directory is named, whether it replaces
// one of the log's segments or comes after them.
func TestWALSegmentFromAnotherLogIsRefused(t *testing.T) {
	other := Identity{ClusterID: 7, ReplicaID: 3, Members: []wire.ReplicaID{1, 2, 3}}
	src := t.TempDir()
	bootstrapLog(t, src, other, 60)
	twin := t.TempDir() // the same identity, bootstrapped again: another log all the same
	bootstrapLog(t, twin, testIdentity, 60)
	for _, c := range []struct {
		name, from string
		newest     bool
		field      string // "" for the same identity: another log ID
	}{
		{"another replica's, replacing one", src, false, "replica"},
		{"another replica's, as the newest", src, true, "replica"},
		{"a re-bootstrapped twin's", twin, false, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			bootstrapLog(t, dir, testIdentity, 30)
			mine := segments(t, vfs.Default, dir)
			theirs := segments(t, vfs.Default, c.from)
			if len(mine) < 3 || len(theirs) <= len(mine) {
				t.Fatalf("%d and %d segments", len(mine), len(theirs))
			}
			i := 1
			if c.newest {
				i = len(mine)
			}
			victim := filepath.Join(dir, filepath.Base(theirs[i]))
			data, err := os.ReadFile(theirs[i])
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(victim, data, 0o644); err != nil {
				t.Fatal(err)
			}
			_, err = OpenWAL(dir, idOpts(testIdentity, MustExist, 1024))
			if c.field != "" {
				wantIdentityError(t, err, victim, c.field)
				return
			}
			ce := wantCorruption(t, err, victim, 0)
			if !strings.Contains(ce.Reason, "another log") {
				t.Fatalf("reason %q does not say the segment is another log's", ce.Reason)
			}
		})
	}
}

func TestWALIdentityIsRequired(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		id   Identity
		says string
	}{
		{Identity{}, "WALOptions.Identity is required"},
		{Identity{ClusterID: 1, ReplicaID: 4, Members: []wire.ReplicaID{1, 2, 3}}, "not one of the members"},
		{Identity{ClusterID: 1, ReplicaID: 1, Members: []wire.ReplicaID{2, 1}}, "ascending"},
		{Identity{ReplicaID: 1, Members: []wire.ReplicaID{1}}, "cluster ID 0"},
	} {
		_, err := OpenWAL(dir, WALOptions{Identity: c.id, Create: CreateIfMissing})
		if err == nil || !strings.Contains(err.Error(), c.says) || !strings.Contains(err.Error(), dir) {
			t.Errorf("OpenWAL with identity %+v = %v, want an error saying %q", c.id, err, c.says)
		}
	}
	if segs := segments(t, vfs.Default, dir); len(segs) != 0 {
		t.Fatalf("a refused identity created %v", segs)
	}
}

// TestWALIdentityInEverySegment: the identity and log ID survive rollovers
// and reopenings, and the dump prints them.
func TestWALIdentityInEverySegment(t *testing.T) {
	id := Identity{ClusterID: 1 << 40, ReplicaID: 5, Members: []wire.ReplicaID{2, 5, 9, 11, 1 << 30}}
	dir := t.TempDir()
	bootstrapLog(t, dir, id, 50)
	segs := segments(t, vfs.Default, dir)
	var logID uint64
	for i, seg := range segs {
		data, err := os.ReadFile(seg)
		if err != nil {
			t.Fatal(err)
		}
		seq, _ := parseSegmentName(filepath.Base(seg))
		hdr, reason := parseSegmentHeader(data, seq)
		if reason != "" || !hdr.id.Equal(id) || (i > 0 && hdr.logID != logID) {
			t.Fatalf("%s: header %+v (%s), want identity %v and log ID %x", seg, hdr, reason, id, logID)
		}
		logID = hdr.logID
	}
	var out bytes.Buffer
	if err := DumpWAL(dir, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "identity: cluster 1099511627776, replica 5, members {2,5,9,11,1073741824}") ||
		!strings.Contains(out.String(), "OpenWAL accepts") {
		t.Fatalf("dump:\n%s", out.String())
	}
	w, err := OpenWAL(dir, idOpts(Identity{ClusterID: id.ClusterID, ReplicaID: 5, Members: slices.Clone(id.Members)}, MustExist, 1024))
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
}
