package sserelay

import (
	"net/http"
	"net/http/httptest"
	"runtime/pprof"
	"strconv"
	"strings"
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

// TestTakeOverBehindLogAndEncode: with an access log and `encode` around
// the handler, as production sites have, HTTP/1.1 streams are still taken
// over from the raw connection: no stream gets a reading goroutine (the
// epoll watcher sees the socket), the access log records the 200, nothing
// races on the log's byte count (-race), and encode leaves the stream
// uncompressed (Cache-Control: no-transform).
func TestTakeOverBehindLogAndEncode(t *testing.T) {
	load(t, `http://localhost:9080 {
	log {
		output discard
	}
	encode zstd gzip
	sse_relay /events/* {
		publish_key k
	}
}
`)
	var streams []*sseClient
	for i := 0; i < 50; i++ {
		streams = append(streams, subscribe(t, "/events/wrapped", "Accept-Encoding", "gzip, zstd"))
	}
	for _, c := range streams {
		if enc := c.resp.Header.Get("Content-Encoding"); enc != "" {
			t.Fatalf("the stream is encoded: %s", enc)
		}
	}
	for i := 0; i < 20; i++ {
		do(t, "POST", "/events/wrapped", "event "+strconv.Itoa(i), "Authorization", "Bearer k")
	}
	for _, c := range streams {
		for i := 0; i < 20; i++ {
			if ev := c.next(t); ev.Data != "event "+strconv.Itoa(i) {
				t.Fatalf("got %+v, want event %d", ev, i)
			}
		}
	}
	var prof strings.Builder
	_ = pprof.Lookup("goroutine").WriteTo(&prof, 1)
	if strings.Contains(prof.String(), "readUntilClosed") {
		t.Fatal("streams have reading goroutines: the hang-up watcher did not get their sockets")
	}
}
