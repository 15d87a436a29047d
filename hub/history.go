package hub

import (
	"container/heap"
	"context"
	"errors"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/sse-relay/caddy-sse-relay/broker"
)

// With history (Options.Log set), every event of the log carries its
// position as its id, and a stream's Last-Event-ID is a cursor: where it
// is in each of its channels' logs. The rings are a cache in front of the
// log: a resume reads from a ring when it holds everything after the
// cursor, else from the log.
//
// A cursor is one position ("<hi>-<lo>") that stands for every channel of
// the stream — always on a log with one order for all channels (Postgres),
// and on any log for a stream of one channel — or, for a stream of several
// channels on a log without one order (Redis), a position per channel in
// the order of the channels' sorted names, joined by commas.

// readPage is how many entries one read of a resume asks for. A read
// that returns fewer has reached the end of the log; asking for one more
// than the default replay (1,000) lets a resume that far behind learn so
// from its one read, not from a second that finds nothing.
const readPage = 1001

// resumeTimeout bounds the reads of one resume.
const resumeTimeout = 10 * time.Second

// cursor is a stream's place in its channels' logs: one position for
// every channel (global), or one per channel.
type cursor struct {
	global bool
	at     broker.Position            // when global
	pos    map[string]broker.Position // when not
}

// parseCursor reads a Last-Event-ID as a cursor of channels, or reports
// false.
func parseCursor(id string, channels []string, global bool) (cursor, bool) {
	c := cursor{global: global}
	parts := strings.Split(id, ",")
	if len(parts) == 1 {
		p, err := broker.ParsePosition(parts[0])
		if err != nil {
			return c, false
		}
		if global {
			c.at = p
			return c, true
		}
		c.pos = make(map[string]broker.Position, len(channels))
		for _, ch := range channels {
			c.pos[ch] = p
		}
		return c, true
	}
	if global || len(parts) != len(channels) {
		return c, false
	}
	c.pos = make(map[string]broker.Position, len(channels))
	for i, ch := range sorted(channels) {
		p, err := broker.ParsePosition(parts[i])
		if err != nil {
			return c, false
		}
		c.pos[ch] = p
	}
	return c, true
}

// of is c's position in channel.
func (c *cursor) of(channel string) broker.Position {
	if c.global {
		return c.at
	}
	return c.pos[channel]
}

// simple reports whether one position says all of c: the frame's own id
// line is the stream's cursor.
func (c *cursor) simple() bool { return c.global || len(c.pos) <= 1 }

// appendID appends c's text form.
func (c *cursor) appendID(dst []byte, channels []string) []byte {
	for i, ch := range sorted(channels) {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, c.of(ch).String()...)
	}
	return dst
}

// admit moves c past an entry of channel at pos, or reports false when c
// is already there (the stream had it). Called for every frame a stream
// writes: no map to walk for a global cursor.
func (c *cursor) admit(channel string, pos broker.Position) bool {
	if c.global {
		if !c.at.Less(pos) {
			return false
		}
		c.at = pos
		return true
	}
	if p, ok := c.pos[channel]; ok && !p.Less(pos) {
		return false
	}
	c.pos[channel] = pos
	return true
}

func sorted(channels []string) []string {
	if sort.StringsAreSorted(channels) {
		return channels
	}
	out := append([]string(nil), channels...)
	sort.Strings(out)
	return out
}

// DeliverEntry relays one entry of the log: its position is its id, so a
// publisher's own id is dropped. Called by the broker's reader goroutine.
func (h *Hub) DeliverEntry(e broker.Entry) {
	h.DeliverEntries([]broker.Entry{e})
}

// DeliverEntries is DeliverEntry for entries read together, in order: a
// run of one channel's entries reaches each subscriber in one offer and
// one wake (see DeliverBatch).
func (h *Hub) DeliverEntries(es []broker.Entry) {
	at := time.Now()
	forRuns(es, func(e broker.Entry) string { return e.Channel }, func(channel string, run []broker.Entry) {
		h.deliverEntryRun(channel, run, at)
	})
}

// deliverEntryRun relays entries of one channel.
func (h *Hub) deliverEntryRun(channel string, es []broker.Entry, at time.Time) {
	entries := make([]entry, 0, len(es))
	for _, e := range es {
		ev, err := Decode(e.Payload)
		if err != nil {
			h.refuse(channel, err)
			continue
		}
		entries = append(entries, logEntry(&ev, e))
	}
	if len(entries) > 0 {
		h.emitEntries(channel, entries, at)
	}
}

// logEntry is e's ring entry: its frame opens with its position as id (a
// publisher's own id is dropped: the id is the cursor).
func logEntry(ev *Event, e broker.Entry) entry {
	ev.ID = ""
	id := e.Pos.String()
	frame := make([]byte, 0, frameSize(ev)+len(id)+5)
	frame = append(append(append(frame, "id: "...), id...), '\n')
	idLen := len(frame)
	return entry{id: id, frame: ev.AppendFrame(frame), pos: e.Pos, idLen: idLen, channel: e.Channel}
}

// Append appends f to buf as this subscriber writes it: a log entry the
// stream already has is skipped, and on a stream of several channels
// without one order its id line gives the whole cursor. Called by the
// stream's writer.
func (s *Subscription) Append(buf []byte, f *Frame) []byte {
	if f.Pos.IsZero() || s.cursor == nil {
		return append(buf, f.Bytes...)
	}
	if !s.cursor.admit(f.Channel, f.Pos) {
		return buf
	}
	if s.cursor.simple() {
		return append(buf, f.Bytes...)
	}
	buf = append(buf, "id: "...)
	buf = s.cursor.appendID(buf, s.channels)
	buf = append(buf, '\n')
	return append(buf, f.Bytes[f.IDLen:]...)
}

// ErrLog wraps a failed read of the log during a resume.
var ErrLog = errors.New("reading the event log")

// CatchUp, with history, puts in Backlog what the stream missed since its
// Last-Event-ID, from the rings where they hold it, else from the log.
// Call it once the broker listens (Ready), so that what is appended after
// the read reaches the stream live; what comes both ways is written once.
// A stream that gave no cursor starts at the log's head.
func (s *Subscription) CatchUp(ctx context.Context) error {
	h := s.hub
	if h.opts.Log == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, resumeTimeout)
	defer cancel()
	if s.cursor == nil {
		for _, f := range s.cursorProblem {
			s.Backlog = append(s.Backlog, f.Bytes)
		}
		return s.startAtHead(ctx)
	}
	var frames []*Frame
	cached, missing := h.cachedSince(s.channels, s.cursor)
	var read []entry
	if len(missing) > 0 {
		var trimmed []string
		var err error
		read, trimmed, err = h.readShared(ctx, s, missing)
		if err != nil {
			return errors.Join(ErrLog, err)
		}
		if len(trimmed) > 0 {
			frames = append(frames, &Frame{Bytes: h.resetFrame(trimmed, "expired")})
			h.expired.Add(1)
		}
		h.backfills.Add(1)
	}
	all := append(cached, read...)
	if h.opts.Log.GlobalOrder() && !slices.IsSortedFunc(all, byPos) {
		slices.SortStableFunc(all, byPos)
	}
	s.Backlog = slices.Grow(s.Backlog, len(frames)+len(all))
	for _, f := range frames {
		if b := s.backlogBytes(f); len(b) > 0 {
			s.Backlog = append(s.Backlog, b)
		}
	}
	for i := range all {
		f := Frame{Bytes: all[i].frame, Channel: all[i].channel, Pos: all[i].pos, IDLen: all[i].idLen}
		if b := s.backlogBytes(&f); len(b) > 0 {
			s.Backlog = append(s.Backlog, b)
		}
	}
	return nil
}

// byPos orders entries by position.
func byPos(a, b entry) int {
	switch {
	case a.pos.Less(b.pos):
		return -1
	case b.pos.Less(a.pos):
		return 1
	}
	return 0
}

// backlogBytes is Append for a frame of the backlog: the frame's own bytes
// when they need no other id, without a copy.
func (s *Subscription) backlogBytes(f *Frame) []byte {
	if !f.Pos.IsZero() && s.cursor.simple() {
		if !s.cursor.admit(f.Channel, f.Pos) {
			return nil
		}
		return f.Bytes
	}
	return s.Append(nil, f)
}

// startAtHead gives a stream without a cursor one: where the log is now,
// so its id says where it is in every channel even before each has had an
// event. One position does that on a log with one order, or for one
// channel.
func (s *Subscription) startAtHead(ctx context.Context) error {
	if s.hub.opts.Log.GlobalOrder() || len(s.channels) < 2 {
		return nil
	}
	heads, err := s.hub.opts.Log.Head(ctx, s.channels)
	if err != nil {
		return errors.Join(ErrLog, err)
	}
	s.cursor = &cursor{pos: heads}
	return nil
}

// cachedSince takes from the rings the entries after the cursor of each
// channel whose ring holds all of them, and names the channels whose ring
// does not, with their positions.
//
// A cursor of one position for several channels needs one snapshot of
// them all: once the stream is past an entry of one channel, a live entry
// of another from before it would be taken as had, and dropped. The rings
// are one snapshot up to the last entry the broker's reader handed over
// (each got everything up to there), and a read is one of its own, but
// rings and a read together are not, nor is a ring a resume filled past
// the reader: a read goes further than the reader. So such a stream takes
// the rings only when they hold all its channels and none gives it an
// entry past the reader, and otherwise reads all its channels.
func (h *Hub) cachedSince(channels []string, c *cursor) ([]entry, map[string]broker.Position) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []entry
	missing := map[string]broker.Position{}
	for _, ch := range channels {
		t := h.topics[ch]
		n := len(out)
		var ok bool
		if t != nil {
			out, ok = t.ring.since(c.of(ch), out)
		}
		if !ok {
			missing[ch] = c.of(ch)
			continue
		}
		for i := n; i < len(out); i++ {
			out[i].channel = ch
		}
	}
	past := func(e entry) bool { return h.delivered.Less(e.pos) }
	if c.global && len(channels) > 1 && (len(missing) > 0 || slices.ContainsFunc(out, past)) {
		for _, ch := range channels {
			missing[ch] = c.at
		}
		return nil, missing
	}
	return out, missing
}

// flight is a read of the log that resumes of the same channels from the
// same positions share.
type flight struct {
	after   uint64 // the hub's registrations when it started
	done    chan struct{}
	joiners int // resumes waiting for it besides its own
	read    []entry
	trimmed []string
	err     error
}

// readShared reads the log after the positions for s, or takes the read
// that a resume of the same channels from the same positions has out. A
// read serves a resume only if it started after the resume subscribed and
// the broker listened, as its own read would: then what the read does not
// reach reaches it live. Ten streams resuming together from the same
// place read and decode the log once, not ten times. The read s makes
// fills the rings.
func (h *Hub) readShared(ctx context.Context, s *Subscription, after map[string]broker.Position) ([]entry, []string, error) {
	if !closed(s.Ready) {
		return h.readLog(ctx, after) // the broker did not confirm listening: alone, and no fill
	}
	key := flightKey(after)
	h.mu.Lock()
	if f := h.flights[key]; f != nil && f.after >= s.order {
		f.joiners++
		h.mu.Unlock()
		select {
		case <-f.done:
			return f.read, f.trimmed, f.err
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
	}
	f := &flight{after: h.joins, done: make(chan struct{})}
	if h.flights == nil {
		h.flights = map[string]*flight{}
	}
	h.flights[key] = f
	h.mu.Unlock()

	from := maps.Clone(after)
	// Others may wait for this read: s's client leaving must not end it.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), resumeTimeout)
	f.read, f.trimmed, f.err = h.readLog(rctx, after)
	cancel()
	if f.err == nil {
		h.fill(s, from, f.read, f.trimmed)
	}
	h.mu.Lock()
	if h.flights[key] == f {
		delete(h.flights, key)
	}
	h.mu.Unlock()
	close(f.done)
	return f.read, f.trimmed, f.err
}

// flightKey names channels and their positions.
func flightKey(after map[string]broker.Position) string {
	var b strings.Builder
	for _, ch := range slices.Sorted(maps.Keys(after)) {
		b.WriteString(strconv.Itoa(len(ch)))
		b.WriteByte(':')
		b.WriteString(ch)
		b.WriteString(after[ch].String())
		b.WriteByte(',')
	}
	return b.String()
}

// fill puts what s read from the log after the positions from in the
// rings of its channels, so that the next resume from as far back is
// served from memory, without reading or decoding again. A ring then
// holds every entry after the position, as the resume did: the read took
// every entry after it up to where the log was safe to read, after s
// subscribed and the broker listened (readShared), and everything after
// that reaches the ring live since s subscribed. So a channel's ring is
// filled only while it still holds all it got since s joined (nothing
// evicted, no reset since), and never for a channel the log has trimmed
// past the position.
func (h *Hub) fill(s *Subscription, from map[string]broker.Position, read []entry, trimmed []string) {
	if h.opts.Replay <= 0 {
		return
	}
	of := make(map[string][]entry, len(from))
	for _, e := range read {
		ch := e.channel
		e.seq, e.channel = 0, "" // not delivered live: no sequence
		of[ch] = append(of[ch], e)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch, p := range from {
		t := h.topics[ch]
		if t == nil || slices.Contains(trimmed, ch) {
			continue
		}
		if _, in := t.subs[s]; !in || t.ring.evicted > s.joined || t.reset > s.joined {
			continue
		}
		h.ringBytes += t.ring.fill(p, of[ch], h.opts.Replay)
		heap.Fix(&h.rings, t.at)
	}
	h.capLocked()
}

// closed reports whether c is closed.
func closed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// readLog reads every entry after the positions, a page at a time.
func (h *Hub) readLog(ctx context.Context, after map[string]broker.Position) ([]entry, []string, error) {
	var out []entry
	var trimmed []string
	global := h.opts.Log.GlobalOrder()
	for {
		got, gone, err := h.opts.Log.Read(ctx, after, readPage)
		if err != nil {
			return nil, nil, err
		}
		if trimmed == nil {
			trimmed = gone
		}
		for _, e := range got {
			ev, err := Decode(e.Payload)
			if err != nil {
				continue // refused when it was delivered live, too
			}
			out = append(out, logEntry(&ev, e))
			if global {
				for ch := range after {
					after[ch] = e.Pos
				}
			} else {
				after[e.Channel] = e.Pos
			}
		}
		if len(got) < readPage {
			return out, trimmed, nil
		}
	}
}
