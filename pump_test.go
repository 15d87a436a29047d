package sserelay

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/sse-relay/caddy-sse-relay/broker"
	"github.com/sse-relay/caddy-sse-relay/hub"
)

// TestPumpKeepsOrder: payloads, a reset and more payloads handed over
// from the broker's side reach a subscriber in the order they came, each
// once, and the pump counts the events.
func TestPumpKeepsOrder(t *testing.T) {
	b, err := broker.Open("memory://", zap.NewNop(), broker.History{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	h := hub.New(b, hub.Options{Replay: 10})
	defer h.Close()
	var received atomic.Uint64
	p := newPump(h, &received)
	defer p.stop()
	sub, err := h.Subscribe([]string{"a"}, "", 64)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"one", "two"} {
		p.Deliver("a", []byte(d))
	}
	p.Reset([]string{"a"}, "broker-reconnect")
	p.Deliver("a", []byte("three"))
	var got []string
	deadline := time.After(5 * time.Second)
	for len(got) < 4 {
		select {
		case <-sub.Wake():
		case <-deadline:
			t.Fatalf("got %q", got)
		}
		for _, f := range sub.Take(nil) {
			got = append(got, frameName(string(f.Bytes)))
		}
	}
	if strings.Join(got, " ") != "one two reset three" {
		t.Fatalf("got %q", got)
	}
	if received.Load() != 3 {
		t.Fatalf("counted %d events, want 3", received.Load())
	}
}

// frameName is "reset" for a reset frame, else the frame's data.
func frameName(frame string) string {
	if strings.Contains(frame, "event: sse-relay-reset\n") {
		return "reset"
	}
	for _, l := range strings.Split(frame, "\n") {
		if v, ok := strings.CutPrefix(l, "data: "); ok {
			return v
		}
	}
	return frame
}
