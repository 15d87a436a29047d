package stream

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestIdleStreamOutlivesWriteTimeout: a stream that is silent for longer
// than the write timeout stays open and gets the next event. On HTTP/2 a
// write deadline left armed after a write resets the stream when it fires.
func TestIdleStreamOutlivesWriteTimeout(t *testing.T) {
	protocols(t, func(t *testing.T, http2 bool) {
		s := newServer(t, Config{WriteTimeout: 100 * time.Millisecond}, http2, time.Time{})
		_, rd := s.open(t, http.MethodGet)
		lines(t, rd, 2)
		time.Sleep(6 * watchdogTick)
		s.hub.Deliver("a", []byte("after the silence"))
		if got := strings.Join(lines(t, rd, 3), "|"); !strings.Contains(got, "data: after the silence") {
			t.Fatalf("%q", got)
		}
		if n := s.obs.failed.Load(); n != 0 {
			t.Fatalf("%d writes failed", n)
		}
	})
}

// TestStalledHTTP2StreamCutOff: an HTTP/2 client that stops reading
// blocks the stream's write once the flow-control window is full; the
// watchdog ends that write after the write timeout, and the stream ends.
func TestStalledHTTP2StreamCutOff(t *testing.T) {
	s := newServer(t, Config{WriteTimeout: 200 * time.Millisecond}, true, time.Time{})
	_, rd := s.open(t, http.MethodGet)
	lines(t, rd, 2)
	// The client reads no further. Its window (4 MiB a stream for Go's
	// client) fills, then the relay's write blocks. Fewer frames than the
	// subscription's queue holds, so that the hub does not drop it first.
	big := []byte(strings.Repeat("x", 1<<20))
	start := time.Now()
	for range 6 {
		s.hub.Deliver("a", big)
	}
	s.waitDone(t, "stalled client")
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("the stalled stream ended after %v", took)
	}
	if s.obs.failed.Load() != 1 {
		t.Fatalf("%d failed writes, want 1", s.obs.failed.Load())
	}
}
