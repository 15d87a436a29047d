package hub

import (
	"slices"

	"github.com/sse-relay/caddy-sse-relay/broker"
)

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
	// With history: when hasFrom, the ring holds every log entry of its
	// channel after from (set by a fill from the log, or by an eviction).
	from    broker.Position
	hasFrom bool
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
	r.evicted = max(r.evicted, old.seq)
	if !old.pos.IsZero() {
		// What was after the oldest entry is still held.
		r.from, r.hasFrom = old.pos, true
	}
	*old = entry{}
	r.head = (r.head + 1) % len(r.buf)
	r.n--
	r.bytes -= freed
	return freed
}

// clear drops every entry and what the ring vouched for, and returns the
// bytes freed.
func (r *ring) clear() int {
	freed := r.bytes
	for r.n > 0 {
		r.popOldest()
	}
	r.from, r.hasFrom = broker.Position{}, false
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
// before p (the broker hands the hub every entry after the first), or a
// fill or an eviction left it holding everything after a position at or
// before p. On false dst is as it was.
func (r *ring) since(p broker.Position, dst []entry) ([]entry, bool) {
	held := r.hasFrom && !p.Less(r.from)
	for i := 0; i < r.n && !held; i++ {
		if e := r.at(i); !e.pos.IsZero() {
			held = !p.Less(e.pos)
			break
		}
	}
	if !held {
		return dst, false
	}
	dst = slices.Grow(dst, r.n)
	for i := 0; i < r.n; i++ {
		if e := r.at(i); !e.pos.IsZero() && p.Less(e.pos) {
			dst = append(dst, *e)
		}
	}
	return dst, true
}

// admits reports whether a log entry at pos, delivered live, is new to
// the ring: a fill may already hold it, read from the log before the
// broker's reader got to it. The reader hands entries over in position
// order, so one at or before the newest held is one the ring has, or one
// from before everything the ring vouches for.
func (r *ring) admits(pos broker.Position) bool {
	return r.n == 0 || r.at(r.n-1).pos.Less(pos)
}

// fill merges entries of the ring's channel read from the log after p
// (in position order) into the ring, in position order and each once,
// keeping the newest limit, and records that it holds every log entry
// after p. The caller vouches for that (Hub.fill). It returns the change
// in bytes held.
func (r *ring) fill(p broker.Position, read []entry, limit int) int {
	merged := make([]entry, 0, r.n+len(read))
	i := 0
	for k := 0; k < r.n; k++ {
		e := *r.at(k)
		for i < len(read) && read[i].pos.Less(e.pos) {
			merged = append(merged, read[i])
			i++
		}
		if i < len(read) && read[i].pos == e.pos {
			i++
		}
		merged = append(merged, e)
	}
	merged = append(merged, read[i:]...)
	if !r.hasFrom || p.Less(r.from) {
		r.from, r.hasFrom = p, true
	}
	if over := len(merged) - limit; over > 0 {
		for _, e := range merged[:over] {
			r.evicted = max(r.evicted, e.seq)
		}
		if last := merged[over-1].pos; r.from.Less(last) {
			r.from = last
		}
		merged = merged[over:]
	}
	before := r.bytes
	r.buf, r.head, r.n, r.bytes = merged, 0, len(merged), 0
	for _, e := range merged {
		r.bytes += len(e.frame)
	}
	return r.bytes - before
}
