package hub

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/sse-relay/caddy-sse-relay/broker"
)

// memLog is a log with one order for all channels, as on Postgres: its
// entries in position order, of which the first safe are readable (the
// others wait for an older transaction to end). It counts its reads.
type memLog struct {
	mu      sync.Mutex
	entries []broker.Entry
	safe    int
	reads   int
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
	defer l.mu.Unlock()
	l.reads++
	var out []broker.Entry
	for _, e := range l.entries[:l.safe] {
		if p, ok := after[e.Channel]; ok && p.Less(e.Pos) && len(out) < limit {
			out = append(out, e)
		}
	}
	return out, nil, nil
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

// TestMultiChannelResumeOneSnapshot: on a log with one order, a stream of
// several channels has one position, so what it resumes must be one
// snapshot of all its channels: the log's entries of all of them up to
// some position, and everything after live. One channel's ring holds
// what the broker's reader handed over (a1); the other channel's entries
// come from a read that went further (b1, b2) than the reader, whose a2
// is still to come. Served that way, the stream's position would pass a2
// before a2 arrived live, and a2 would be dropped as already had.
func TestMultiChannelResumeOneSnapshot(t *testing.T) {
	l := &memLog{}
	h := New(newListener(), Options{Replay: 100, Log: l})
	open, _ := h.Subscribe([]string{"a"}, "", 16)
	a1 := l.add("a", broker.Position{Hi: 1, Lo: 1}, "a1")
	l.add("b", broker.Position{Hi: 1, Lo: 2}, "b1")
	a2 := l.add("a", broker.Position{Hi: 1, Lo: 3}, "a2")
	l.add("b", broker.Position{Hi: 1, Lo: 4}, "b2")
	l.release()
	h.DeliverEntry(a1) // the reader is at 1-1
	s := resume(t, h, "1-1", "a", "b")
	h.DeliverEntry(a2) // the reader goes on
	if got := written(s); !slices.Equal(got, []string{"b1", "a2", "b2"}) {
		t.Fatalf("resumed a and b from 1-1: %q, want b1 a2 b2", got)
	}
	h.Unsubscribe(open)
}
