package stream

import (
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/sse-relay/caddy-sse-relay/hub"
)

// gate is a wire whose writes wait until it opens.
type gate chan struct{}

func (g gate) write([]byte) error { <-g; return nil }

func idleDrainers() int {
	drainers.mu.Lock()
	defer drainers.mu.Unlock()
	return len(drainers.idle)
}

// TestDrainersExitWhenIdle: streams whose writes block at once each get a
// drainer; once written, the drainers wait for more, and exit after
// drainerLinger with nothing to do.
func TestDrainersExitWhenIdle(t *testing.T) {
	h := hub.New(listener{}, hub.Options{})
	defer h.Close()
	cfg := &Config{Logger: zap.NewNop(), Observer: new(counts), Heartbeat: time.Hour,
		EndDelay: func() time.Duration { return 0 }}
	// Those an earlier test left idle would take these streams.
	waitFor(t, "earlier drainers to exit", func() bool { return drainers.live.Load() == 0 })
	const n = 50
	wire, ended := make(gate), make(chan struct{}, n)
	for range n {
		sub, err := h.Subscribe([]string{"a"}, "", 8)
		if err != nil {
			t.Fatal(err)
		}
		s := &writer{cfg: cfg, wire: wire, Stream: Stream{Sub: sub, Done: func() { h.Unsubscribe(sub) }}}
		s.start()
		s.begin(func(bool) { ended <- struct{}{} })
	}
	if live := drainers.live.Load(); live != n {
		t.Fatalf("%d drainers for %d streams waiting at their first write, want one each", live, n)
	}
	close(wire)
	waitFor(t, "the drainers to go idle", func() bool { return idleDrainers() == n })
	waitFor(t, "the idle drainers to exit", func() bool { return drainers.live.Load() == 0 })
	if idle := idleDrainers(); idle != 0 {
		t.Fatalf("%d drainers listed idle after every drainer exited", idle)
	}
	h.Close()
	for range n {
		select {
		case <-ended:
		case <-time.After(5 * time.Second):
			t.Fatal("a stream did not end when its hub closed")
		}
	}
}

// waitFor polls cond for 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("waited 5 s for %s", what)
		}
	}
}
