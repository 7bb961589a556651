// Package checkpoint writes, verifies, lists, prunes and receives durable
// checkpoint files. A checkpoint is an image of the application's state
// machine at a slot: every slot below Meta.Slot is applied in the image, none
// at or above it. The package does not interpret the image; it frames it in
// checksummed blocks so that damage anywhere in a file, on this disk or on
// the way from a peer, is found before a byte of it is trusted.
//
// All file access goes through vfs.FS, so the crash tests run on vfs.MemFS.
//
// # Durability
//
// Write and Receiver.Finish make a checkpoint durable in this order: the
// image blocks and the header are written to a temporary file, the file is
// synced, renamed to its final name, and the directory is synced. A final
// name therefore only ever refers to a complete, synced file; a crash at any
// point leaves either no new checkpoint or a complete valid one, plus perhaps
// a temporary file that List and Open ignore and Prune removes. A checkpoint
// is durable once Write (or Finish) has returned nil.
//
// Callers serialize: Prune removes temporary files, so it must not run while
// a Write or a Receiver is in progress in the same directory.
//
// # File names
//
// A checkpoint of slot s is named checkpoint-<s as 20 decimal digits>.vcp
// (FileName), so names sort by slot. Temporary files are named
// checkpoint-<slot>.vcp.<16 hex digits>.tmp. A directory holds at most one
// checkpoint per slot: writing a second one of the same slot replaces the
// first atomically.
//
// # File format, version 2
//
// All integers are little-endian. A file is a header, then the image in
// blocks.
//
// Header (H = 72 + 4m + M bytes):
//
//	[0:4]      magic "VCKP"
//	[4:6]      format version (2; version 1 files are read too)
//	[6:8]      reserved, zero
//	[8:16]     cluster ID (non-zero)
//	[16:24]    slot: everything below it is in the image (matches the file name)
//	[24:32]    ballot round    \ the highest ballot the writer had promised
//	[32:40]    image size S in bytes, at most MaxImageSize
//	[40:48]    file ID: random, non-zero, chosen by Write; seeds the block checksums
//	[48:52]    writer replica ID (non-zero)
//	[52:56]    ballot replica  / (with [24:32])
//	[56:60]    block size B, 1 <= B <= MaxBlockSize (DefaultBlockSize is 64 KiB)
//	[60:64]    member count m, 1 <= m <= MaxMembers (64)
//	[64:64+4m] members, ascending, non-zero, no repeats
//	[+0:+4]    membership section length M, at most MaxMembershipBytes
//	[+4:+4+M]  membership history from the slot on (paxos.EncodeMemberships)
//	[H-4:H]    CRC32C (Castagnoli) of [0:H-4]
//
// A version 1 header has no membership section (H = 68 + 4m): its
// cluster's members never changed, and Members are the voters.
//
// Then the image, cut into n = ceil(S/B) blocks, each B bytes but the last
// (S - (n-1)B bytes). Each block is followed by its checksum:
//
//	[0:len]        block i's image bytes
//	[len:len+4]    CRC32C of (file ID, 8 bytes) ‖ (i, 8 bytes) ‖ block bytes
//
// The file's size is exactly H + S + 4n; anything else is damage. Seeding the
// block checksums with the file ID and the block's index means a block of
// another checkpoint file, or a block moved within this one, does not verify:
// a transfer resumed against a different file of the same slot fails at
// Finish instead of producing a hybrid.
//
// Decoding reads the header into a fixed buffer of at most 16.7 KiB and
// allocates only the member list and the membership section; a reader allocates one block buffer (at
// most MaxBlockSize + 4). Absurd values (a member count above 64, a block
// size of 0, a size that does not match the file) are refused with a
// *CorruptionError naming the problem; nothing in a file can make the
// decoder panic or allocate more.
//
// # Transfer
//
// State transfer sends a checkpoint file's raw bytes (Source) in chunks to a
// Receiver on the peer. The file's own checksums protect it end to end; the
// Receiver checks the header (cluster, slot, size) as soon as it has it and
// every block at Finish.
package checkpoint
