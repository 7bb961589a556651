package pmem

// recorder is the crash-exploration hook: it logs every store, flush and
// fence the log makes to its media, in order. Production logs never have one.
// The explorer in the tests replays the log into crash images.
type recorder struct {
	events []event
	arena  []byte // the stored bytes, events point into it
	// onFence, if set, is called after each fence is recorded (SimDevice
	// uses it to make the stores so far durable and drop them).
	onFence func(*recorder)
}

type eventKind uint8

const (
	evStore eventKind = iota + 1
	evFlush
	evFence
	evMark // a point the test driver names (an acknowledgment, a sync start)
)

type event struct {
	kind eventKind
	off  int // store and flush: media offset; mark: the mark's value
	n    int // store and flush: length
	data int // store: offset of the bytes in arena
}

func (r *recorder) store(off int, p []byte) {
	r.events = append(r.events, event{kind: evStore, off: off, n: len(p), data: len(r.arena)})
	r.arena = append(r.arena, p...)
}

func (r *recorder) flush(off, n int) {
	r.events = append(r.events, event{kind: evFlush, off: off, n: n})
}

func (r *recorder) fence() {
	r.events = append(r.events, event{kind: evFence})
	if r.onFence != nil {
		r.onFence(r)
	}
}

func (r *recorder) mark(v int) { r.events = append(r.events, event{kind: evMark, off: v}) }

func (r *recorder) storeData(e event) []byte { return r.arena[e.data : e.data+e.n] }
