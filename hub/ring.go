package hub

// entry is one frame kept for replay. A reset marker has no id.
type entry struct {
	seq   uint64
	id    string
	frame []byte
}

// ring keeps a channel's most recent frames. It grows with what it holds
// instead of being preallocated, so a quiet channel costs little.
type ring struct {
	buf     []entry
	head    int    // index of the oldest entry
	n       int    // entries held
	evicted uint64 // highest seq pushed out; a resume from before it has a gap
}

func (r *ring) push(e entry, limit int) {
	if r.n < len(r.buf) {
		r.buf[(r.head+r.n)%len(r.buf)] = e
		r.n++
		return
	}
	if len(r.buf) < limit {
		grown := make([]entry, min(max(2*len(r.buf), 8), limit))
		for i := 0; i < r.n; i++ {
			grown[i] = r.buf[(r.head+i)%len(r.buf)]
		}
		r.buf, r.head = grown, 0
		r.buf[r.n] = e
		r.n++
		return
	}
	r.evicted = r.buf[r.head].seq
	r.buf[r.head] = e
	r.head = (r.head + 1) % len(r.buf)
}

func (r *ring) at(i int) *entry { return &r.buf[(r.head+i)%len(r.buf)] }

// after appends the entries newer than seq to dst, oldest first.
func (r *ring) after(seq uint64, dst []entry) []entry {
	for i := 0; i < r.n; i++ {
		if e := r.at(i); e.seq > seq {
			dst = append(dst, *e)
		}
	}
	return dst
}

// find returns the seq of the newest entry with the given id.
func (r *ring) find(id string) (uint64, bool) {
	for i := r.n - 1; i >= 0; i-- {
		if e := r.at(i); e.id == id {
			return e.seq, true
		}
	}
	return 0, false
}

func (r *ring) len() int { return r.n }
