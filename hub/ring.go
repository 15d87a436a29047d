package hub

import "github.com/sse-relay/caddy-sse-relay/broker"

// entry is one frame kept for replay. A reset marker has no id; an entry
// of the log has its position, and its frame starts with an id line of
// idLen bytes.
type entry struct {
	seq     uint64
	id      string
	frame   []byte
	pos     broker.Position
	idLen   int
	channel string // set on the copies a resume collects
}

// ring keeps a channel's most recent frames. It grows with what it holds
// instead of being preallocated, so a quiet channel costs little.
type ring struct {
	buf     []entry
	head    int    // index of the oldest entry
	n       int    // entries held
	evicted uint64 // highest seq pushed out; a resume from before it has a gap
	bytes   int    // frame bytes held
}

// push appends e, evicting the oldest entry when limit are held. It
// returns the change in bytes held.
func (r *ring) push(e entry, limit int) int {
	before := r.bytes
	r.bytes += len(e.frame)
	r.add(e, limit)
	return r.bytes - before
}

func (r *ring) add(e entry, limit int) {
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
	r.popOldest()
	r.buf[(r.head+r.n)%len(r.buf)] = e
	r.n++
}

// popOldest drops the oldest entry and returns the bytes freed.
func (r *ring) popOldest() int {
	if r.n == 0 {
		return 0
	}
	old := &r.buf[r.head]
	freed := len(old.frame)
	r.evicted = old.seq
	*old = entry{}
	r.head = (r.head + 1) % len(r.buf)
	r.n--
	r.bytes -= freed
	return freed
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

// find returns how many entries have the given id, and the seq of one.
func (r *ring) find(id string) (seq uint64, n int) {
	for i := 0; i < r.n; i++ {
		if e := r.at(i); e.id == id {
			seq = e.seq
			n++
		}
	}
	return seq, n
}

func (r *ring) len() int { return r.n }

// since appends the log entries after p to dst, oldest first, and reports
// whether the ring holds every log entry after p: its oldest is at or
// before p (the broker hands the hub every entry after the first). On
// false dst is as it was.
func (r *ring) since(p broker.Position, dst []entry) ([]entry, bool) {
	first := true
	for i := 0; i < r.n; i++ {
		e := r.at(i)
		if e.pos.IsZero() {
			continue
		}
		if first {
			first = false
			if p.Less(e.pos) {
				return dst, false
			}
		}
		if p.Less(e.pos) {
			dst = append(dst, *e)
		}
	}
	return dst, !first
}
