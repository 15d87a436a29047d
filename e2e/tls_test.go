package e2e

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
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
// compressed (no-transform), deliver events, end at a reload, and free
// their slot when the client leaves; HTTP/2 whether Caddy serves it or
// the relay's listener wrapper does.
func TestTLSStreams(t *testing.T) {
	for _, front := range []struct{ name, global string }{
		{"caddy serves HTTP2", ""},
		{"the relay serves HTTP2", relayHTTP2},
	} {
		t.Run(front.name, func(t *testing.T) {
			testTLSStreams(t, startNodeWith(t, front.global, tlsSite("15s"), true), front.global != "")
		})
	}
}

// relayHTTP2 is the global option that has the relay serve HTTP/2.
const relayHTTP2 = testsrv.RelayHTTP2

func testTLSStreams(t *testing.T, n *node, relayServesHTTP2 bool) {
	// Clear text to the TLS port gets a 400, as from net/http.
	c, err := net.Dial("tcp", strings.TrimPrefix(n.base, "https://"))
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	_, _ = io.WriteString(c, "GET /events/tls HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
	answer, _ := io.ReadAll(c)
	c.Close()
	if !strings.HasPrefix(string(answer), "HTTP/1.0 400 Bad Request\r\n") {
		t.Fatalf("clear text to the TLS port: %q", answer)
	}
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
			if got, want := relayHTTP2Conns(t, n), b2i(relayServesHTTP2); c.major == 2 && got != want {
				t.Fatalf("the relay serves %d HTTP/2 connections, want %d", got, want)
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

// TestRelayHTTP2Stop: when the relay serves HTTP/2 and Caddy stops, a
// connection with only event streams is closed at once, and one with a
// proxied request in flight is not: the request finishes, its stream ends,
// and then the process exits.
func TestRelayHTTP2Stop(t *testing.T) {
	arrived := make(chan struct{}, 1)
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		time.Sleep(time.Second)
		_, _ = io.WriteString(w, "done")
	}))
	defer backend.Close()
	n := startNodeWith(t, relayHTTP2, fmt.Sprintf(`reverse_proxy /slow %s
	sse_relay /events/* {
		heartbeat 0
		max_connections_per_ip 1000
	}`, backend.Listener.Addr()), true)
	newClient := func() *http.Client {
		return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: true}}
	}

	// 300 streams, on two connections (250 streams a connection), alone.
	alone := newClient()
	streams := make([]*sseclient.Stream, 300)
	for i := range streams {
		s, err := sseclient.Open(alone, n.base+"/events/alone", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		streams[i] = s
	}
	// A stream and a slow request on one connection.
	shared := newClient()
	s, err := sseclient.Open(shared, n.base+"/events/shared", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Response.ProtoMajor != 2 {
		t.Fatalf("%s, want HTTP/2", s.Response.Proto)
	}
	if got := relayHTTP2Conns(t, n); got != 3 {
		t.Fatalf("the relay serves %d HTTP/2 connections, want 3", got)
	}
	slow := make(chan string, 1)
	go func() {
		resp, err := shared.Get(n.base + "/slow")
		if err != nil {
			slow <- err.Error()
			return
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		slow <- fmt.Sprintf("%d %s %v", resp.StatusCode, body, err)
	}()
	<-arrived

	start := time.Now()
	go func() {
		if resp, err := (&http.Client{Timeout: 10 * time.Second}).Post(n.admin+"/stop", "", nil); err == nil {
			resp.Body.Close()
		}
	}()
	for i, s := range streams {
		if _, err := s.Next(2 * time.Second); err == nil || errors.Is(err, sseclient.ErrTimeout) {
			t.Fatalf("stream %d alone on its connection is still open: %v", i, err)
		}
	}
	aloneEnded := time.Since(start)
	if got := <-slow; got != "200 done <nil>" {
		t.Fatalf("the request in flight at the stop: %s", got)
	}
	if _, err := s.Next(2 * time.Second); err == nil || errors.Is(err, sseclient.ErrTimeout) {
		t.Fatalf("the stream beside the request is still open: %v", err)
	}
	took := waitExit(t, n, 5*time.Second, "admin /stop", start)
	t.Logf("streams alone ended %v after the stop; the proxied request finished; exited after %v",
		aloneEnded.Round(time.Millisecond), took.Round(time.Millisecond))
}

// TestRelayHTTP2ParkedStack: an HTTP/3 stream is taken over and holds no
// goroutine. With the relay serving HTTP/2, an idle
// stream's goroutine (x/net's for the request) only waits, having run
// neither Caddy's handler chain nor the stream's writes, and keeps the
// smallest stack Go has, 2 KiB. Once its stack grows to 4 KiB it never
// shrinks back (Go's shrink needs under a quarter in use, less an 800-byte
// guard): a frame or call too many on that goroutine and this test fails.
// With Caddy serving HTTP/2 the goroutine holds Caddy's chain down to the
// relay's handler, 8 KiB; the subscribe runs apart, else it would keep the
// 16 KiB the subscribe grew it to.
func TestRelayHTTP2ParkedStack(t *testing.T) {
	for _, c := range []struct {
		name, global string
		transport    http.RoundTripper
		streams      int
		least, most  float64 // KiB of stack a stream
	}{
		{"the relay serves HTTP2", relayHTTP2, h2Client(), 1000, 1.5, 3},
		{"caddy serves HTTP2", "", h2Client(), 1000, 3, 12},
		// Taken over: the request's goroutine is gone; what is left is
		// the QUIC connection's own goroutines over 90 streams (one
		// connection carries 100 at a time), about 1 KiB a stream.
		{"HTTP3", "", &http3.Transport{TLSClientConfig: insecure()}, 90, 0, 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			n := startNodeWith(t, c.global, `sse_relay /events/* {
		heartbeat 0
		max_connections_per_ip 2000
	}`, true)
			client := &http.Client{Transport: c.transport}
			before := stackInUse(t, n)
			for range c.streams {
				s, err := sseclient.Open(client, n.base+"/events/stack", nil)
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
			}
			per := (float64(stackInUse(t, n)) - float64(before)) / float64(c.streams) / 1024
			if per > c.most || per < c.least {
				t.Fatalf("%.1f KiB of stack a stream, want %.1f to %.1f", per, c.least, c.most)
			}
			t.Logf("%.1f KiB of stack a stream", per)
		})
	}
}

// insecure takes any certificate (tls internal's). One config a
// transport: a transport adds its ALPN protocols to the one it gets.
func insecure() *tls.Config { return &tls.Config{InsecureSkipVerify: true} }

// h2Client is an HTTP/2 client that takes any certificate.
func h2Client() http.RoundTripper {
	return &http.Transport{TLSClientConfig: insecure(), ForceAttemptHTTP2: true}
}

// stackInUse is the node's goroutine stacks in bytes, after three GCs (a
// stack halves at most once a GC).
func stackInUse(t *testing.T, n *node) uint64 {
	t.Helper()
	if err := testsrv.ForceGC(n.admin, 3); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(n.admin + "/debug/vars")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var vars struct {
		Memstats struct{ StackInuse uint64 } `json:"memstats"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&vars); err != nil {
		t.Fatal(err)
	}
	return vars.Memstats.StackInuse
}

// relayHTTP2Conns is the HTTP/2 connections the relay's listener wrapper
// serves, from the node's metrics.
func relayHTTP2Conns(t *testing.T, n *node) int {
	t.Helper()
	resp, err := http.Get(n.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, "caddy_sse_relay_http2_connections "); ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("/metrics has no caddy_sse_relay_http2_connections")
	return 0
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
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
