package e2e

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go/http3"

	"github.com/sse-relay/caddy-sse-relay/internal/sseclient"
	"github.com/sse-relay/caddy-sse-relay/internal/testsrv"
)

// tlsPublishKey is tlsSite's publish_key: the relay refuses one under 32
// bytes.
const tlsPublishKey = "test-publish-key-0123456789abcdef"

// tlsSite is an sse_relay route whose streams a reload ends quickly,
// behind an access log and compression, which wrap the response.
func tlsSite(heartbeat string) string {
	return fmt.Sprintf(`	log {
		output discard
	}
	encode zstd gzip
	sse_relay /events/* {
		publish_key %s
		heartbeat %s
		reload_close_window 200ms
	}`, tlsPublishKey, heartbeat)
}

// TestTLSStreams: over HTTPS, as browsers use it, HTTP/3 and HTTP/2
// (written to the server's own response writer, under the log's and
// encode's wrappers) and HTTP/1.1 (taken over as a TLS connection), not
// compressed (no-transform), deliver events, end at a reload, and free their slot when the client
// leaves.
func TestTLSStreams(t *testing.T) {
	n := startNodeOf(t, tlsSite("15s"), true)
	// One config each: a transport adds its ALPN protocols to the one it gets.
	insecure := func() *tls.Config { return &tls.Config{InsecureSkipVerify: true} }
	for _, c := range []struct {
		name  string
		major int
		tr    interface {
			http.RoundTripper
			CloseIdleConnections()
		}
	}{
		{"HTTP/3", 3, &http3.Transport{TLSClientConfig: insecure()}},
		{"HTTP/2", 2, &http.Transport{TLSClientConfig: insecure(), ForceAttemptHTTP2: true}},
		// A non-nil, empty TLSNextProto turns HTTP/2 off.
		{"HTTP/1.1", 1, &http.Transport{TLSClientConfig: insecure(),
			TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			client := &http.Client{Transport: c.tr}
			defer c.tr.CloseIdleConnections()
			// Asked for explicitly, so that the client would not decode it.
			s, err := sseclient.Open(client, n.base+"/events/tls", http.Header{"Accept-Encoding": {"gzip, zstd"}})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if resp := s.Response; resp.StatusCode != 200 || resp.ProtoMajor != c.major || resp.Header.Get("Content-Type") != "text/event-stream" {
				t.Fatalf("%s %d %v", resp.Proto, resp.StatusCode, resp.Header)
			}
			if enc := s.Response.Header.Get("Content-Encoding"); enc != "" {
				t.Fatalf("the stream is encoded: %s", enc)
			}

			publish(t, client, n.base+"/events/tls", "over "+c.name)
			if ev, err := s.Next(10 * time.Second); err != nil || ev.Data != "over "+c.name {
				t.Fatalf("got %q, %v", ev.Data, err)
			}

			// A reload ends the stream within the close window.
			start := time.Now()
			n.reload(t, tlsSite(fmt.Sprintf("%ds", 16+c.major)))
			if _, err := s.Next(10 * time.Second); err != io.EOF && err != io.ErrUnexpectedEOF {
				t.Fatalf("after a reload: %v, want the stream to end", err)
			}
			t.Logf("%s: stream ended %v after the reload began", c.name, time.Since(start).Round(time.Millisecond))

			// A client that leaves frees its stream.
			again, err := sseclient.Open(client, n.base+"/events/tls", nil)
			if err != nil {
				t.Fatal(err)
			}
			waitStreams(t, n, 1)
			again.Close()
			waitStreams(t, n, 0)
		})
	}
}

func publish(t *testing.T, client *http.Client, url, body string) {
	t.Helper()
	req, _ := http.NewRequest("POST", url, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+tlsPublishKey)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("publish: %d", resp.StatusCode)
	}
}

// waitStreams waits until the node's stats count want open streams.
func waitStreams(t *testing.T, n *node, want int) {
	t.Helper()
	if err := testsrv.WaitStreams(n.admin, want); err != nil {
		t.Fatal(err)
	}
}
