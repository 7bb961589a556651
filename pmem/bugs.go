package pmem

// bugSet names defects the crash explorer must catch. They can be planted
// only in contracts (test) builds; in production builds plantedBugs is the
// constant zero and every check of it compiles away.
type bugSet uint8

const (
	// bugSkipRecordFlush: commit does not write back the records it makes
	// live, so it can name bytes that never reached the media.
	bugSkipRecordFlush bugSet = 1 << iota
	// bugSkipSlotFence: commit stores the flip word without first fencing
	// the records and the new metadata slot.
	bugSkipSlotFence
	// bugSkipFlipFlush: commit fences without flushing the flip word, so an
	// acknowledged commit can be lost.
	bugSkipFlipFlush
)
