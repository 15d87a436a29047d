package hub

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sse-relay/caddy-sse-relay/broker"
)

// listener records Listen/Unlisten calls.
type listener struct {
	mu     sync.Mutex
	active map[string]int
	calls  []string
}

func newListener() *listener { return &listener{active: map[string]int{}} }

func (l *listener) Listen(ch string) <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.active[ch]++
	l.calls = append(l.calls, "listen "+ch)
	return closedChan
}

func (l *listener) Unlisten(ch string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.active[ch]--
	l.calls = append(l.calls, "unlisten "+ch)
}

func (l *listener) count(ch string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.active[ch]
}

// recv takes the oldest pending frame, waiting up to 2 s for one.
func recv(t *testing.T, s *Subscription) string {
	t.Helper()
	deadline := time.After(2 * time.Second)
	for {
		if f := next(s); f != nil {
			return string(f.Bytes)
		}
		select {
		case <-s.Wake():
		case <-deadline:
			t.Fatal("no frame")
		}
	}
}

// next pops one frame, putting the rest back in order.
func next(s *Subscription) *Frame {
	all := s.Take(nil)
	if len(all) == 0 {
		return nil
	}
	s.mu.Lock()
	s.queue = append(all[1:len(all):len(all)], s.queue...)
	s.mu.Unlock()
	return all[0]
}

func TestFanOutSameBytes(t *testing.T) {
	h := New(newListener(), Options{})
	a, _ := h.Subscribe([]string{"c"}, "", 4)
	b, _ := h.Subscribe([]string{"c"}, "", 4)
	h.Deliver("c", []byte(`{"data":"x"}`))
	fa, fb := next(a), next(b)
	if fa != fb || &fa.Bytes[0] != &fb.Bytes[0] {
		t.Fatal("each subscriber got its own encoding; want the same bytes")
	}
	if string(fa.Bytes) != "data: x\n\n" {
		t.Fatalf("frame %q", fa.Bytes)
	}
}

func TestRefCountedListen(t *testing.T) {
	l := newListener()
	h := New(l, Options{})
	a, _ := h.Subscribe([]string{"x", "y"}, "", 1)
	b, _ := h.Subscribe([]string{"x"}, "", 1)
	if l.count("x") != 1 || l.count("y") != 1 {
		t.Fatalf("listens %v", l.active)
	}
	h.Unsubscribe(a)
	if l.count("x") != 1 || l.count("y") != 0 {
		t.Fatalf("after first leaves: %v", l.active)
	}
	h.Unsubscribe(b)
	if l.count("x") != 0 {
		t.Fatalf("after last leaves: %v", l.active)
	}
}

func TestLingerKeepsListenAndRing(t *testing.T) {
	l := newListener()
	h := New(l, Options{Replay: 10, Linger: 100 * time.Millisecond})
	a, _ := h.Subscribe([]string{"c"}, "", 4)
	h.Deliver("c", []byte("one"))
	first := recv(t, a)
	id := strings.TrimPrefix(strings.Split(first, "\n")[0], "id: ")
	h.Unsubscribe(a)
	h.Deliver("c", []byte("two")) // published while nobody is connected
	if l.count("c") != 1 {
		t.Fatal("channel unlistened before linger ran out")
	}
	b, _ := h.Subscribe([]string{"c"}, id, 4)
	if len(b.Backlog) != 1 || !strings.Contains(string(b.Backlog[0]), "data: two") {
		t.Fatalf("backlog %q", b.Backlog)
	}
	h.Unsubscribe(b)
	time.Sleep(300 * time.Millisecond)
	if l.count("c") != 0 {
		t.Fatal("channel still listened after linger")
	}
}

// TestResumeAfterLingerGetsReset: once a channel has lingered out, what
// was published on it meanwhile was never received. A client resuming
// from before then gets a reset, not silence, even though its relay id is
// from this node and other channels moved the sequence on.
func TestResumeAfterLingerGetsReset(t *testing.T) {
	h := New(newListener(), Options{Replay: 10, Linger: 20 * time.Millisecond})
	a, _ := h.Subscribe([]string{"c"}, "", 4)
	h.Deliver("c", []byte("one"))
	id := strings.TrimPrefix(strings.Split(recv(t, a), "\n")[0], "id: ")
	h.Unsubscribe(a)
	other, _ := h.Subscribe([]string{"d"}, "", 4)
	defer h.Unsubscribe(other)
	time.Sleep(100 * time.Millisecond) // c lingers out
	h.Deliver("c", []byte("lost"))     // nobody listens to c
	h.Deliver("d", []byte("elsewhere"))

	b, _ := h.Subscribe([]string{"c", "d"}, id, 4)
	if len(b.Backlog) != 2 || !strings.Contains(string(b.Backlog[0]), "event: "+ResetEvent) ||
		!strings.Contains(string(b.Backlog[0]), `"channels":["c"],"reason":"not-listened"`) ||
		!strings.Contains(string(b.Backlog[1]), "data: elsewhere") {
		t.Fatalf("backlog %q, want a reset for c, then d's event", b.Backlog)
	}
}

func TestSlowSubscriberDroppedOthersUnaffected(t *testing.T) {
	h := New(newListener(), Options{})
	slow, _ := h.Subscribe([]string{"c"}, "", 2)
	fast, _ := h.Subscribe([]string{"c"}, "", 100)
	for i := 0; i < 10; i++ {
		h.Deliver("c", []byte(fmt.Sprint(i)))
	}
	if slow.Reason() != DropSlow {
		t.Fatalf("reason %q", slow.Reason())
	}
	if fast.Pending() != 10 {
		t.Fatalf("fast subscriber has %d frames, want 10", fast.Pending())
	}
	if h.Stats().Dropped != 1 {
		t.Fatalf("dropped count %d", h.Stats().Dropped)
	}
}

func TestReplayHandOverNoGapNoDuplicate(t *testing.T) {
	h := New(newListener(), Options{Replay: 1000})
	keep, _ := h.Subscribe([]string{"a", "b"}, "", 10000)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 2000; i++ {
			ch := "a"
			if i%2 == 1 {
				ch = "b"
			}
			h.Deliver(ch, []byte(fmt.Sprint(i)))
		}
	}()
	// Resume mid-stream: take the id of an early event, subscribe while
	// publishing goes on, and check backlog + live is exactly the rest.
	first := recv(t, keep)
	id := strings.TrimPrefix(strings.Split(first, "\n")[0], "id: ")
	resumed, _ := h.Subscribe([]string{"a", "b"}, id, 10000)
	wg.Wait()
	var got []string
	for _, f := range resumed.Backlog {
		got = append(got, dataOf(string(f)))
	}
	for _, f := range resumed.Take(nil) {
		got = append(got, dataOf(string(f.Bytes)))
	}
	if len(got) != 1999 {
		t.Fatalf("got %d events after the first, want 1999", len(got))
	}
	for i, d := range got {
		if d != fmt.Sprint(i+1) {
			t.Fatalf("event %d is %q, want %d (gap or duplicate)", i, d, i+1)
		}
	}
}

func dataOf(frame string) string {
	for _, l := range strings.Split(frame, "\n") {
		if v, ok := strings.CutPrefix(l, "data: "); ok {
			return v
		}
	}
	return ""
}

func TestReplayUnknownIDGetsReset(t *testing.T) {
	h := New(newListener(), Options{Replay: 10})
	s, _ := h.Subscribe([]string{"c"}, "someone-else-42", 4)
	if len(s.Backlog) != 1 || !strings.Contains(string(s.Backlog[0]), "event: "+ResetEvent) {
		t.Fatalf("backlog %q, want a reset", s.Backlog)
	}
}

func TestReplayEvictedGetsReset(t *testing.T) {
	h := New(newListener(), Options{Replay: 3})
	s, _ := h.Subscribe([]string{"c"}, "", 100)
	for i := 0; i < 10; i++ {
		h.Deliver("c", []byte(fmt.Sprint(i)))
	}
	first := recv(t, s)
	id := strings.TrimPrefix(strings.Split(first, "\n")[0], "id: ")
	r, _ := h.Subscribe([]string{"c"}, id, 100)
	if len(r.Backlog) != 4 || !strings.Contains(string(r.Backlog[0]), ResetEvent) {
		t.Fatalf("backlog %q: want reset then the 3 kept", r.Backlog)
	}
}

func TestPublisherIDResumes(t *testing.T) {
	h := New(newListener(), Options{Replay: 10})
	s, _ := h.Subscribe([]string{"c"}, "", 100)
	h.Deliver("c", []byte(`{"id":"order-1","data":"1"}`))
	h.Deliver("c", []byte(`{"id":"order-2","data":"2"}`))
	_ = s
	r, _ := h.Subscribe([]string{"c"}, "order-1", 100)
	if len(r.Backlog) != 1 || !strings.Contains(string(r.Backlog[0]), "id: order-2") {
		t.Fatalf("backlog %q", r.Backlog)
	}

	// The same id again (an update to order 1): a client resuming from
	// order-1 may have seen either copy, so the ring cannot tell what it
	// missed. A reset, not a guess that could skip order-2.
	h.Deliver("c", []byte(`{"id":"order-1","data":"1 again"}`))
	a, _ := h.Subscribe([]string{"c"}, "order-1", 100)
	if len(a.Backlog) != 1 || !strings.Contains(string(a.Backlog[0]), `"reason":"ambiguous-id"`) {
		t.Fatalf("backlog %q, want an ambiguous-id reset", a.Backlog)
	}
}

func TestRefusedPayloadCountedAndStreamKept(t *testing.T) {
	var refused []string
	h := New(newListener(), Options{OnRefused: func(ch string, err error) { refused = append(refused, ch+": "+err.Error()) }})
	s, _ := h.Subscribe([]string{"c"}, "", 4)
	h.Deliver("c", []byte(`{"event":"x\ny","data":"z"}`))
	h.Deliver("c", []byte(`ok`))
	if got := recv(t, s); got != "data: ok\n\n" {
		t.Fatalf("got %q", got)
	}
	if len(refused) != 1 || h.Stats().Refused != 1 {
		t.Fatalf("refused %v", refused)
	}
}

func TestResetReachesSubscribers(t *testing.T) {
	h := New(newListener(), Options{Replay: 10})
	s, _ := h.Subscribe([]string{"c"}, "", 4)
	h.Reset([]string{"c"}, "broker-reconnect")
	if got := recv(t, s); !strings.Contains(got, "event: "+ResetEvent) || !strings.Contains(got, "broker-reconnect") {
		t.Fatalf("got %q", got)
	}
}

func TestRingGrowsAndWraps(t *testing.T) {
	var r ring
	for i := 1; i <= 25; i++ {
		r.push(entry{seq: uint64(i)}, 20)
	}
	if r.len() != 20 || r.evicted != 5 || len(r.buf) != 20 {
		t.Fatalf("len %d evicted %d cap %d", r.len(), r.evicted, len(r.buf))
	}
	got := r.after(22, nil)
	if len(got) != 3 || got[0].seq != 23 {
		t.Fatalf("after 22: %v", got)
	}
}

func BenchmarkDeliver1000(b *testing.B) {
	h := New(newListener(), Options{Replay: 1000})
	subs := make([]*Subscription, 1000)
	for i := range subs {
		subs[i], _ = h.Subscribe([]string{"c"}, "", 1)
	}
	payload := []byte(`{"event":"tick","data":"hello"}`)
	var scratch []*Frame
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		h.Deliver("c", payload)
		for _, s := range subs {
			<-s.Wake()
			scratch = s.Take(scratch[:0])
		}
	}
}

func TestReplayByteCapEvictsLargestRingFirst(t *testing.T) {
	h := New(newListener(), Options{Replay: 1000, MaxReplayBytes: 20000})
	big, _ := h.Subscribe([]string{"big"}, "", 10000)
	small, _ := h.Subscribe([]string{"small"}, "", 10000)
	h.Deliver("small", []byte("s0"))
	firstSmall := recv(t, small)
	for i := 0; i < 100; i++ {
		h.Deliver("big", []byte(strings.Repeat("x", 1000)))
	}
	if got := h.Stats().ReplayBytes; got > 20000 {
		t.Fatalf("rings hold %d bytes, cap 20000", got)
	}
	// The small ring kept its frame; the big one lost its oldest, so a
	// resume from its first event gets the reset signal.
	id := strings.TrimPrefix(strings.Split(firstSmall, "\n")[0], "id: ")
	r, _ := h.Subscribe([]string{"small"}, id, 10)
	if len(r.Backlog) != 0 {
		t.Fatalf("small resume backlog %q, want nothing missed", r.Backlog)
	}
	firstBig := recv(t, big)
	bid := strings.TrimPrefix(strings.Split(firstBig, "\n")[0], "id: ")
	rb, _ := h.Subscribe([]string{"big"}, bid, 1000)
	if len(rb.Backlog) == 0 || !strings.Contains(string(rb.Backlog[0]), ResetEvent) {
		t.Fatal("resume into the evicted hole did not get a reset")
	}
}

func TestRingDroppedAfterLinger(t *testing.T) {
	h := New(newListener(), Options{Replay: 10, Linger: 50 * time.Millisecond})
	s, _ := h.Subscribe([]string{"c"}, "", 10)
	h.Deliver("c", []byte("x"))
	h.Unsubscribe(s)
	time.Sleep(200 * time.Millisecond)
	if got := h.Stats().ReplayBytes; got != 0 {
		t.Fatalf("%d replay bytes held after the channel lingered out", got)
	}
	if len(h.Channels()) != 0 {
		t.Fatalf("channels %v", h.Channels())
	}
}

// BenchmarkSubscribeDuringFanOut measures a subscribe and unsubscribe on
// one channel while another goroutine keeps fanning events out to 10,000
// subscribers of another: what a browser connecting waits for while a
// busy channel delivers.
func BenchmarkSubscribeDuringFanOut(b *testing.B) {
	h := New(newListener(), Options{Replay: 1000})
	subs := make([]*Subscription, 10000)
	for i := range subs {
		subs[i], _ = h.Subscribe([]string{"busy"}, "", 4)
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		payload := []byte(`{"event":"tick","data":"hello"}`)
		var scratch []*Frame
		for {
			select {
			case <-stop:
				return
			default:
			}
			h.Deliver("busy", payload)
			for _, s := range subs {
				scratch = s.Take(scratch[:0])
			}
		}
	}()
	took := make([]time.Duration, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		s, err := h.Subscribe([]string{"quiet"}, "", 4)
		if err != nil {
			b.Fatal(err)
		}
		h.Unsubscribe(s)
		took[i] = time.Since(start)
	}
	b.StopTimer()
	close(stop)
	<-done
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)*99/100].Microseconds()), "p99-µs")
}

// TestLiveOrderIsSequenceOrder: events delivered from several goroutines
// at once reach a multi-channel subscriber in the order of their
// sequence, the order a resume replays them in; fan-out runs outside the
// hub's lock, so this is what its hand-over to the fan lock keeps.
func TestLiveOrderIsSequenceOrder(t *testing.T) {
	h := New(newListener(), Options{Replay: 5000})
	s, _ := h.Subscribe([]string{"a", "b", "c"}, "", 5000)
	var wg sync.WaitGroup
	for _, ch := range []string{"a", "b", "c"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 500; i++ {
				if i%100 == 0 {
					h.Reset([]string{ch}, "test")
				}
				h.Deliver(ch, []byte(ch))
			}
		}()
	}
	wg.Wait()
	frames := s.Take(nil)
	if len(frames) != 1515 {
		t.Fatalf("%d frames, want 1515", len(frames))
	}
	var live []string
	for _, f := range frames {
		live = append(live, string(f.Bytes))
	}
	// A resume from the first event replays the rest of the rings in
	// sequence order: the live order after it must be the same.
	at := slices.IndexFunc(live, func(f string) bool { return strings.HasPrefix(f, "id: ") })
	first := strings.TrimPrefix(strings.SplitN(live[at], "\n", 2)[0], "id: ")
	r, _ := h.Subscribe([]string{"a", "b", "c"}, first, 1)
	var replayed []string
	for _, b := range r.Backlog {
		replayed = append(replayed, string(b))
	}
	if !slices.Equal(live[at+1:], replayed) {
		t.Fatalf("live order differs from replay order (%d live after %s, %d replayed)", len(live)-at-1, first, len(replayed))
	}
}

// BenchmarkDeliverAtReplayCap delivers round-robin to 20,000 lingering
// channels while the node's replay cap is full, so every event evicts.
func BenchmarkDeliverAtReplayCap(b *testing.B) {
	h := New(newListener(), Options{Replay: 100, Linger: time.Hour, MaxReplayBytes: 1 << 20})
	names := make([]string, 20000)
	for i := range names {
		names[i] = fmt.Sprintf("user.%d", i)
		s, _ := h.Subscribe([]string{names[i]}, "", 1)
		h.Unsubscribe(s)
	}
	payload := []byte(`{"event":"tick","data":"hello, this is about a hundred bytes of payload for one user's channel"}`)
	for i := 0; i < 40000; i++ {
		h.Deliver(names[i%len(names)], payload)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		h.Deliver(names[i%len(names)], payload)
	}
	b.StopTimer()
	h.Close()
}

// TestAbandonedChannelDoesNotLinger: a channel whose only subscription
// never streamed (a client gone before its headers, a refused request) is
// unlistened at once, while one that streamed lingers.
func TestAbandonedChannelDoesNotLinger(t *testing.T) {
	l := newListener()
	h := New(l, Options{Linger: time.Hour})
	a, _ := h.Subscribe([]string{"never"}, "", 4)
	h.Abandon(a)
	if l.count("never") != 0 || len(h.Channels()) != 0 {
		t.Fatalf("an abandoned channel lingers: listened %d, channels %v", l.count("never"), h.Channels())
	}
	b, _ := h.Subscribe([]string{"used"}, "", 4)
	h.Unsubscribe(b)
	c, _ := h.Subscribe([]string{"used"}, "", 4)
	h.Abandon(c)
	if l.count("used") != 1 {
		t.Fatal("a channel that had a stream did not linger")
	}
}

// TestChannelCap: past ChannelCap channels a subscription that would add
// one is refused; one to channels the hub has is not.
func TestChannelCap(t *testing.T) {
	h := New(newListener(), Options{ChannelCap: 2})
	if _, err := h.Subscribe([]string{"a", "b"}, "", 4); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Subscribe([]string{"a", "c"}, "", 4); !errors.Is(err, ErrChannelCap) {
		t.Fatalf("a third channel: %v, want ErrChannelCap", err)
	}
	if _, err := h.Subscribe([]string{"b", "a"}, "", 4); err != nil {
		t.Fatalf("known channels: %v", err)
	}
	if n := h.Unknown([]string{"a", "c", "d"}); n != 2 {
		t.Fatalf("Unknown = %d", n)
	}
}

// TestRelayIDsAreSealed: relay-assigned ids carry the sequence encrypted,
// so they tell nothing of how many events other channels carried; an id
// in the relay's format that the hub did not make (a publisher's forged
// "id", or a guess) opens to nothing, and a resume from it gets a reset
// instead of silently skipping ahead.
func TestRelayIDsAreSealed(t *testing.T) {
	h := New(newListener(), Options{Replay: 10})
	s, _ := h.Subscribe([]string{"a", "b"}, "", 16)
	for range 3 {
		h.Deliver("a", []byte("x"))
	}
	h.Deliver("b", []byte("y"))
	var ids []string
	for range 4 {
		f := next(s)
		id := strings.TrimPrefix(strings.SplitN(string(f.Bytes), "\n", 2)[0], "id: ")
		ids = append(ids, id)
	}
	node, sealed, _ := strings.Cut(ids[3], "-")
	if len(sealed) != 22 || strings.Contains(ids[3], "-4") {
		t.Fatalf("id %q shows its sequence", ids[3])
	}
	if r, _ := h.Subscribe([]string{"a", "b"}, ids[1], 16); len(r.Backlog) != 2 {
		t.Fatalf("a sealed id of this hub does not resume: backlog %q", r.Backlog)
	}
	forged := node + "-AAAAAAAAAAAAAAAAAAAAAA"
	h.Deliver("a", []byte(`{"id":"`+forged+`","data":"forged"}`))
	for _, id := range []string{forged, node + "-99", node + "-" + sealed[:10] + flip(sealed[10]) + sealed[11:]} {
		r, _ := h.Subscribe([]string{"a", "b"}, id, 16)
		if len(r.Backlog) != 1 || !strings.Contains(string(r.Backlog[0]), "unknown-id") {
			t.Fatalf("resume from %q: backlog %q, want an unknown-id reset", id, r.Backlog)
		}
	}
}

// flip is another base64url character than c.
func flip(c byte) string {
	if c == 'A' {
		return "B"
	}
	return "A"
}

// fixedLog is a log that holds entries of one channel, for the resume
// benchmark: a read from the start returns them, a later one nothing.
type fixedLog struct{ entries []broker.Entry }

func (f fixedLog) Read(_ context.Context, after map[string]broker.Position, _ int) ([]broker.Entry, []string, error) {
	for _, p := range after {
		if !p.IsZero() {
			return nil, nil, nil
		}
	}
	return f.entries, nil, nil
}
func (fixedLog) Head(context.Context, []string) (map[string]broker.Position, error) { return nil, nil }
func (fixedLog) GlobalOrder() bool                                                  { return true }
func (fixedLog) Depth(context.Context) (broker.LogDepth, error)                     { return broker.LogDepth{}, nil }
func (fixedLog) Check(context.Context) error                                        { return nil }

// entries1000 are 1,000 entries of channel c, as the load tool publishes
// them.
func entries1000() []broker.Entry {
	var es []broker.Entry
	for i := range 1000 {
		es = append(es, broker.Entry{Channel: "c", Pos: broker.Position{Lo: uint64(i + 1)},
			Payload: []byte(fmt.Sprintf(`{"data":"%d 1795649193133395982"}`, i))})
	}
	return es
}

// BenchmarkCatchUp1000: the hub's side of a resume 1,000 events behind
// from the log (decode, frame, order, dedupe), without the read itself.
func BenchmarkCatchUp1000(b *testing.B) {
	h := New(newListener(), Options{Replay: 1000, Log: fixedLog{entries1000()}})
	for b.Loop() {
		s, _ := h.Subscribe([]string{"c"}, "0-0", 16)
		if err := s.CatchUp(context.Background()); err != nil || len(s.Backlog) != 1000 {
			b.Fatal(err, len(s.Backlog))
		}
		h.Unsubscribe(s)
	}
}

// TestDeliverBatch: payloads read together keep their order; a run of one
// channel's reaches a subscriber in one offer (one wake, one Take), and a
// payload that does not decode is refused without holding up the rest.
func TestDeliverBatch(t *testing.T) {
	h := New(newListener(), Options{Replay: 10})
	defer h.Close()
	a, _ := h.Subscribe([]string{"a"}, "", 16)
	both, _ := h.Subscribe([]string{"a", "b"}, "", 16)
	h.DeliverBatch([]Message{
		{"a", []byte("a1")}, {"a", []byte(`{"event":{},"data":"x"}`)}, {"a", []byte("a2")},
		{"b", []byte("b1")}, {"a", []byte("a3")},
	})
	data := func(fs []*Frame) string {
		var out []string
		for _, f := range fs {
			for _, l := range strings.Split(string(f.Bytes), "\n") {
				if d, ok := strings.CutPrefix(l, "data: "); ok {
					out = append(out, d)
				}
			}
		}
		return strings.Join(out, " ")
	}
	<-a.Wake()
	if got := data(a.Take(nil)); got != "a1 a2 a3" {
		t.Fatalf("a: %q", got)
	}
	<-both.Wake()
	if got := data(both.Take(nil)); got != "a1 a2 b1 a3" {
		t.Fatalf("a and b: %q", got)
	}
	if h.refused.Load() != 1 {
		t.Fatalf("refused %d, want 1", h.refused.Load())
	}
}

// BenchmarkCatchUp1000FromTheRing: a resume 1,000 events behind that the
// ring serves, as every resume after the first does once one read the
// log (order, dedupe and the backlog, no read, no decode).
func BenchmarkCatchUp1000FromTheRing(b *testing.B) {
	h := New(newListener(), Options{Replay: 1000, Log: fixedLog{entries1000()}})
	first, _ := h.Subscribe([]string{"c"}, "0-0", 16)
	if err := first.CatchUp(context.Background()); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		s, _ := h.Subscribe([]string{"c"}, "0-0", 16)
		if err := s.CatchUp(context.Background()); err != nil || len(s.Backlog) != 1000 {
			b.Fatal(err, len(s.Backlog))
		}
		h.Unsubscribe(s)
	}
	if st := h.Stats(); st.Backfills != 1 {
		b.Fatalf("%d resumes read the log, want 1", st.Backfills)
	}
}

// TestBurstQueueNotKept: a subscription keeps room for at most KeptFrames
// frames once a burst is taken.
func TestBurstQueueNotKept(t *testing.T) {
	h := New(newListener(), Options{Replay: 10})
	defer h.Close()
	sub, _ := h.Subscribe([]string{"a"}, "", 100)
	for i := range 40 {
		h.Deliver("a", fmt.Appendf(nil, "%d", i))
	}
	<-sub.Wake()
	if got := len(sub.Take(nil)); got != 40 {
		t.Fatalf("took %d, want 40", got)
	}
	if c := cap(sub.queue); c > KeptFrames {
		t.Fatalf("the queue keeps room for %d frames", c)
	}
}
