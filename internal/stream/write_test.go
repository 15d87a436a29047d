package stream

import (
	"fmt"
	"testing"
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
