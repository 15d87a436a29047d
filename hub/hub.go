package hub

import (
	"container/heap"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sse-relay/caddy-sse-relay/broker"
)

// Listener is the broker side of the hub: it is told which channels have
// subscribers. Both calls return at once; the broker's own goroutine does
// the I/O. The channel Listen returns is closed once the broker is listening
// (or has given up waiting for a connection).
type Listener interface {
	Listen(channel string) <-chan struct{}
	Unlisten(channel string)
}

// Options tune a Hub.
type Options struct {
	// Replay is how many frames each channel keeps for Last-Event-ID
	// resumption; 0 turns replay and relay-assigned ids off.
	Replay int
	// Linger is how long a channel stays listened, with its replay ring,
	// after its last subscriber left.
	Linger time.Duration
	// MaxReplayBytes caps the frame bytes all rings hold together; past
	// it the oldest frames of the largest rings go first. 0 means no cap.
	MaxReplayBytes int
	// OnRefused is told of each payload that could not be relayed.
	OnRefused func(channel string, err error)
	// OnDropped is told of each subscriber cut off for a full queue.
	OnDropped func()
	// ChannelCap caps the channels the hub holds (with subscribers or
	// lingering); 0 means no cap.
	ChannelCap int
	// Log, when set, is the broker's durable log (history): ids are
	// positions in it and resumes read it (history.go).
	Log broker.Log
}

// ResetEvent is the name of the event a subscriber gets when events may have
// been lost: its Last-Event-ID is no longer (or was never) in the replay
// ring, or the broker connection dropped.
const ResetEvent = "sse-relay-reset"

// Reasons a subscription is ended by the hub.
const (
	DropSlow   = "slow"
	DropClosed = "closed"
)

// Hub routes events from one broker to its subscribers.
type Hub struct {
	opts     Options
	listener Listener
	node     string   // prefix of relay-assigned ids
	ids      idSealer // seals the sequence in relay-assigned ids (ids.go)

	// mu guards the topics, their rings and the sequence. Fan-out does
	// not hold it: an event's frame and subscriber list are taken under
	// mu, then fan is locked before mu is let go, so frames reach queues
	// in sequence order while subscribes, unsubscribes and stats go on.
	mu        sync.Mutex
	fan       sync.Mutex
	topics    map[string]*topic
	rings     ringHeap // every topic, largest ring first, for the byte cap
	seq       uint64
	closed    bool
	ringBytes int // frame bytes held by all rings

	queued    atomic.Uint64
	dropped   atomic.Uint64
	refused   atomic.Uint64
	backfills atomic.Uint64 // resumes that read the log
	expired   atomic.Uint64 // resumes from a position the log no longer holds
	resetsMu  sync.Mutex
	resets    map[string]uint64 // reset events made, by reason

	// joins counts subscriptions registered; flights are the reads of the
	// log that resumes share, by channels and positions (history.go).
	joins   uint64
	flights map[string]*flight

	// delivered is, with history, the position of the last entry the
	// broker's reader handed over: on a log with one order, it has handed
	// over every entry of the channels listened to up to there.
	delivered broker.Position
}

type topic struct {
	name string
	subs map[*Subscription]struct{}
	// list is subs as a slice for fan-out, built on the first event after
	// subs changed (nil until then) and never changed once built: a
	// fan-out outside mu reads it while subscribes build the next one.
	list   []*Subscription
	ring   ring
	ready  <-chan struct{}
	linger *time.Timer
	// lingers counts linger timers started, so that a timer that fired
	// while a subscribe stopped it does not expire the channel's next one.
	lingers uint64
	// since is the hub sequence when the channel was last listened anew:
	// what it carried before then was never received, so a resume from
	// earlier has a gap.
	since uint64
	// at is the topic's place in the hub's ring heap.
	at int
	// streamed is set once a stream of the channel ran: only then does
	// it linger.
	streamed bool
	// reset is the hub sequence of the channel's last reset: with
	// history it is not kept in the ring, which from then on lacks what
	// the reset says was lost.
	reset uint64
}

// ringHeap orders topics by the bytes their rings hold, largest first, so
// the replay cap finds what to evict in O(log channels), not by a scan.
type ringHeap []*topic

func (r ringHeap) Len() int           { return len(r) }
func (r ringHeap) Less(i, j int) bool { return r[i].ring.bytes > r[j].ring.bytes }
func (r ringHeap) Swap(i, j int) {
	r[i], r[j] = r[j], r[i]
	r[i].at, r[j].at = i, j
}
func (r *ringHeap) Push(x any) {
	t := x.(*topic)
	t.at = len(*r)
	*r = append(*r, t)
}
func (r *ringHeap) Pop() any {
	old := *r
	t := old[len(old)-1]
	old[len(old)-1] = nil
	*r = old[:len(old)-1]
	t.at = -1
	return t
}

// New returns a hub that tells l which channels to listen to.
func New(l Listener, opts Options) *Hub {
	return &Hub{opts: opts, listener: l, node: nodeID(), ids: newIDSealer(), topics: make(map[string]*topic)}
}

// Frame is one encoded event as the hub hands it to every subscriber: the
// same value, not a copy, for all of them.
type Frame struct {
	Bytes []byte
	At    time.Time // when the hub got the event from the broker
	// With history, an entry of the log: its channel and position, and
	// the length of the id line Bytes opens with.
	Channel string
	Pos     broker.Position
	IDLen   int
}

// Subscription is one stream's view of the hub: frames to write, in order.
type Subscription struct {
	hub      *Hub
	channels []string
	// Backlog holds replayed frames, to be written before anything live.
	Backlog [][]byte
	// Ready is closed once the broker listens to every channel.
	Ready <-chan struct{}

	// The live queue grows with what is pending instead of being
	// allocated at its full size, so an idle subscriber costs almost
	// nothing; limit frames pending cut the subscriber off.
	mu     sync.Mutex
	queue  []*Frame
	limit  int
	wake   chan struct{} // made by Wake; holds a token while frames are pending
	notify func()        // set by Notify, called instead of a channel

	dropped atomic.Bool
	reason  atomic.Value
	once    sync.Once

	// With history: where the stream is in its channels' logs (nil until
	// known), and the reset to send first when its Last-Event-ID was not
	// a cursor. Used by CatchUp, then only by the writer, through Append.
	cursor        *cursor
	cursorProblem []*Frame
	// joined is the hub sequence when the subscription was registered:
	// every frame after it reached it live. order is its place among the
	// hub's registrations.
	joined uint64
	order  uint64
}

// KeptFrames is the most frames a queue keeps room for between wakes, and
// a writer's scratch for Take: room for a burst, kept for the life of an
// idle stream, was a few hundred bytes of each of 50,000.
const KeptFrames = 8

// Wake has a value when frames are pending or the hub ended the
// subscription; then call Reason and Take. The channel is made on the
// first call: a reader that calls Notify instead holds none.
func (s *Subscription) Wake() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.wake == nil {
		s.wake = make(chan struct{}, 1)
		if len(s.queue) > 0 || s.dropped.Load() {
			s.wake <- struct{}{}
		}
	}
	return s.wake
}

// Notify has f called whenever frames are queued or the hub ends the
// subscription, on the goroutine that did it, instead of a token on Wake:
// f must not block. What happened before Notify is not told: call Take
// and Reason after it.
func (s *Subscription) Notify(f func()) {
	s.mu.Lock()
	s.notify = f
	s.mu.Unlock()
}

// signal tells the reader, through Notify's func or Wake's channel.
func signal(f func(), wake chan struct{}) {
	if f != nil {
		f()
		return
	}
	if wake != nil {
		select {
		case wake <- struct{}{}:
		default:
		}
	}
}

// Take appends the pending frames to dst, oldest first, and empties the
// queue.
func (s *Subscription) Take(dst []*Frame) []*Frame {
	s.mu.Lock()
	defer s.mu.Unlock()
	dst = append(dst, s.queue...)
	clear(s.queue)
	if cap(s.queue) > KeptFrames {
		s.queue = nil // a burst's queue is not kept for an idle stream
	} else {
		s.queue = s.queue[:0]
	}
	return dst
}

// Pending is how many frames wait.
func (s *Subscription) Pending() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.queue)
}

// offer queues frames without blocking, and wakes the writer once; false
// means they do not fit in the queue.
func (s *Subscription) offer(frames []*Frame) bool {
	s.mu.Lock()
	if len(s.queue)+len(frames) > s.limit {
		s.mu.Unlock()
		return false
	}
	s.queue = append(s.queue, frames...)
	f, wake := s.notify, s.wake
	s.mu.Unlock()
	signal(f, wake)
	return true
}

// Reason says why the hub ended the subscription.
func (s *Subscription) Reason() string {
	r, _ := s.reason.Load().(string)
	return r
}

// drop ends the subscription: the reader is told as of frames (Notify or
// Wake), and learns of the end from Reason.
func (s *Subscription) drop(reason string) {
	s.once.Do(func() {
		s.reason.Store(reason)
		s.mu.Lock()
		s.dropped.Store(true)
		f, wake := s.notify, s.wake
		s.mu.Unlock()
		signal(f, wake)
	})
}

// Subscribe registers a subscriber of channels with a queue of buffer
// frames. With a lastEventID it first replays what the channels' rings hold
// after that id, or a reset frame when the ring cannot tell.
func (h *Hub) Subscribe(channels []string, lastEventID string, buffer int) (*Subscription, error) {
	if buffer < 1 {
		buffer = 1
	}
	s := &Subscription{hub: h, channels: channels, limit: buffer}
	readies := make([]<-chan struct{}, 0, len(channels))

	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, errors.New("hub closed")
	}
	if h.opts.ChannelCap > 0 && len(h.topics)+h.unknownLocked(channels) > h.opts.ChannelCap {
		return nil, ErrChannelCap
	}
	for _, ch := range channels {
		t := h.topics[ch]
		if t == nil {
			t = &topic{name: ch, subs: make(map[*Subscription]struct{}), since: h.seq}
			t.ready = h.listener.Listen(ch)
			h.topics[ch] = t
			heap.Push(&h.rings, t)
		}
		if t.linger != nil {
			t.linger.Stop()
			t.linger = nil
		}
		t.subs[s] = struct{}{}
		t.list = nil
		readies = append(readies, t.ready)
	}
	switch {
	case lastEventID == "":
	case h.opts.Log != nil:
		if c, ok := parseCursor(lastEventID, channels, h.opts.Log.GlobalOrder()); ok {
			s.cursor = &c
		} else {
			s.cursorProblem = []*Frame{{Bytes: h.resetFrame(channels, "unknown-id")}}
		}
	case h.opts.Replay > 0:
		s.Backlog = h.replayLocked(channels, lastEventID)
	}
	s.Ready = all(readies)
	h.joins++
	s.joined, s.order = h.seq, h.joins
	return s, nil
}

// ErrChannelCap refuses a subscription that would take the hub past
// Options.ChannelCap channels.
var ErrChannelCap = errors.New("too many channels on this node")

// Unknown counts the channels the hub does not have yet: what a
// subscription to them would add.
func (h *Hub) Unknown(channels []string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.unknownLocked(channels)
}

func (h *Hub) unknownLocked(channels []string) int {
	n := 0
	for _, ch := range channels {
		if h.topics[ch] == nil {
			n++
		}
	}
	return n
}

// replayLocked finds the frames after lastEventID in the channels' rings,
// merged in publication order.
func (h *Hub) replayLocked(channels []string, lastEventID string) [][]byte {
	after, problem := h.seqOfLocked(channels, lastEventID)
	if problem != "" {
		return [][]byte{h.resetFrame(channels, problem)}
	}
	var entries []entry
	var unlistened, evicted []string
	for _, ch := range channels {
		t := h.topics[ch]
		switch {
		case t.since > after:
			unlistened = append(unlistened, ch)
		case t.ring.evicted > after:
			evicted = append(evicted, ch)
		}
		entries = t.ring.after(after, entries)
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].seq < entries[j].seq })
	out := make([][]byte, 0, len(entries)+2)
	if len(unlistened) > 0 {
		out = append(out, h.resetFrame(unlistened, "not-listened"))
	}
	if len(evicted) > 0 {
		out = append(out, h.resetFrame(evicted, "evicted"))
	}
	for _, e := range entries {
		out = append(out, e.frame)
	}
	return out
}

// seqOfLocked maps an event id to the hub sequence it was published at,
// or says why it cannot: "unknown-id", or "ambiguous-id" when a publisher
// used the id for several events the rings still hold (the client may have
// seen any of them). Relay-assigned ids carry their sequence; a publisher's
// id is looked up in the rings.
func (h *Hub) seqOfLocked(channels []string, id string) (uint64, string) {
	if node, sealed, ok := strings.Cut(id, "-"); ok && node == h.node {
		if seq, ok := h.ids.open(sealed); ok && seq <= h.seq {
			return seq, ""
		}
		return 0, "unknown-id"
	}
	var seq uint64
	found := 0
	for _, ch := range channels {
		s, n := h.topics[ch].ring.find(id)
		if n > 0 {
			seq = s
		}
		found += n
	}
	switch found {
	case 0:
		return 0, "unknown-id"
	case 1:
		return seq, ""
	default:
		return 0, "ambiguous-id"
	}
}

// Unsubscribe removes s, whose stream ran; the last subscriber of a
// channel leaves it listened for Linger before the broker is told to stop.
func (h *Hub) Unsubscribe(s *Subscription) { h.leave(s, true) }

// Abandon removes s, whose stream never opened (its client left first, or
// its request was refused after subscribing). A channel no stream ever
// used does not linger: churning names must not grow the listen set.
func (h *Hub) Abandon(s *Subscription) { h.leave(s, false) }

func (h *Hub) leave(s *Subscription, streamed bool) {
	s.drop(DropClosed)
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, ch := range s.channels {
		t := h.topics[ch]
		if t == nil {
			continue
		}
		delete(t.subs, s)
		t.list = nil
		t.streamed = t.streamed || streamed
		if len(t.subs) > 0 || t.linger != nil {
			continue
		}
		if h.opts.Linger <= 0 || h.closed || !t.streamed {
			h.forgetLocked(t)
			continue
		}
		t.lingers++
		gen := t.lingers
		t.linger = time.AfterFunc(h.opts.Linger, func() { h.expire(t, gen) })
	}
}

// expire forgets t when its linger timer gen runs out with t still
// unsubscribed; a timer stopped too late to keep it from firing finds a
// later generation, or subscribers, and leaves t alone.
func (h *Hub) expire(t *topic, gen uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.topics[t.name] == t && len(t.subs) == 0 && t.linger != nil && t.lingers == gen {
		h.forgetLocked(t)
	}
}

func (h *Hub) forgetLocked(t *topic) {
	if t.linger != nil {
		t.linger.Stop()
	}
	delete(h.topics, t.name)
	heap.Remove(&h.rings, t.at)
	h.ringBytes -= t.ring.bytes
	h.listener.Unlisten(t.name)
}

// Deliver relays one payload published on channel. It never blocks on a
// subscriber: a full queue ends that subscription. Called by the broker's
// reader goroutine.
func (h *Hub) Deliver(channel string, payload []byte) {
	h.DeliverBatch([]Message{{Channel: channel, Payload: payload}})
}

// Message is a payload published on a channel.
type Message struct {
	Channel string
	Payload []byte
}

// DeliverBatch relays payloads read together, in order. Consecutive
// payloads of one channel reach each subscriber in one offer and one wake,
// so its stream writes them at once: on a node with tens of thousands of
// streams, the woken streams run before the broker's reader gets the CPU
// again, and a burst fanned out an event at a time costs a write an event
// a stream.
func (h *Hub) DeliverBatch(msgs []Message) {
	at := time.Now()
	forRuns(msgs, func(m Message) string { return m.Channel }, func(channel string, run []Message) {
		h.deliverRun(channel, run, at)
	})
}

// forRuns calls run for each stretch of consecutive items of one channel,
// in order.
func forRuns[T any](items []T, channel func(T) string, run func(channel string, items []T)) {
	for i := 0; i < len(items); {
		ch := channel(items[i])
		j := i + 1
		for j < len(items) && channel(items[j]) == ch {
			j++
		}
		run(ch, items[i:j])
		i = j
	}
}

// deliverRun relays payloads of one channel.
func (h *Hub) deliverRun(channel string, msgs []Message, at time.Time) {
	evs := make([]Event, 0, len(msgs))
	for _, m := range msgs {
		ev, err := Decode(m.Payload)
		if err != nil {
			h.refuse(channel, err)
			continue
		}
		if h.opts.Log != nil {
			// With history ids are cursors; this event is not in the log and
			// leaves the stream's cursor where it is.
			ev.ID = ""
		}
		evs = append(evs, ev)
	}
	if len(evs) == 0 {
		return
	}
	h.mu.Lock()
	t := h.topics[channel]
	if t == nil {
		h.mu.Unlock()
		return
	}
	frames := make([]*Frame, len(evs))
	for i := range evs {
		frames[i] = h.frameLocked(t, &evs[i], nil, at)
	}
	h.fanOutLocked(t, frames)
}

func (h *Hub) refuse(channel string, err error) {
	h.refused.Add(1)
	if h.opts.OnRefused != nil {
		h.opts.OnRefused(channel, err)
	}
}

// emit gives channel's next event the next sequence number, keeps it in
// the ring and offers it to the subscribers (see frameLocked).
func (h *Hub) emit(channel string, ev *Event, reset []byte, at time.Time) {
	h.mu.Lock()
	t := h.topics[channel]
	if t == nil {
		h.mu.Unlock()
		return
	}
	h.fanOutLocked(t, []*Frame{h.frameLocked(t, ev, reset, at)})
}

// frameLocked gives t's next event the next sequence number and keeps it
// in the ring. The frame is ev's, with an id from the sequence when it has
// none, or else reset, a marker with no id.
func (h *Hub) frameLocked(t *topic, ev *Event, reset []byte, at time.Time) *Frame {
	h.seq++
	frame, id, keep := reset, "", h.opts.Log == nil
	if ev != nil {
		if ev.ID == "" && h.opts.Replay > 0 && ev.HasData && h.opts.Log == nil {
			ev.ID = h.relayID(h.seq)
		}
		frame, id, keep = ev.AppendFrame(make([]byte, 0, frameSize(ev))), ev.ID, ev.HasData && keep
	}
	if h.opts.Replay > 0 && keep {
		h.keepLocked(t, entry{seq: h.seq, id: id, frame: frame})
	}
	if reset != nil {
		t.reset = h.seq
		if h.opts.Log != nil {
			// The ring never got what the reset says was lost: it no
			// longer holds everything after any position. A resume reads
			// the log, which tells of the loss.
			h.ringBytes -= t.ring.clear()
			heap.Fix(&h.rings, t.at)
		}
	}
	return &Frame{Bytes: frame, At: at}
}

// emitEntries is emit for entries of the log, one channel's, in position
// order, kept in the ring as the cache of a resume.
func (h *Hub) emitEntries(channel string, es []entry, at time.Time) {
	h.mu.Lock()
	for _, e := range es {
		if h.delivered.Less(e.pos) {
			h.delivered = e.pos
		}
	}
	t := h.topics[channel]
	if t == nil {
		h.mu.Unlock()
		return
	}
	frames := make([]*Frame, len(es))
	for i, e := range es {
		h.seq++
		e.seq, e.channel = h.seq, ""
		if h.opts.Replay > 0 && t.ring.admits(e.pos) {
			h.keepLocked(t, e)
		}
		frames[i] = &Frame{Bytes: e.frame, At: at, Channel: channel, Pos: e.pos, IDLen: e.idLen}
	}
	h.fanOutLocked(t, frames)
}

// fanOutLocked offers frames to t's subscribers and lets h.mu go: the
// fan-out runs under h.fan alone, taken before h.mu is let go, so frames
// reach queues in sequence order.
func (h *Hub) fanOutLocked(t *topic, frames []*Frame) {
	subs := t.subscribersLocked()
	if len(subs) == 0 { // lingering: kept in the ring, no one to tell
		h.mu.Unlock()
		return
	}
	h.fan.Lock()
	h.mu.Unlock()
	h.fanOut(subs, frames)
	h.fan.Unlock()
}

// subscribersLocked is t's subscribers as a slice that stays as it is.
func (t *topic) subscribersLocked() []*Subscription {
	if t.list == nil && len(t.subs) > 0 {
		t.list = make([]*Subscription, 0, len(t.subs))
		for s := range t.subs {
			t.list = append(t.list, s)
		}
	}
	return t.list
}

// keepLocked puts e in t's ring and enforces the node-wide byte cap.
func (h *Hub) keepLocked(t *topic, e entry) {
	h.ringBytes += t.ring.push(e, h.opts.Replay)
	heap.Fix(&h.rings, t.at)
	h.capLocked()
}

// capLocked evicts the oldest frames of the largest rings while all of
// them hold more than MaxReplayBytes.
func (h *Hub) capLocked() {
	for h.opts.MaxReplayBytes > 0 && h.ringBytes > h.opts.MaxReplayBytes {
		freed := h.rings[0].ring.popOldest()
		if freed == 0 {
			return
		}
		h.ringBytes -= freed
		heap.Fix(&h.rings, 0)
	}
}

// fanOut offers frames to subs; the caller holds h.fan. A subscriber that
// left meanwhile may still get them in a queue nobody reads.
func (h *Hub) fanOut(subs []*Subscription, frames []*Frame) {
	queued := 0
	for _, s := range subs {
		if s.dropped.Load() {
			continue
		}
		if s.offer(frames) {
			queued++
		} else {
			h.dropped.Add(1)
			s.drop(DropSlow)
			if h.opts.OnDropped != nil {
				h.opts.OnDropped()
			}
		}
	}
	h.queued.Add(uint64(queued * len(frames)))
}

// Reset tells the subscribers of channels that events may have been lost
// (the broker connection dropped). The marker is kept in the rings, so a
// client resuming from before it learns of the gap too.
func (h *Hub) Reset(channels []string, reason string) {
	for _, ch := range channels {
		h.emit(ch, nil, h.resetFrame([]string{ch}, reason), time.Now())
	}
}

// Channels lists the channels that have subscribers or linger.
func (h *Hub) Channels() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]string, 0, len(h.topics))
	for ch := range h.topics {
		out = append(out, ch)
	}
	sort.Strings(out)
	return out
}

// ChannelStat describes one channel of the hub.
type ChannelStat struct {
	Name        string `json:"name"`
	Subscribers int    `json:"subscribers"`
	Replay      int    `json:"replay_events"`
	ReplayBytes int    `json:"replay_bytes"`
	Lingering   bool   `json:"lingering"`
}

// ChannelStats describes every channel that has subscribers or lingers.
func (h *Hub) ChannelStats() []ChannelStat {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]ChannelStat, 0, len(h.topics))
	for _, t := range h.topics {
		out = append(out, ChannelStat{Name: t.name, Subscribers: len(t.subs), Replay: t.ring.len(),
			ReplayBytes: t.ring.bytes, Lingering: t.linger != nil})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Close ends every subscription; later Subscribe calls fail.
func (h *Hub) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for _, t := range h.topics {
		for s := range t.subs {
			s.drop(DropClosed)
		}
		if t.linger != nil {
			t.linger.Stop()
		}
	}
	h.topics = make(map[string]*topic)
	h.rings = nil
	h.ringBytes = 0
}

// Stats are the hub's running totals.
type Stats struct {
	Queued, Dropped, Refused uint64
	ReplayBytes              int
	// With history: resumes that read the log, and resumes from a
	// position the log no longer holds (they got a reset).
	Backfills, Expired uint64
	// Resets counts the reset events made, by reason.
	Resets map[string]uint64
}

// Stats returns the hub's running totals.
func (h *Hub) Stats() Stats {
	h.mu.Lock()
	replay := h.ringBytes
	h.mu.Unlock()
	h.resetsMu.Lock()
	resets := maps.Clone(h.resets)
	h.resetsMu.Unlock()
	return Stats{Queued: h.queued.Load(), Dropped: h.dropped.Load(), Refused: h.refused.Load(), ReplayBytes: replay,
		Backfills: h.backfills.Load(), Expired: h.expired.Load(), Resets: resets}
}

func frameSize(ev *Event) int {
	return len(ev.ID) + len(ev.Name) + len(ev.Data) + len(ev.Comment) + 48
}

// resetFrame is the reset event for channels, counted by reason.
func (h *Hub) resetFrame(channels []string, reason string) []byte {
	h.resetsMu.Lock()
	if h.resets == nil {
		h.resets = map[string]uint64{}
	}
	h.resets[reason]++
	h.resetsMu.Unlock()
	data, _ := json.Marshal(struct {
		Channels []string `json:"channels"`
		Reason   string   `json:"reason"`
	}{channels, reason})
	return []byte(fmt.Sprintf("event: %s\ndata: %s\n\n", ResetEvent, data))
}

// all returns a channel closed once every one of chans is closed.
func all(chans []<-chan struct{}) <-chan struct{} {
	pending := chans[:0:0]
	for _, c := range chans {
		select {
		case <-c:
		default:
			pending = append(pending, c)
		}
	}
	if len(pending) == 0 {
		return closedChan
	}
	if len(pending) == 1 {
		return pending[0]
	}
	out := make(chan struct{})
	go func() {
		for _, c := range pending {
			<-c
		}
		close(out)
	}()
	return out
}

var closedChan = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()
