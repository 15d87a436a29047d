package sserelay

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"go.uber.org/zap"

	"github.com/sse-relay/caddy-sse-relay/broker"
	"github.com/sse-relay/caddy-sse-relay/hub"
)

// TestStreamOnClosedRelayIs503: a request that races the last Cleanup of
// its relay (the hub is closed) is told to come back, and gives its
// connection slot back. No Caddy config can hold the race open, so the
// handler is driven directly.
func TestStreamOnClosedRelayIs503(t *testing.T) {
	b, err := broker.Open("memory://", nil)
	if err != nil {
		t.Fatal(err)
	}
	hb := hub.New(b, hub.Options{})
	b.Start(hb)
	hb.Close()
	h := &Handler{MaxChannels: 4, Buffer: 4, MaxConnections: 1, MaxConnectionsPerIP: 1, logger: zap.NewNop(),
		relay: &relay{broker: b, hub: hb, perIP: map[string]int{}}}
	for range 2 { // the second one proves the slot was released
		w := httptest.NewRecorder()
		if err := h.serveStream(w, httptest.NewRequest(http.MethodGet, "/events/a", nil)); err != nil {
			t.Fatal(err)
		}
		if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" {
			t.Fatalf("stream on a closed relay: %d %v, want 503 with Retry-After", w.Code, w.Header())
		}
	}
}
