// Package pmem is the acceptor's log on persistent memory: a storage.Log in a
// DAX-mapped file, crash-consistent at the granularity the hardware gives
// (8-byte failure-atomic stores made durable by cache-line write-back and a
// store fence), without a system call on the write path.
//
// # Layout
//
// A log file holds a header page and a data area (see layout.go):
// superblock, flip word, two metadata slots, the identity, then a circular
// buffer of records. A record is one Append's entries with a CRC32C and a position
// stamp. A metadata slot holds head and tail (logical byte positions that
// only grow), the hard state, a sequence number and a CRC32C; the flip word
// names the current slot by its sequence number, with a CRC-16 check.
//
// # Identity and creation
//
// A log records, when it is created, whose it is (storage.Identity: cluster,
// replica, members), and Open refuses anyone else with a
// *storage.IdentityError. Open creates a log only when told to
// (Options.Create): a replica whose log is gone gets storage.ErrNoLog, not a
// fresh log on which it would vote again. Creation writes the whole file
// under a temporary name with every block allocated (fallocate), syncs it
// and links it into place, so a crash leaves no log or a complete one; a
// file system without the room is refused at Open with a *SpaceError, as is
// an existing sparse file whose blocks cannot be allocated, instead of the
// process dying of SIGBUS on a later store.
//
// # Writing
//
// Append encodes its entries straight into the mapping (one copy, one
// CRC32C) and returns. Sync is group commit: it writes back every cache line
// appended since the last Sync, once however many records share it (CLWB;
// CLFLUSHOPT or CLFLUSH where the CPU lacks it), writes and writes back the
// next metadata slot (new tail, latest hard state), fences once (records and
// slot are durable), stores the flip word (one 8-byte store), writes it back
// and fences again. So a Sync costs two fences however many Appends it
// covers, and nothing at all when there is nothing new. (Writing back at
// Append instead was measured slower: a line shared by consecutive records
// was written back repeatedly, and re-dirtying a line in flight stalls.)
//
// A torn metadata write is never current: the flip moves only after the slot
// is durable. A bit flip in the flip word cannot name the older slot: its
// check rejects up to three flipped bits, and the slot it names must carry
// the same sequence number.
//
// # Full log
//
// The log never overwrites live records and never waits. An Append that does
// not fit returns an error wrapping ErrFull (and applies nothing); the caller
// takes a snapshot, calls Compact(below) to free the records whose entries
// all lie below the snapshot, and retries. A record may take at most half the
// data area (ErrTooLarge beyond), which guarantees an empty log always has
// room. Hard-state-only Appends take no record space and never fail for lack
// of room.
//
// # Recovery
//
// Open reads the flip word, the slot it names, and every record between head
// and tail, checking each CRC; anything after the committed tail is ignored.
// Damage inside the committed part is a *CorruptError naming the file and
// offset, never skipped. Recovery only reads the mapping.
//
// # Durability modes
//
// Open maps with MAP_SHARED_VALIDATE|MAP_SYNC. Where the kernel accepts it
// (a DAX file system) the mode is "dax": fenced write-backs are durable. On
// tmpfs MAP_SYNC fails (EOPNOTSUPP) and the mode is "process-crash-only": the
// log keeps the DAX instruction path, and survives the process but not the
// machine. On other file systems the mode is "page-cache+sync": fences msync
// the flushed pages (correct but slow; the file WAL suits such disks better).
// Status reports the mode, the reason, the flush method and counters for a
// metrics layer.
//
// # Testing
//
// The log's writes go through a media that a test recorder can intercept
// (one nil check per store, flush or fence in production). The crash explorer
// in the tests replays recorded workloads under the x86 persistency model and
// checks recovery on tens of thousands of crash images; see explore_test.go.
// File-backed tests run in $VESTA_PMEM_DIR when set, and with
// VESTA_PMEM_REQUIRE_DAX=1 fail unless the mode there is "dax".
package pmem
