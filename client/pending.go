package client

// pendingTable holds a connection's requests that await an answer, by
// request ID. A connection hands IDs out in increasing order and the server
// answers them mostly in order, so a table indexed by ID modulo its size
// finds each request in one probe, with no hashing; it doubles whenever a new
// ID's cell is still taken, which takes a request outstanding for a whole
// table's worth of later IDs (the attempt timeout then clears it). A Go map
// here cost ~11% of a loaded benchmark client's CPU (docs/PERFORMANCE.md).
// Not safe for concurrent use: the connection's mutex guards it.
type pendingTable struct {
	cells []pendingCell // len is a power of two
	n     int
	fixed int // how many of the n stay (op.stays: status requests and bounded reads, which the hedge never moves)
	// bounded is how many of the n are bounded reads, which may wait at a
	// server by design (a replica catching up): see sweepConn.
	bounded int
}

type pendingCell struct {
	id uint64
	o  *op // nil: free
}

const pendingInitial = 256

// put records o under id, which must not be pending already.
func (t *pendingTable) put(id uint64, o *op) {
	if t.cells == nil {
		t.cells = make([]pendingCell, pendingInitial)
	}
	for t.cells[id&uint64(len(t.cells)-1)].o != nil {
		t.grow()
	}
	t.cells[id&uint64(len(t.cells)-1)] = pendingCell{id: id, o: o}
	t.n++
	t.count(o, 1)
}

// count adds d to the counts of o's kinds.
func (t *pendingTable) count(o *op, d int) {
	if o.stays() {
		t.fixed += d
	}
	if o.bounded {
		t.bounded += d
	}
}

// grow doubles the table. Two pending IDs that share a cell of the doubled
// table shared one before, which cannot be, so re-placing never collides.
func (t *pendingTable) grow() {
	old := t.cells
	t.cells = make([]pendingCell, 2*len(old))
	mask := uint64(len(t.cells) - 1)
	for _, c := range old {
		if c.o != nil {
			t.cells[c.id&mask] = c
		}
	}
}

// take removes and returns the request pending under id, or nil.
func (t *pendingTable) take(id uint64) *op {
	if t.n == 0 {
		return nil
	}
	c := &t.cells[id&uint64(len(t.cells)-1)]
	if c.o == nil || c.id != id {
		return nil
	}
	o := c.o
	*c = pendingCell{}
	t.n--
	t.count(o, -1)
	return o
}

// len is the number of pending requests.
func (t *pendingTable) len() int { return t.n }

// movable is the number of pending requests that may move (not op.stays).
func (t *pendingTable) movable() int { return t.n - t.fixed }

// takeIf removes the requests drop reports true for and appends them to out.
func (t *pendingTable) takeIf(drop func(*op) bool, out []*op) []*op {
	if t.n == 0 {
		return out
	}
	for i := range t.cells {
		if c := &t.cells[i]; c.o != nil && drop(c.o) {
			t.count(c.o, -1)
			out = append(out, c.o)
			*c = pendingCell{}
			t.n--
		}
	}
	return out
}

// takeAll empties the table, returning every pending request.
func (t *pendingTable) takeAll() []*op {
	return t.takeIf(func(*op) bool { return true }, nil)
}
