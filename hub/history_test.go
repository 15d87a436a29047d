package hub

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sse-relay/caddy-sse-relay/broker"
)

// memLog is a log with one order for all channels, as on Postgres: its
// entries in position order, of which the first safe are readable (the
// others wait for an older transaction to end). It counts its reads.
type memLog struct {
	mu      sync.Mutex
	entries []broker.Entry
	safe    int
	trimmed []string // what every read reports as trimmed past its position
	reads   int
	// during, when set, runs in each read after it took its entries, as
	// the broker's reader would go on meanwhile.
	during func()
}

// add logs an entry at pos, not readable until release.
func (l *memLog) add(channel string, pos broker.Position, data string) broker.Entry {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := broker.Entry{Channel: channel, Pos: pos, Payload: fmt.Appendf(nil, `{"data":%q}`, data)}
	i, _ := slices.BinarySearchFunc(l.entries, pos, func(e broker.Entry, p broker.Position) int {
		if e.Pos.Less(p) {
			return -1
		}
		return 1
	})
	l.entries = slices.Insert(l.entries, i, e)
	return e
}

// release makes every entry readable: the transactions holding them
// back ended.
func (l *memLog) release() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.safe = len(l.entries)
}

// appendEntries logs n entries of channel, readable at once, with data
// their position's Lo.
func (l *memLog) appendEntries(channel string, n int) []broker.Entry {
	var out []broker.Entry
	for range n {
		lo := uint64(len(l.entries) + 1)
		out = append(out, l.add(channel, broker.Position{Hi: 1, Lo: lo}, fmt.Sprint(lo)))
	}
	l.release()
	return out
}

func (l *memLog) Read(_ context.Context, after map[string]broker.Position, limit int) ([]broker.Entry, []string, error) {
	l.mu.Lock()
	l.reads++
	var out []broker.Entry
	for _, e := range l.entries[:l.safe] {
		if p, ok := after[e.Channel]; ok && p.Less(e.Pos) && len(out) < limit {
			out = append(out, e)
		}
	}
	var trimmed []string
	for _, ch := range l.trimmed {
		if _, ok := after[ch]; ok {
			trimmed = append(trimmed, ch)
		}
	}
	during := l.during
	l.mu.Unlock()
	if during != nil {
		during()
	}
	return out, trimmed, nil
}

func (l *memLog) readCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.reads
}

func (*memLog) Head(context.Context, []string) (map[string]broker.Position, error) { return nil, nil }
func (*memLog) GlobalOrder() bool                                                  { return true }
func (*memLog) Depth(context.Context) (broker.LogDepth, error)                     { return broker.LogDepth{}, nil }
func (*memLog) Check(context.Context) error                                        { return nil }

// resume subscribes to channels from cursor and catches up.
func resume(t *testing.T, h *Hub, cursor string, channels ...string) *Subscription {
	t.Helper()
	s, err := h.Subscribe(channels, cursor, 64)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CatchUp(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}

// written is the data of every event s would write now, as its stream
// does: its backlog, then what is queued, each entry of the log once.
func written(s *Subscription) []string {
	var buf []byte
	for _, b := range s.Backlog {
		buf = append(buf, b...)
	}
	s.Backlog = nil
	for _, f := range s.Take(nil) {
		buf = s.Append(buf, f)
	}
	var out []string
	for _, frame := range strings.Split(string(buf), "\n\n") {
		for _, line := range strings.Split(frame, "\n") {
			if data, ok := strings.CutPrefix(line, "data: "); ok {
				out = append(out, data)
			}
		}
	}
	return out
}

// TestResumeReadsTheLogOnce: a resume 1,000 events behind (the default
// replay) gets them all from one read of the log, not from a second read
// that finds nothing.
func TestResumeReadsTheLogOnce(t *testing.T) {
	l := &memLog{}
	l.appendEntries("c", 1000)
	h := New(newListener(), Options{Replay: 1000, Log: l})
	s := resume(t, h, "0-0", "c")
	if len(s.Backlog) != 1000 || l.readCount() != 1 {
		t.Fatalf("%d events from %d reads, want 1000 from 1", len(s.Backlog), l.readCount())
	}
}

// TestResumeFillsTheRing: what a resume read from the log stays in the
// node's ring, so the next resume from as far back (or from anywhere
// after) gets the same events from memory, the same bytes, without
// reading the log again.
func TestResumeFillsTheRing(t *testing.T) {
	l := &memLog{}
	l.appendEntries("c", 1000)
	h := New(newListener(), Options{Replay: 1000, Log: l})
	first := resume(t, h, "0-0", "c")
	for _, cursor := range []string{"0-0", "1-500"} {
		s := resume(t, h, cursor, "c")
		want := first.Backlog
		if cursor == "1-500" {
			want = want[500:]
		}
		if l.readCount() != 1 || len(s.Backlog) != len(want) || &s.Backlog[0][0] != &want[0][0] {
			t.Fatalf("resume from %s: %d events, %d reads; want the first resume's %d from 1 read",
				cursor, len(s.Backlog), l.readCount(), len(want))
		}
	}
}

// TestFilledRingCommitOrder: two transactions log an event each and
// commit in the reverse order of their positions. A resume between the
// two commits reads nothing (the later position waits for the earlier
// transaction) and fills the ring with that; a resume then, from the ring,
// gets nothing yet; once both are delivered, each stream has both, once,
// in order, and a resume from the ring afterwards gets both too. None of
// the later resumes reads the log.
func TestFilledRingCommitOrder(t *testing.T) {
	l := &memLog{}
	l.add("c", broker.Position{Hi: 5, Lo: 1}, "before")
	l.release()
	h := New(newListener(), Options{Replay: 100, Log: l})
	a := l.add("c", broker.Position{Hi: 10, Lo: 3}, "a") // the transaction that commits last
	b := l.add("c", broker.Position{Hi: 11, Lo: 2}, "b")

	early := resume(t, h, "5-1", "c")
	fromRing := resume(t, h, "5-1", "c")
	if got := append(written(early), written(fromRing)...); len(got) != 0 || l.readCount() != 1 {
		t.Fatalf("before the commit: %q from %d reads, want nothing from 1", got, l.readCount())
	}
	l.release() // a commits: the reader hands both over, in order
	h.DeliverEntry(a)
	h.DeliverEntry(b)
	late := resume(t, h, "5-1", "c")
	for name, s := range map[string]*Subscription{"early": early, "from the ring": fromRing, "late": late} {
		if got := written(s); !slices.Equal(got, []string{"a", "b"}) {
			t.Errorf("%s: %q, want a then b", name, got)
		}
	}
	if l.readCount() != 1 {
		t.Fatalf("%d reads of the log, want 1", l.readCount())
	}
}

// TestFilledRingAheadOfTheReader: a resume can read entries the broker's
// reader has not handed over yet; when it does, the ring keeps each once,
// and a resume from the ring gets each once.
func TestFilledRingAheadOfTheReader(t *testing.T) {
	l := &memLog{}
	es := l.appendEntries("c", 5)
	h := New(newListener(), Options{Replay: 100, Log: l})
	s := resume(t, h, "0-0", "c")
	es = append(es, l.appendEntries("c", 1)...)
	for _, e := range es[2:] { // the reader was at 1-2
		h.DeliverEntry(e)
	}
	want := []string{"1", "2", "3", "4", "5", "6"}
	if got := written(s); !slices.Equal(got, want) {
		t.Fatalf("the stream that read: %q", got)
	}
	if held := h.ChannelStats()[0].Replay; held != 6 {
		t.Fatalf("the ring holds %d entries, want 6", held)
	}
	if got := written(resume(t, h, "0-0", "c")); !slices.Equal(got, want) || l.readCount() != 1 {
		t.Fatalf("from the ring: %q after %d reads, want %q after 1", got, l.readCount(), want)
	}
}

// TestRingNotFilledAfterALoss: the ring is not filled when it cannot hold
// everything after the cursor: it evicted an entry it got after the
// resume subscribed, a reset came since, the log was trimmed past the
// cursor, or the broker was not yet listening when the log was read. A
// later resume then reads the log again, and gets every entry.
func TestRingNotFilledAfterALoss(t *testing.T) {
	for _, loss := range []string{"evicted", "reset", "trimmed", "not listening"} {
		t.Run(loss, func(t *testing.T) {
			l := &memLog{}
			l.appendEntries("c", 2)
			var lis Listener = newListener()
			if loss == "not listening" {
				lis = unconfirmed{newListener()}
			}
			h := New(lis, Options{Replay: 3, Log: l})
			switch loss {
			case "evicted":
				// Four entries arrive while the read is out: the ring
				// keeps three, so 1-3 is in neither the read nor the ring.
				l.during = func() {
					l.during = nil
					for _, e := range l.appendEntries("c", 4) {
						h.DeliverEntry(e)
					}
				}
			case "reset":
				l.during = func() {
					l.during = nil
					h.Reset([]string{"c"}, "expired")
				}
			case "trimmed":
				l.trimmed = []string{"c"}
			}
			resume(t, h, "0-0", "c")
			l.trimmed = nil
			got := written(resume(t, h, "1-2", "c"))
			if l.readCount() != 2 {
				t.Fatalf("the second resume read the log %d times in all, want 2 (it got %q)", l.readCount(), got)
			}
			if loss == "evicted" && !slices.Equal(got, []string{"3", "4", "5", "6"}) {
				t.Fatalf("after 1-2: %q", got)
			}
		})
	}
}

// unconfirmed is a listener whose broker never confirms listening.
type unconfirmed struct{ *listener }

func (u unconfirmed) Listen(ch string) <-chan struct{} {
	u.listener.Listen(ch)
	return make(chan struct{})
}

// TestMultiChannelResumeOneSnapshot: on a log with one order, a stream of
// several channels has one position, so what it resumes must be one
// snapshot of all its channels: the log's entries of all of them up to
// some position, and everything after live. One channel's ring holds
// what the broker's reader handed over (a1); the other channel's entries
// come from a read, or from a ring a resume filled from one, that went
// further (b1, b2) than the reader, whose a2 is still to come. Served
// that way, the stream's position would pass a2 before a2 arrived live,
// and a2 would be dropped as already had.
func TestMultiChannelResumeOneSnapshot(t *testing.T) {
	for _, bFrom := range []string{"a read", "a filled ring"} {
		t.Run(bFrom, func(t *testing.T) {
			l := &memLog{}
			h := New(newListener(), Options{Replay: 100, Log: l})
			open, _ := h.Subscribe([]string{"a"}, "", 16)
			a1 := l.add("a", broker.Position{Hi: 1, Lo: 1}, "a1")
			l.add("b", broker.Position{Hi: 1, Lo: 2}, "b1")
			a2 := l.add("a", broker.Position{Hi: 1, Lo: 3}, "a2")
			l.add("b", broker.Position{Hi: 1, Lo: 4}, "b2")
			l.release()
			h.DeliverEntry(a1) // the reader is at 1-1
			if bFrom == "a filled ring" {
				resume(t, h, "0-0", "b")
			}
			s := resume(t, h, "1-1", "a", "b")
			h.DeliverEntry(a2) // the reader goes on
			if got := written(s); !slices.Equal(got, []string{"b1", "a2", "b2"}) {
				t.Fatalf("resumed a and b from 1-1: %q, want b1 a2 b2", got)
			}
			h.Unsubscribe(open)
		})
	}
}

// TestConcurrentResumesShareARead: resumes of the same channel from the
// same cursor that come while a read of the log is out take that read
// instead of their own, each getting everything once; a stream that
// subscribed after the read started does not (the reader may have handed
// over, before it subscribed, an entry the read did not see), and reads
// for itself.
func TestConcurrentResumesShareARead(t *testing.T) {
	l := &memLog{}
	l.appendEntries("c", 999)
	gate := make(chan struct{})
	l.during = func() { <-gate }
	h := New(newListener(), Options{Log: l}) // no ring to fill: every resume reads or shares
	var subs []*Subscription
	for range 3 {
		s, _ := h.Subscribe([]string{"c"}, "0-0", 16)
		subs = append(subs, s)
	}
	var wg sync.WaitGroup
	catchUp := func(s *Subscription) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.CatchUp(context.Background()); err != nil {
				t.Error(err)
			}
		}()
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
		}
	}
	joiners := func() int {
		h.mu.Lock()
		defer h.mu.Unlock()
		n := 0
		for _, f := range h.flights {
			n += f.joiners
		}
		return n
	}
	catchUp(subs[0])
	waitFor("the first read", func() bool { return l.readCount() == 1 })
	catchUp(subs[1])
	catchUp(subs[2])
	waitFor("two resumes to join it", func() bool { return joiners() == 2 })

	// The reader hands over an entry the read did not see, then a
	// fourth stream subscribes.
	h.DeliverEntry(l.appendEntries("c", 1)[0])
	late, _ := h.Subscribe([]string{"c"}, "0-0", 16)
	catchUp(late)
	waitFor("the late stream's own read", func() bool { return l.readCount() == 2 })
	close(gate)
	wg.Wait()
	for i, s := range append(subs, late) {
		if got := written(s); len(got) != 1000 || got[0] != "1" || got[999] != "1000" {
			t.Errorf("stream %d got %d events (%q … %q), want 1 to 1000", i, len(got), got[0], got[len(got)-1])
		}
	}
	if l.readCount() != 2 {
		t.Fatalf("%d reads, want 2", l.readCount())
	}
}

// TestResetEmptiesTheRing: with history, a reset says entries were lost
// (the log was trimmed past what the broker's reader had, while it was
// away), and the ring never got them: a resume from before the reset is
// not served from the ring, which would skip the loss silently, but reads
// the log, which tells.
func TestResetEmptiesTheRing(t *testing.T) {
	l := &memLog{}
	h := New(newListener(), Options{Replay: 100, Log: l})
	open, _ := h.Subscribe([]string{"c"}, "", 16)
	for _, e := range l.appendEntries("c", 3) {
		h.DeliverEntry(e)
	}
	h.Reset([]string{"c"}, "expired")
	for _, e := range l.appendEntries("c", 2) {
		h.DeliverEntry(e)
	}
	resume(t, h, "1-2", "c")
	if l.readCount() != 1 {
		t.Fatal("a resume from before the reset was served from the ring")
	}
	h.Unsubscribe(open)
}
