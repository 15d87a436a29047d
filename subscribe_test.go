package sserelay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/sse-relay/caddy-sse-relay/broker"
	"github.com/sse-relay/caddy-sse-relay/hub"
	"github.com/sse-relay/caddy-sse-relay/internal/sseclient"
)

func idOf(t *testing.T, c *sseClient) (event, string) {
	t.Helper()
	ev := c.next(t)
	if ev.ID == "" {
		t.Fatalf("event %+v has no id", ev)
	}
	return ev, ev.ID
}

func TestReplayOverHTTP(t *testing.T) {
	load(t, site("publish_key "+testPublishKey+"\nreplay 100"))
	pub := func(ch, payload string) {
		t.Helper()
		if code, _, body := do(t, "POST", "/events/"+ch, payload, "Authorization", "Bearer "+testPublishKey); code != 202 {
			t.Fatalf("publish: %d %s", code, body)
		}
	}
	c := subscribe(t, "/events/?channel=p1,p2")
	pub("p1", "a")
	_, id := idOf(t, c)
	c.Close()
	pub("p2", "b")
	pub("p1", `{"id":"mine-1","data":"c"}`)

	// Header form: the missed events in order, then live ones.
	r := subscribe(t, "/events/?channel=p1,p2", "Last-Event-ID", id)
	if ev := r.next(t); ev.Data != "b" {
		t.Fatalf("first replayed %+v", ev)
	}
	if ev := r.next(t); ev.Data != "c" || ev.ID != "mine-1" {
		t.Fatalf("second replayed %+v (publisher id kept)", ev)
	}
	pub("p2", "d")
	if ev := r.next(t); ev.Data != "d" {
		t.Fatalf("live after replay %+v", ev)
	}
	r.nothing(t, 200*time.Millisecond)

	// Query form, and a publisher's id as the resume point.
	q := subscribe(t, "/events/?channel=p1,p2&last_event_id=mine-1")
	if ev := q.next(t); ev.Data != "d" {
		t.Fatalf("query resume %+v", ev)
	}

	// An id no ring holds: the reset signal, then live events.
	u := subscribe(t, "/events/p1", "Last-Event-ID", "zzzz-99")
	if ev := u.next(t); ev.Name != hub.ResetEvent || !strings.Contains(ev.Data, "unknown-id") {
		t.Fatalf("unknown id: %+v", ev)
	}
	pub("p1", "e")
	if ev := u.next(t); ev.Data != "e" {
		t.Fatalf("after reset %+v", ev)
	}
}

// TestReplayLargeBacklog: a resume whose backlog spans many write chunks
// gets all of it, in order, then live events.
func TestReplayLargeBacklog(t *testing.T) {
	load(t, site("publish_key "+testPublishKey+"\nreplay 1000"))
	pad := strings.Repeat("x", 1000)
	pub := func(n int) {
		t.Helper()
		if code, _, body := do(t, "POST", "/events/big", fmt.Sprintf("%d %s", n, pad), "Authorization", "Bearer "+testPublishKey); code != 202 {
			t.Fatalf("publish: %d %s", code, body)
		}
	}
	c := subscribe(t, "/events/big")
	pub(0)
	_, id := idOf(t, c)
	c.Close()
	const events = 600 // about 600 KiB: ten chunks
	for n := 1; n < events; n++ {
		pub(n)
	}
	r := subscribe(t, "/events/big", "Last-Event-ID", id)
	for n := 1; n < events; n++ {
		if ev := r.next(t); ev.Data != fmt.Sprintf("%d %s", n, pad) {
			t.Fatalf("replayed event %d: %.20q", n, ev.Data)
		}
	}
	pub(events)
	if ev := r.next(t); !strings.HasPrefix(ev.Data, fmt.Sprint(events)+" ") {
		t.Fatalf("live after replay: %.20q", ev.Data)
	}
}

func TestReplayOffHasNoRelayIDs(t *testing.T) {
	load(t, site("publish_key "+testPublishKey+"\nreplay 0"))
	c := subscribe(t, "/events/x")
	do(t, "POST", "/events/x", "plain", "Authorization", "Bearer "+testPublishKey)
	if ev := c.next(t); ev.ID != "" || ev.Data != "plain" {
		t.Fatalf("replay 0: %+v", ev)
	}
}

// TestPayloadContract sends every form of payload through Postgres,
// including ones that must be refused, on one stream that must survive.
func TestPayloadContract(t *testing.T) {
	load(t, site("broker "+servers.PG(t).URL()))
	conn := pgConn(t)
	c := subscribe(t, "/events/Orders")
	notify := func(payload string) { pgExec(t, conn, `SELECT pg_notify('Orders', $1)`, payload) }

	notify(`{"event":"order","id":"o-1","data":"line one\nline two"}`)
	if ev := c.next(t); ev != (event{ID: "o-1", Name: "order", Data: "line one\nline two"}) {
		t.Fatalf("multi-line: %+v", ev)
	}
	notify(`{"data":{"id": 42, "items": [1, 2]}}`)
	if ev := c.next(t); ev.Data != `{"id":42,"items":[1,2]}` || ev.ID == "" {
		t.Fatalf("json data: %+v (want compact JSON and a relay id)", ev)
	}
	notify(`just text`)
	if ev := c.next(t); ev.Data != "just text" || ev.Name != "" {
		t.Fatalf("raw: %+v", ev)
	}
	// Refused: event or id that would inject fields, and the relay's own
	// reset event. The stream stays up.
	notify(`{"event":"x\nid: 666","data":"evil"}`)
	notify(`{"id":"1\r\ndata: evil","data":"evil"}`)
	notify(`{"event":"sse-relay-reset","data":"evil"}`)
	notify(`{"event":"after","data":"still here"}`)
	if ev := c.next(t); ev.Name != "after" || ev.Data != "still here" {
		t.Fatalf("after refused payloads: %+v", ev)
	}
	if c.SawLine("id: 666") || c.SawLine("data: evil") || c.SawLine("event: "+hub.ResetEvent) {
		t.Fatal("a refused payload reached the stream")
	}
	if _, body := adminGet(t, "/metrics"); !regexp.MustCompile(`(?m)^caddy_sse_relay_payloads_refused_total\{reason="reserved_event_name"\} [1-9]`).MatchString(body) {
		t.Fatal("/metrics does not count the publisher's reset event")
	}
	// The seeds' unquoted NOTIFY folds to "orders"; /events/Orders gets it.
	pgExec(t, conn, `NOTIFY Orders, '{"event":"seed","data":"folded"}'`)
	if ev := c.next(t); ev.Name != "seed" || ev.Data != "folded" {
		t.Fatalf("unquoted NOTIFY: %+v", ev)
	}
	notify(`{"comment":"only a comment","retry":1500}`)
	notify(`last`)
	if ev := c.next(t); ev.Data != "last" {
		t.Fatalf("got %+v", ev)
	}
	if !c.SawLine(": only a comment") || !c.SawLine("retry: 1500") {
		t.Fatal("comment or retry line missing")
	}
}

func TestStreamHeadersAndRetry(t *testing.T) {
	load(t, site("retry 2500ms\nheartbeat 200ms"))
	c := subscribe(t, "/events/h")
	h := c.Response.Header
	if h.Get("Content-Type") != "text/event-stream" || h.Get("Cache-Control") != "no-cache, no-transform" || h.Get("X-Accel-Buffering") != "no" {
		t.Fatalf("headers %v", h)
	}
	time.Sleep(600 * time.Millisecond)
	if !c.SawLine("retry: 2500") {
		t.Fatal("no retry line")
	}
	beats := 0
	for _, l := range c.Lines() {
		if l == ":" {
			beats++
		}
	}
	if beats < 2 {
		t.Fatalf("%d heartbeats in 600ms at 200ms, want at least 2", beats)
	}
}

// TestSlowSubscriberCutOff has one client that never reads. It is cut off
// while a reading client gets every event promptly.
func TestSlowSubscriberCutOff(t *testing.T) {
	load(t, site("publish_key "+testPublishKey+"\nbuffer 32\nwrite_timeout 1s"))
	slow := rawConn(t, "/events/big")
	fast := subscribe(t, "/events/big")
	time.Sleep(200 * time.Millisecond) // let the raw request subscribe
	payload := strings.Repeat("x", 60<<10)
	const n = 300
	got := make(chan time.Duration, n)
	go func() {
		defer close(got)
		for i := 0; i < n; i++ {
			start := time.Now()
			ev, err := fast.Next(10 * time.Second)
			switch {
			case errors.Is(err, sseclient.ErrTimeout):
				t.Errorf("fast client: no event %d within 10s", i)
				return
			case err != nil:
				t.Errorf("fast client's stream ended after %d events: %v", i, err)
				return
			case len(ev.Data) != len(payload):
				t.Errorf("event %d has %d bytes", i, len(ev.Data))
			}
			got <- time.Since(start)
		}
	}()
	for i := 0; i < n; i++ {
		if code, _, body := do(t, "POST", "/events/big", payload, "Authorization", "Bearer "+testPublishKey); code != 202 {
			t.Fatalf("publish %d: %d %s", i, code, body)
		}
	}
	var worst time.Duration
	count := 0
	for d := range got {
		count++
		worst = max(worst, d)
	}
	if count != n {
		t.Fatalf("fast client got %d of %d", count, n)
	}
	if worst > 2*time.Second {
		t.Fatalf("fast client waited %v for an event", worst)
	}
	// The slow client's connection is closed by the relay: reading what
	// the kernel buffered ends in EOF, short of all the events.
	_ = slow.SetReadDeadline(time.Now().Add(15 * time.Second))
	b, err := io.ReadAll(slow)
	if err != nil {
		t.Fatalf("slow connection not closed: %v after %d bytes", err, len(b))
	}
	if frames := strings.Count(string(b), "\ndata: "); frames >= n {
		t.Fatalf("slow client got all %d events; it should have been cut off", frames)
	}
	t.Logf("fast client: %d events, worst wait %v; slow client cut off", count, worst)
	if _, body := adminGet(t, "/metrics"); !regexp.MustCompile(`(?m)^caddy_sse_relay_subscribers_dropped_total\{reason="slow"\} [1-9]`).MatchString(body) {
		t.Fatal("/metrics does not count the slow subscriber")
	}
}

func TestConnectionLimits(t *testing.T) {
	load(t, site("max_connections 3\nmax_connections_per_ip 2"))
	waitStreams(t, 0)
	a := subscribe(t, "/events/a")
	b := subscribe(t, "/events/a")
	code, hdr, _ := do(t, "GET", "/events/a", "")
	if code != 429 || hdr.Get("Retry-After") == "" {
		t.Fatalf("third stream from one IP: %d %v, want 429 with Retry-After", code, hdr)
	}
	a.Close()
	waitStreams(t, 1)
	c := subscribe(t, "/events/a") // released
	// The limits count per node and broker, across configs: let the
	// first part's streams go before the second.
	b.Close()
	c.Close()
	waitStreams(t, 0)
	load(t, site("max_connections 2\nmax_connections_per_ip 10"))
	subscribe(t, "/events/b")
	subscribe(t, "/events/b")
	time.Sleep(100 * time.Millisecond)
	if code, hdr, _ := do(t, "GET", "/events/b", ""); code != 503 || hdr.Get("Retry-After") == "" {
		t.Fatalf("over max_connections: %d %v, want 503 with Retry-After", code, hdr)
	}
}

// TestConnectionLimitPerIPv6Net: max_connections_per_ip counts IPv6
// clients by /64, so one host cannot take every slot by using many
// addresses of its prefix; IPv4 clients count by address. Client
// addresses come from X-Forwarded-For through a trusted proxy.
func TestConnectionLimitPerIPv6Net(t *testing.T) {
	loadWith(t, trustingLocalProxy, site("max_connections_per_ip 2"))
	waitStreams(t, 0)
	from := func(ip string) []string { return []string{"X-Forwarded-For", ip} }
	subscribe(t, "/events/a", from("2001:db8:1:2::1")...)
	subscribe(t, "/events/a", from("2001:db8:1:2::2")...)
	for _, ip := range []string{"2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::2", "2001:DB8:1:2::3"} {
		if code, hdr, _ := do(t, "GET", "/events/a", "", from(ip)...); code != 429 || hdr.Get("Retry-After") == "" {
			t.Fatalf("a third stream from %s, in the same /64: %d, want 429 with Retry-After", ip, code)
		}
	}
	subscribe(t, "/events/a", from("2001:db8:1:3::1")...) // the next /64
	subscribe(t, "/events/a", from("10.0.0.1")...)
	subscribe(t, "/events/a", from("10.0.0.1")...)
	if code, _, _ := do(t, "GET", "/events/a", "", from("::ffff:10.0.0.1")...); code != 429 {
		t.Fatalf("a third stream from 10.0.0.1, IPv4-mapped: %d, want 429", code)
	}
	subscribe(t, "/events/a", from("10.0.0.2")...) // IPv4 counts by address
}

// TestClientNet: what the per-IP limit counts a client by. Pure: no
// server.
func TestClientNet(t *testing.T) {
	for _, c := range []struct{ ip, want string }{
		{"192.0.2.7", "192.0.2.7"},
		{"::ffff:192.0.2.7", "192.0.2.7"},
		{"2001:db8:1:2::1", "2001:db8:1:2::/64"},
		{"2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"},
		{"2001:DB8:1:2::1", "2001:db8:1:2::/64"},
		{"2001:db8:1:3::1", "2001:db8:1:3::/64"},
		{"fe80::1%eth0", "fe80::/64"},
		{"::1", "::/64"},
		{"not an address", "not an address"},
	} {
		if got := clientNet(c.ip); got != c.want {
			t.Errorf("clientNet(%q) = %q, want %q", c.ip, got, c.want)
		}
	}
}

// TestStreamOnClosedRelayIs503: a request that races the last Cleanup of
// its relay (the hub is closed) is told to come back, and gives its
// connection slot back. No Caddy config can hold the race open, so the
// handler is driven directly.
func TestStreamOnClosedRelayIs503(t *testing.T) {
	b, err := broker.Open("memory://", nil, broker.History{})
	if err != nil {
		t.Fatal(err)
	}
	hb := hub.New(b, hub.Options{})
	b.Start(hb)
	hb.Close()
	h := &Handler{MaxChannels: 4, Buffer: 4, MaxConnections: 1, MaxConnectionsPerIP: 1, MaxNewChannelsPerIP: 10, logger: zap.NewNop(),
		relay: &relay{broker: b, hub: hb, perIP: map[string]int{}}, rules: channelRules{max: 4, limits: b.Limits()}}
	for range 2 { // the second one proves the slot was released
		w := httptest.NewRecorder()
		if err := h.serveSubscribe(w, httptest.NewRequest(http.MethodGet, "/events/a", nil)); err != nil {
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
		publish_key `+testPublishKey+`
	}
}
`)
	var streams []*sseClient
	for i := 0; i < 50; i++ {
		streams = append(streams, subscribe(t, "/events/wrapped", "Accept-Encoding", "gzip, zstd"))
	}
	for _, c := range streams {
		if enc := c.Response.Header.Get("Content-Encoding"); enc != "" {
			t.Fatalf("the stream is encoded: %s", enc)
		}
	}
	for i := 0; i < 20; i++ {
		do(t, "POST", "/events/wrapped", "event "+strconv.Itoa(i), "Authorization", "Bearer "+testPublishKey)
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

// historySite serves the same broker, with history, on two routes with
// different hub options: two relays, each with its own connection and
// hub, as two nodes would have.
func historySite(brokerURL, extra string) string {
	route := func(path string, replay int) string {
		return fmt.Sprintf("\tsse_relay %s {\n\t\tbroker %s\n\t\thistory 100\n\t\treplay %d\n\t\tpublish_key "+testPublishKey+"\n%s\n\t}\n", path, brokerURL, replay, extra)
	}
	return "http://localhost:9080 {\n" + route("/a/*", 100) + route("/b/*", 101) + "\trespond \"not events\"\n}\n"
}

// historyBrokers are the brokers that keep history, the Postgres one with
// its schema applied.
func historyBrokers(t *testing.T) map[string]string {
	pgExec(t, pgConn(t), broker.PostgresSchema)
	return map[string]string{"postgres": servers.PG(t).URL(), "redis": servers.Redis(t).URL()}
}

// uniq is a channel name no earlier run used: logs outlive a test.
func uniq(prefix string) string { return fmt.Sprintf("%s%d", prefix, time.Now().UnixNano()) }

func post(t *testing.T, path, body string) {
	t.Helper()
	if code, _, resp := do(t, "POST", path, body, "Authorization", "Bearer "+testPublishKey); code != 202 {
		_, stats := adminGet(t, "/sse_relay/stats")
		t.Fatalf("POST %s: %d %s\n%s", path, code, resp, stats)
	}
}

// TestHistoryResumesOnAnotherNode: with history, a stream's Last-Event-ID
// is a cursor any node resumes from: a stream of one channel and one of
// three channels each close on one relay and resume on another that never
// saw them, getting everything published meanwhile once, in order per
// channel, with no reset; resuming on the first relay (from its ring) does
// the same.
func TestHistoryResumesOnAnotherNode(t *testing.T) {
	for name, url := range historyBrokers(t) {
		t.Run(name, func(t *testing.T) {
			load(t, historySite(url, ""))
			one := uniq("one")
			c := subscribe(t, "/a/"+one)
			for i := range 5 {
				post(t, "/a/"+one, fmt.Sprint("e", i))
			}
			c.next(t)
			_, id := idOf(t, c)
			c.Close()
			for i := 5; i < 8; i++ {
				post(t, "/b/"+one, fmt.Sprint("e", i))
			}
			for _, node := range []string{"/b/", "/a/"} {
				r := subscribe(t, node+one, "Last-Event-ID", id)
				for i := 2; i < 8; i++ {
					if ev := r.next(t); ev.Data != fmt.Sprint("e", i) || ev.Name == hub.ResetEvent {
						t.Fatalf("resume on %s: got %+v, want e%d", node, ev, i)
					}
				}
				r.nothing(t, 300*time.Millisecond)
				r.Close()
			}

			x, y, z := uniq("x"), uniq("y"), uniq("z")
			three := "?channel=" + x + "," + y + "," + z
			c = subscribe(t, "/a/"+three)
			for _, p := range [][2]string{{x, "x0"}, {y, "y0"}, {z, "z0"}, {x, "x1"}} {
				post(t, "/a/"+p[0], p[1])
			}
			c.next(t)
			_, id = idOf(t, c)
			c.Close()
			post(t, "/a/"+y, "y1")
			post(t, "/b/"+z, "z1")
			r := subscribe(t, "/b/"+three, "Last-Event-ID", id)
			got := map[string][]string{}
			for range 4 { // it had x0 and y0
				ev, err := r.Next(10 * time.Second)
				if err != nil {
					t.Fatalf("resumed from %q: after %v: %v", id, got, err)
				}
				if ev.Name == hub.ResetEvent {
					t.Fatalf("reset %+v", ev)
				}
				got[ev.Data[:1]] = append(got[ev.Data[:1]], ev.Data)
			}
			r.nothing(t, 300*time.Millisecond)
			if fmt.Sprint(got) != "map[x:[x1] y:[y1] z:[z0 z1]]" {
				t.Fatalf("three channels resumed on another node: %v", got)
			}
		})
	}
}

// TestHistoryCommitOrder: two transactions publish through the log and
// commit in the reverse order of their ids; a stream that resumes on
// another node between the two commits gets both, once, as does a stream
// that was open all along.
func TestHistoryCommitOrder(t *testing.T) {
	ch, open, id, commitA := commitOrderSetup(t, "co")
	resumed := subscribe(t, "/b/"+ch, "Last-Event-ID", id)
	resumed.nothing(t, 300*time.Millisecond)
	commitA()
	for _, s := range []*sseClient{open, resumed} {
		wantAThenB(t, s, "")
		s.nothing(t, 300*time.Millisecond)
	}
}

// TestHistoryCommitOrderFromTheRing: a resume that read the log leaves
// what it read in the node's ring, and later resumes from as far back are
// served from there with the same guarantee. Two transactions commit in
// the reverse order of their ids; a resume between the commits reads the
// log (nothing is safe to read yet), a second one then is served from the
// ring (nothing yet), and once both committed each stream gets both,
// once, in order, as does a third resume after, from the ring; only the
// first read the log.
func TestHistoryCommitOrderFromTheRing(t *testing.T) {
	ch, _, id, commitA := commitOrderSetup(t, "cor")
	read := subscribe(t, "/b/"+ch, "Last-Event-ID", id)
	read.nothing(t, 300*time.Millisecond)
	backfills := historyBackfills(t)
	fromRing := subscribe(t, "/b/"+ch, "Last-Event-ID", id)
	fromRing.nothing(t, 300*time.Millisecond)
	commitA()
	for _, s := range []*sseClient{read, fromRing} {
		wantAThenB(t, s, "")
	}
	after := subscribe(t, "/b/"+ch, "Last-Event-ID", id)
	wantAThenB(t, after, "after both commits: ")
	for _, s := range []*sseClient{read, fromRing, after} {
		s.nothing(t, 300*time.Millisecond)
	}
	if n := historyBackfills(t); n != backfills {
		t.Fatalf("%d more resumes read the log, want 0", n-backfills)
	}
}

// commitOrderSetup loads a Postgres history site, opens a stream on a
// fresh channel named after prefix, publishes one event and takes its id,
// then publishes a and b in two transactions and commits b's (see
// reverseCommits).
func commitOrderSetup(t *testing.T, prefix string) (ch string, open *sseClient, id string, commitA func()) {
	t.Helper()
	load(t, historySite(historyBrokers(t)["postgres"], ""))
	ch = uniq(prefix)
	open = subscribe(t, "/a/"+ch)
	post(t, "/a/"+ch, "before")
	_, id = idOf(t, open)
	return ch, open, id, reverseCommits(t, ch)
}

// wantAThenB reads two events from s and fails unless they are a, then b.
func wantAThenB(t *testing.T, s *sseClient, what string) {
	t.Helper()
	if a, b := s.next(t), s.next(t); a.Data != "a" || b.Data != "b" {
		t.Fatalf("%sgot %+v then %+v, want a then b", what, a, b)
	}
}

// reverseCommits publishes a then b on ch through the log in two
// transactions and commits b's; commitA commits a's, whose id is the
// lower one.
func reverseCommits(t *testing.T, ch string) (commitA func()) {
	t.Helper()
	ctx := context.Background()
	first, second := pgConn(t), pgConn(t)
	txA, _ := first.Begin(ctx)
	txB, _ := second.Begin(ctx)
	pgExec(t, first, `SELECT sse_relay.publish($1, 'a')`, ch)
	pgExec(t, second, `SELECT sse_relay.publish($1, 'b')`, ch)
	if err := txB.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	return func() {
		if err := txA.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

// historyBackfills is how many resumes read the log, on every relay.
func historyBackfills(t *testing.T) int {
	t.Helper()
	_, body := adminGet(t, "/sse_relay/stats")
	var stats struct {
		Brokers []struct {
			History *struct {
				Backfills int `json:"backfills"`
			} `json:"history"`
		} `json:"brokers"`
	}
	if err := json.Unmarshal([]byte(body), &stats); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, b := range stats.Brokers {
		if b.History != nil {
			n += b.History.Backfills
		}
	}
	return n
}

// TestHistoryExpiredCursor: a cursor older than what the log keeps gets
// a reset naming the channel and the reason, then what the log still has.
func TestHistoryExpiredCursor(t *testing.T) {
	for name, url := range historyBrokers(t) {
		t.Run(name, func(t *testing.T) {
			load(t, historySite(url, ""))
			ch := uniq("exp")
			c := subscribe(t, "/a/"+ch)
			post(t, "/a/"+ch, "first")
			_, id := idOf(t, c)
			// Redis trims on every append; Postgres when a node runs
			// retention: run it now instead of waiting for it.
			for i := range 250 {
				post(t, "/a/"+ch, fmt.Sprint("more ", i))
			}
			if name == "postgres" {
				pgExec(t, pgConn(t), `SELECT sse_relay.trim(100, NULL)`)
			}
			r := subscribe(t, "/b/"+ch, "Last-Event-ID", id)
			ev := r.next(t)
			if ev.Name != hub.ResetEvent || !strings.Contains(ev.Data, `"expired"`) || !strings.Contains(ev.Data, ch) {
				t.Fatalf("resume from a trimmed position: %+v, want a reset with reason expired", ev)
			}
			if ev := r.next(t); !strings.HasPrefix(ev.Data, "more ") {
				t.Fatalf("after the reset: %+v", ev)
			}
		})
	}
}

// TestHistoryUnknownCursor: a Last-Event-ID that is not a cursor gets a
// reset with reason unknown-id, then live events.
func TestHistoryUnknownCursor(t *testing.T) {
	load(t, historySite(historyBrokers(t)["redis"], ""))
	ch := uniq("unk")
	for _, id := range []string{"nonsense", "1-2,3-4", "abc-def"} {
		r := subscribe(t, "/a/"+ch, "Last-Event-ID", id)
		if ev := r.next(t); ev.Name != hub.ResetEvent || !strings.Contains(ev.Data, "unknown-id") {
			t.Fatalf("Last-Event-ID %q: %+v", id, ev)
		}
		post(t, "/a/"+ch, "live")
		if ev := r.next(t); ev.Data != "live" {
			t.Fatalf("after the reset: %+v", ev)
		}
		r.Close()
	}
}

// TestHistoryLargePayloadOnPostgres: with history, a Postgres payload is
// no longer bound by NOTIFY's 8000 bytes; the cap is the relay's 64 KiB.
func TestHistoryLargePayloadOnPostgres(t *testing.T) {
	load(t, historySite(historyBrokers(t)["postgres"], ""))
	ch := uniq("big")
	c := subscribe(t, "/a/"+ch)
	big := strings.Repeat("x", 20000)
	post(t, "/a/"+ch, big)
	if ev := c.next(t); ev.Data != big {
		t.Fatalf("got %d bytes", len(ev.Data))
	}
	if code, _, _ := do(t, "POST", "/a/"+ch, strings.Repeat("x", 65<<10), "Authorization", "Bearer "+testPublishKey); code != 413 {
		t.Fatalf("65 KiB: %d, want 413", code)
	}
}

// TestHeadDoesNotSubscribe: HEAD gets a stream's headers, and the broker
// is not asked to listen: no channel appears.
func TestHeadDoesNotSubscribe(t *testing.T) {
	load(t, site("linger 1h"))
	code, hdr, body := do(t, "HEAD", "/events/"+uniq("head"), "")
	if code != 200 || hdr.Get("Content-Type") != "text/event-stream" || body != "" {
		t.Fatalf("HEAD: %d %v %q", code, hdr, body)
	}
	if _, stats := adminGet(t, "/sse_relay/stats"); strings.Contains(stats, `"head`) {
		t.Fatalf("HEAD left a channel behind:\n%s", stats)
	}
}

// TestChannelGrowthBounds: past max_channels_total a stream that needs a
// new channel gets 503 with Retry-After, while one on channels the node
// has still opens; past max_new_channels_per_ip in a minute a client
// churning names gets 429 with Retry-After.
func TestChannelGrowthBounds(t *testing.T) {
	load(t, site("linger 1h\nmax_channels_total 3\nmax_new_channels_per_ip 100"))
	prefix := uniq("cap")
	for i := range 3 {
		subscribe(t, fmt.Sprintf("/events/%s%d", prefix, i))
	}
	code, hdr, body := do(t, "GET", "/events/"+prefix+"3", "")
	if code != 503 || hdr.Get("Retry-After") == "" {
		t.Fatalf("a fourth channel: %d %v %q, want 503 with Retry-After", code, hdr, body)
	}
	subscribe(t, "/events/"+prefix+"0") // a channel the node has

	load(t, site("linger 1h\nmax_new_channels_per_ip 3"))
	prefix = uniq("churn")
	for i := range 3 {
		subscribe(t, fmt.Sprintf("/events/%s%d", prefix, i)).Close()
	}
	code, hdr, body = do(t, "GET", "/events/"+prefix+"3", "")
	if code != 429 || hdr.Get("Retry-After") != "60" {
		t.Fatalf("a fourth new channel in a minute: %d %v %q, want 429 with Retry-After: 60", code, hdr, body)
	}
	subscribe(t, "/events/"+prefix+"0") // lingering: not new
}
