package stream

import (
	"fmt"
	"testing"

	"github.com/sse-relay/caddy-sse-relay/hub"
)

// discard is a wire that takes every write.
type discard struct{ writes int }

func (d *discard) write([]byte) error { d.writes++; return nil }

// BenchmarkWriteOpening1000: the opening write of a resume 1,000 events
// behind (the frames of the benchmark's resume, about 60 KiB).
func BenchmarkWriteOpening1000(b *testing.B) {
	backlog := make([][]byte, 1000)
	for i := range backlog {
		backlog[i] = fmt.Appendf(nil, "id: 744-%d\ndata: %d 1795649193133395982\n\n", i+1, i)
	}
	for b.Loop() {
		s := &writer{cfg: &Config{}, wire: &discard{}, buf: []byte(": ok\n\n")}
		s.backlog = append([][]byte(nil), backlog...)
		if err := s.writeOpening(); err != nil {
			b.Fatal(err)
		}
	}
}

// TestBurstLeavesNothingHeld: once a burst is written, the stream holds
// no write buffer and no room for the burst's frames, whose cost 50,000
// idle streams would otherwise keep.
func TestBurstLeavesNothingHeld(t *testing.T) {
	h := hub.New(listener{}, hub.Options{Replay: 10})
	defer h.Close()
	sub, err := h.Subscribe([]string{"a"}, "", 100)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 40 {
		h.Deliver("a", fmt.Appendf(nil, "event %d of a burst", i))
	}
	wire := &discard{}
	s := &writer{cfg: &Config{}, wire: wire, Stream: Stream{Sub: sub}}
	<-sub.Wake()
	if n, _ := s.take(); n != 40 {
		t.Fatalf("took %d frames, want 40", n)
	}
	if err := s.flush(); err != nil || wire.writes != 1 {
		t.Fatalf("flush: %v, %d writes", err, wire.writes)
	}
	if s.buf != nil || s.box != nil {
		t.Fatalf("the stream holds a %d-byte buffer after the write", cap(s.buf))
	}
	if cap(s.frames) > hub.KeptFrames {
		t.Fatalf("the stream keeps room for %d frames after the burst", cap(s.frames))
	}
}
