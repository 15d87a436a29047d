package sserelay

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestPostWithoutKeyIs405(t *testing.T) {
	load(t, site(""))
	code, hdr, _ := do(t, "POST", "/events/a", "x", "Authorization", "Bearer anything")
	if code != 405 || strings.Contains(hdr.Get("Allow"), "POST") {
		t.Fatalf("POST without publish_key: %d, Allow %q", code, hdr.Get("Allow"))
	}
	// Same-origin requests pass without allowed_origins; others do not.
	if code, _, _ := do(t, "GET", "/events/", "", "Origin", "http://localhost:9080"); code != 204 {
		t.Fatalf("same origin: %d", code)
	}
	if code, _, _ := do(t, "GET", "/events/", "", "Origin", "http://localhost:9999"); code != 403 {
		t.Fatalf("other origin: %d", code)
	}
	// HEAD gets the stream's headers and no body.
	code, hdr, body := do(t, "HEAD", "/events/a", "")
	if code != 200 || hdr.Get("Content-Type") != "text/event-stream" || body != "" {
		t.Fatalf("HEAD: %d %v %q", code, hdr, body)
	}
}

// TestPublishBodyCut: a POST whose body ends before its Content-Length is
// a 400, and nothing is published.
func TestPublishBodyCut(t *testing.T) {
	load(t, site("publish_key "+testPublishKey))
	sub := subscribe(t, "/events/cut")
	c, err := net.Dial("tcp", "localhost:9080")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "POST /events/cut HTTP/1.1\r\nHost: localhost:9080\r\nAuthorization: Bearer %s\r\nContent-Length: 100\r\n\r\nonly part", testPublishKey)
	_ = c.(*net.TCPConn).CloseWrite()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Fatalf("cut body: %d, want 400", resp.StatusCode)
	}
	sub.nothing(t, 200*time.Millisecond)
}

// TestPublishToSeveralIsAllOrNone: one POST to ?channel=a,b reaches the
// subscribers of each, on every broker; the broker publishes it as one
// statement or transaction (broker.TestPublishSeveralIsAllOrNone).
func TestPublishToSeveralIsAllOrNone(t *testing.T) {
	for _, url := range []string{servers.PG(t).URL(), servers.Redis(t).URL(), "memory://"} {
		load(t, site("broker "+url+"\npublish_key "+testPublishKey))
		both := subscribe(t, "/events/?channel=many.a,many.b")
		onlyB := subscribe(t, "/events/many.b")
		if code, _, body := do(t, "POST", "/events/?channel=many.a,many.b", "to both", "Authorization", "Bearer "+testPublishKey); code != 202 {
			t.Fatalf("%s: POST to two channels: %d %q", url, code, body)
		}
		for _, c := range []*sseClient{both, both, onlyB} {
			if ev := c.next(t); ev.Data != "to both" {
				t.Fatalf("%s: got %+v", url, ev)
			}
		}
		both.nothing(t, 200*time.Millisecond)
		both.Close()
		onlyB.Close()
	}
}

// TestChannelPrefixSeparatesRoutes: routes on one broker share channel
// names unless prefixed. A route with channel_prefix publishes and reads
// its own namespace: its "alice" is the broker's "app.alice", which a
// plain route on the same broker cannot reach by "alice".
func TestChannelPrefixSeparatesRoutes(t *testing.T) {
	load(t, `http://localhost:9080 {
	sse_relay /app/* {
		channel_prefix app.
		publish_key `+testPublishKey+`
	}
	sse_relay /news/* {
		publish_key `+testPublishKey+`
	}
}
`)
	app := subscribe(t, "/app/alice")
	plain := subscribe(t, "/news/alice")
	raw := subscribe(t, "/news/app.alice")
	if code, _, body := do(t, "POST", "/app/alice", "for alice", "Authorization", "Bearer "+testPublishKey); code != 202 {
		t.Fatalf("POST: %d %s", code, body)
	}
	if ev := app.next(t); ev.Data != "for alice" {
		t.Fatalf("the prefixed route: %+v", ev)
	}
	if ev := raw.next(t); ev.Data != "for alice" {
		t.Fatalf("the broker's name, from a plain route: %+v", ev)
	}
	plain.nothing(t, 300*time.Millisecond)
}
