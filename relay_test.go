package sserelay

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"
)

// fanOut opens 300 subscribers over 3 channels, publishes 50 events on
// each channel and checks every subscriber got its channel's 50, in order.
func fanOut(t *testing.T, publish func(channel, payload string), during func()) {
	const perChannel, events = 100, 50
	channels := []string{"alpha", "beta", "gamma"}
	clients := make([][]*sseClient, len(channels))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for ci, ch := range channels {
		for i := 0; i < perChannel; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := trySubscribe("/events/" + ch)
				if err != nil || c.resp.StatusCode != 200 {
					t.Errorf("subscribe %s: %v", ch, err)
					return
				}
				mu.Lock()
				clients[ci] = append(clients[ci], c)
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	defer func() {
		for _, cs := range clients {
			for _, c := range cs {
				c.Close()
			}
		}
	}()
	if t.Failed() {
		return
	}
	for i := 0; i < events; i++ {
		for _, ch := range channels {
			publish(ch, fmt.Sprintf(`{"event":"n","data":"%s-%d"}`, ch, i))
		}
	}
	if during != nil {
		during()
	}
	for ci, cs := range clients {
		for _, c := range cs {
			for i := 0; i < events; i++ {
				ev := c.next(t)
				if want := fmt.Sprintf("%s-%d", channels[ci], i); ev.Data != want || ev.Name != "n" {
					t.Fatalf("client of %s got %+v, want data %q", channels[ci], ev, want)
				}
			}
		}
	}
	t.Logf("%d subscribers on %d channels each got all %d events", perChannel*len(channels), len(channels), events)
}

func TestFanOutPostgresOneConnection(t *testing.T) {
	load(t, site("broker "+servers.PG.URL()))
	conn := pgConn(t)
	relayConns := func() int {
		return pgInt(t, conn, `SELECT count(*) FROM pg_stat_activity WHERE application_name = 'caddy-sse-relay'`)
	}
	fanOut(t, func(ch, payload string) {
		pgExec(t, conn, `SELECT pg_notify($1, $2)`, ch, payload)
	}, func() {
		if n := relayConns(); n != 1 {
			t.Errorf("pg_stat_activity shows %d relay connections, want 1", n)
		}
	})
}

func TestFanOutRedisOneConnection(t *testing.T) {
	load(t, site("broker "+servers.Redis.URL()))
	rc := redisClient(t)
	fanOut(t, func(ch, payload string) {
		if err := rc.Publish(context.Background(), ch, payload).Err(); err != nil {
			t.Fatal(err)
		}
	}, func() {
		list, err := rc.ClientList(context.Background()).Result()
		if err != nil {
			t.Fatal(err)
		}
		subscribers := 0
		for _, line := range strings.Split(list, "\n") {
			if strings.Contains(line, "name=caddy-sse-relay") && !strings.Contains(line, " sub=0 ") {
				subscribers++
			}
		}
		if subscribers != 1 {
			t.Errorf("CLIENT LIST shows %d relay pub/sub connections, want 1:\n%s", subscribers, list)
		}
	})
}

func TestFanOutMemoryHTTPPublish(t *testing.T) {
	load(t, site("broker memory://\npublish_key k1"))
	fanOut(t, func(ch, payload string) {
		if code, _, body := do(t, "POST", "/events/"+ch, payload, "Authorization", "Bearer k1"); code != 202 {
			t.Fatalf("publish: %d %s", code, body)
		}
	}, nil)
}

// TestPayloadContract sends every form of payload through Postgres,
// including ones that must be refused, on one stream that must survive.
func TestPayloadContract(t *testing.T) {
	load(t, site("broker "+servers.PG.URL()))
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
	// Refused: event or id that would inject fields. The stream stays up.
	notify(`{"event":"x\nid: 666","data":"evil"}`)
	notify(`{"id":"1\r\ndata: evil","data":"evil"}`)
	notify(`{"event":"after","data":"still here"}`)
	if ev := c.next(t); ev.Name != "after" || ev.Data != "still here" {
		t.Fatalf("after refused payloads: %+v", ev)
	}
	if c.sawLine("id: 666") || c.sawLine("data: evil") {
		t.Fatal("a refused payload reached the stream")
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
	if !c.sawLine(": only a comment") || !c.sawLine("retry: 1500") {
		t.Fatal("comment or retry line missing")
	}
}

func TestStreamHeadersAndRetry(t *testing.T) {
	load(t, site("retry 2500ms\nheartbeat 200ms"))
	c := subscribe(t, "/events/h")
	h := c.resp.Header
	if h.Get("Content-Type") != "text/event-stream" || h.Get("Cache-Control") != "no-cache, no-transform" || h.Get("X-Accel-Buffering") != "no" {
		t.Fatalf("headers %v", h)
	}
	time.Sleep(600 * time.Millisecond)
	if !c.sawLine("retry: 2500") {
		t.Fatal("no retry line")
	}
	c.mu.Lock()
	beats := 0
	for _, l := range c.lines {
		if l == ":" {
			beats++
		}
	}
	c.mu.Unlock()
	if beats < 2 {
		t.Fatalf("%d heartbeats in 600ms at 200ms, want at least 2", beats)
	}
}

func TestPostgresChannelRules(t *testing.T) {
	load(t, site("broker "+servers.PG.URL()+"\npublish_key k"))
	conn := pgConn(t)
	pgExec(t, conn, `CREATE TABLE IF NOT EXISTS orders_victim (id int)`)
	long := strings.Repeat("a", 64)
	for _, path := range []string{
		"/events/" + long, // over Postgres's 63 bytes
		"/events/?channel=" + url.QueryEscape(`x"; DROP TABLE orders_victim; --`),
		"/events/?channel=" + url.QueryEscape(`orders';DROP TABLE orders_victim`),
		"/events/?channel=" + url.QueryEscape("a\x00b"),
		"/events/?channel=" + url.QueryEscape("a\xffb"),
		"/events/?channel=Orders,orders", // both receive NOTIFY orders: each event would come twice
		"/events/?channel=Orders&channel=ORDERS",
	} {
		code, _, body := do(t, "GET", path, "")
		if code != 400 || strings.Count(body, "\n") != 1 {
			t.Errorf("GET %s: %d %q, want 400 with a one-line reason", path, code, body)
		}
		// Publishing there is refused alike.
		code, _, body = do(t, "POST", path, "x", "Authorization", "Bearer k")
		if code != 400 || strings.Count(body, "\n") != 1 {
			t.Errorf("POST %s: %d %q, want 400 with a one-line reason", path, code, body)
		}
	}
	if n := pgInt(t, conn, `SELECT count(*) FROM pg_tables WHERE tablename = 'orders_victim'`); n != 1 {
		t.Fatal("orders_victim is gone")
	}
	// 63 bytes is fine.
	c := subscribe(t, "/events/"+long[:63])
	pgExec(t, conn, `SELECT pg_notify($1, 'ok')`, long[:63])
	if ev := c.next(t); ev.Data != "ok" {
		t.Fatalf("got %+v", ev)
	}
}

func TestRefusals(t *testing.T) {
	load(t, site("publish_key s3cret\nmax_channels 3\nallowed_origins https://app.example.com https://*.example.org"))
	cases := []struct {
		name, method, path, body string
		header                   []string
		want                     int
	}{
		{"no channel", "GET", "/events/", "", nil, 204},
		{"whitespace", "GET", "/events/?channel=a%20b", "", nil, 400},
		{"control char", "GET", "/events/?channel=a%01b", "", nil, 400},
		{"too long", "GET", "/events/" + strings.Repeat("x", 256), "", nil, 400},
		{"too many", "GET", "/events/?channel=a,b,c,d", "", nil, 400},
		{"origin refused", "GET", "/events/a", "", []string{"Origin", "https://evil.example.com"}, 403},
		{"wildcard must have a label", "GET", "/events/a", "", []string{"Origin", "https://example.org"}, 403},
		{"scheme matters", "GET", "/events/a", "", []string{"Origin", "http://app.example.com"}, 403},
		{"post no key", "POST", "/events/a", "x", nil, 401},
		{"post wrong key", "POST", "/events/a", "x", []string{"Authorization", "Bearer nope"}, 401},
		{"post basic auth", "POST", "/events/a", "x", []string{"Authorization", "Basic czNjcmV0"}, 401},
		{"post bad payload", "POST", "/events/a", `{"event":"a\nb","data":"x"}`, []string{"Authorization", "Bearer s3cret"}, 400},
		{"post bad retry", "POST", "/events/a", `{"retry":"x","data":"x"}`, []string{"Authorization", "Bearer s3cret"}, 400},
		{"post no channel", "POST", "/events/", "x", []string{"Authorization", "Bearer s3cret"}, 400},
		{"post bad channel", "POST", "/events/?channel=a;b", "x", []string{"Authorization", "Bearer s3cret"}, 400},
		{"post too big", "POST", "/events/a", strings.Repeat("x", 64<<10+1), []string{"Authorization", "Bearer s3cret"}, 413},
		{"post origin refused", "POST", "/events/a", "x", []string{"Authorization", "Bearer s3cret", "Origin", "https://evil.com"}, 403},
		{"put", "PUT", "/events/a", "x", nil, 405},
		{"delete", "DELETE", "/events/a", "", nil, 405},
	}
	for _, c := range cases {
		code, hdr, body := do(t, c.method, c.path, c.body, c.header...)
		if code != c.want {
			t.Errorf("%s: %s %s = %d %q, want %d", c.name, c.method, c.path, code, body, c.want)
		}
		if code == 401 && hdr.Get("WWW-Authenticate") == "" {
			t.Errorf("%s: 401 without WWW-Authenticate", c.name)
		}
		if code == 405 && hdr.Get("Allow") == "" {
			t.Errorf("%s: 405 without Allow", c.name)
		}
		if code >= 400 && strings.Count(body, "\n") != 1 {
			t.Errorf("%s: body %q is not a one-line reason", c.name, body)
		}
	}
	code, _, _ := do(t, "POST", "/events/a", strings.Repeat("x", 64<<10), "Authorization", "Bearer s3cret")
	if code != 202 {
		t.Errorf("a payload at the limit: %d, want 202", code)
	}
}

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

func TestCORS(t *testing.T) {
	load(t, site("publish_key k\nallowed_origins https://app.example.com https://*.example.org"))
	code, hdr, _ := do(t, "OPTIONS", "/events/a", "",
		"Origin", "https://app.example.com", "Access-Control-Request-Method", "POST", "Access-Control-Request-Headers", "authorization")
	if code != 204 || hdr.Get("Access-Control-Allow-Origin") != "https://app.example.com" ||
		!strings.Contains(hdr.Get("Access-Control-Allow-Methods"), "POST") ||
		!strings.Contains(strings.ToLower(hdr.Get("Access-Control-Allow-Headers")), "authorization") ||
		hdr.Get("Access-Control-Allow-Credentials") != "true" {
		t.Fatalf("preflight: %d %v", code, hdr)
	}
	if code, _, _ := do(t, "OPTIONS", "/events/a", "", "Origin", "https://evil.com", "Access-Control-Request-Method", "GET"); code != 403 {
		t.Fatalf("preflight from a refused origin: %d", code)
	}
	c := subscribe(t, "/events/a", "Origin", "https://tenant.example.org")
	h := c.resp.Header
	if h.Get("Access-Control-Allow-Origin") != "https://tenant.example.org" || h.Get("Access-Control-Allow-Credentials") != "true" || !strings.Contains(h.Get("Vary"), "Origin") {
		t.Fatalf("stream CORS headers %v", h)
	}
}

// TestStarOriginAllowsAny: `*` lets any origin read, but without
// credentials, so another site's page cannot ride the visitor's cookies;
// origins listed beside it keep theirs.
// TestSameOriginBehindTLSProxy: with no allowed_origins, a page served
// over https by a load balancer that ends TLS is same-origin, as the
// trusted proxy's X-Forwarded-Proto says; an untrusted client's header is
// not believed.
func TestSameOriginBehindTLSProxy(t *testing.T) {
	trusting := strings.Replace(globals, "\tgrace_period 5s\n", "\tgrace_period 5s\n\tservers {\n\t\ttrusted_proxies static 127.0.0.1/32 ::1/128\n\t}\n", 1)
	var skipped bool
	t.Run("load", func(st *testing.T) {
		caddytest.NewTester(st).InitServer(trusting+site(""), "caddyfile")
		skipped = st.Skipped()
	})
	if skipped {
		t.Fatal("the caddytest integration harness could not start Caddy")
	}
	if code, _, _ := do(t, "GET", "/events/", "", "Origin", "https://localhost:9080", "X-Forwarded-Proto", "https"); code != 204 {
		t.Fatalf("https page behind a trusted TLS proxy: %d, want 204 (allowed, no channel)", code)
	}
	if code, _, _ := do(t, "GET", "/events/", "", "Origin", "https://localhost:9080"); code != 403 {
		t.Fatalf("https origin over plain http without a proxy's word: %d, want 403", code)
	}
	load(t, site(""))
	if code, _, _ := do(t, "GET", "/events/", "", "Origin", "https://localhost:9080", "X-Forwarded-Proto", "https"); code != 403 {
		t.Fatalf("X-Forwarded-Proto from an untrusted client: %d, want 403", code)
	}
}

func TestStarOriginAllowsAny(t *testing.T) {
	load(t, site("allowed_origins * https://app.example.com"))
	c := subscribe(t, "/events/a", "Origin", "https://anything.test")
	if h := c.resp.Header; h.Get("Access-Control-Allow-Origin") != "*" || h.Get("Access-Control-Allow-Credentials") != "" {
		t.Fatalf("any origin: headers %v", h)
	}
	c = subscribe(t, "/events/a", "Origin", "https://app.example.com")
	if h := c.resp.Header; h.Get("Access-Control-Allow-Origin") != "https://app.example.com" || h.Get("Access-Control-Allow-Credentials") != "true" {
		t.Fatalf("listed origin: headers %v", h)
	}
}

func TestChannelsFromQueryAndTemplate(t *testing.T) {
	load(t, site("publish_key k"))
	multi := subscribe(t, "/events/ignored?channel=q1,q2&channel=q3")
	for _, ch := range []string{"q1", "q2", "q3", "ignored"} {
		do(t, "POST", "/events/"+ch, "from "+ch, "Authorization", "Bearer k")
	}
	for _, ch := range []string{"q1", "q2", "q3"} {
		if ev := multi.next(t); ev.Data != "from "+ch {
			t.Fatalf("got %+v, want from %s", ev, ch)
		}
	}
	multi.nothing(t, 200*time.Millisecond)

	load(t, "http://localhost:9080 {\n\tsse_relay /events/* {\n\t\tchannels {http.request.header.X-Sse-Channels}\n\t\tpublish_key k\n\t}\n}\n")
	tc := subscribe(t, "/events/whatever", "X-Sse-Channels", "t1, t2")
	do(t, "POST", "/events/?channel=t2", "two", "Authorization", "Bearer k")
	if ev := tc.next(t); ev.Data != "two" {
		t.Fatalf("template channels: %+v", ev)
	}
	if code, _, _ := do(t, "GET", "/events/whatever", ""); code != 204 {
		t.Fatalf("template that resolves to nothing: %d, want 204", code)
	}
	if code, _, body := do(t, "GET", "/events/whatever", "", "X-Sse-Channels", "ok, bad name"); code != 400 || !strings.Contains(body, "whitespace") {
		t.Fatalf("template that resolves to a bad name: %d %q, want 400", code, body)
	}
}

// TestPublishBodyCut: a POST whose body ends before its Content-Length is
// a 400, and nothing is published.
func TestPublishBodyCut(t *testing.T) {
	load(t, site("publish_key k"))
	sub := subscribe(t, "/events/cut")
	c, err := net.Dial("tcp", "localhost:9080")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "POST /events/cut HTTP/1.1\r\nHost: localhost:9080\r\nAuthorization: Bearer k\r\nContent-Length: 100\r\n\r\nonly part")
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

// TestSlowSubscriberCutOff has one client that never reads. It is cut off
// while a reading client gets every event promptly.
func TestSlowSubscriberCutOff(t *testing.T) {
	load(t, site("publish_key k\nbuffer 32\nwrite_timeout 1s"))
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
			select {
			case ev, ok := <-fast.events:
				if !ok {
					t.Errorf("fast client's stream ended after %d events", i)
					return
				}
				if len(ev.Data) != len(payload) {
					t.Errorf("event %d has %d bytes", i, len(ev.Data))
				}
			case <-time.After(10 * time.Second):
				t.Errorf("fast client: no event %d within 10s", i)
				return
			}
			got <- time.Since(start)
		}
	}()
	for i := 0; i < n; i++ {
		if code, _, body := do(t, "POST", "/events/big", payload, "Authorization", "Bearer k"); code != 202 {
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

// loadFails posts config to the running test Caddy's admin API and returns
// why it was refused; the config in force stays.
func loadFails(t *testing.T, config string) string {
	t.Helper()
	resp, err := http.Post("http://localhost:2999/load", "text/caddyfile", strings.NewReader(globals+config))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusOK {
		t.Fatalf("config loaded, want it refused:\n%s", config)
	}
	return string(b)
}

// TestEmptyPlaceholderRefused: a token secret or a broker from an unset
// environment variable stops the config, instead of quietly turning token
// checks off or falling back to memory://. (An unset publish_key leaves
// POST off, which fails closed: TestPostWithoutKeyIs405's config.)
func TestEmptyPlaceholderRefused(t *testing.T) {
	load(t, site("jwt_secret "+strings.Repeat("s", 32)))
	for _, line := range []string{
		"jwt_secret {env.SSE_RELAY_TEST_UNSET}",
		"broker {env.SSE_RELAY_TEST_UNSET}",
	} {
		if why := loadFails(t, site(line)); !strings.Contains(why, "environment variable") {
			t.Errorf("%s: refused with %q, want the unset variable named", line, why)
		}
	}
	// The config in force still wants tokens.
	if code, _, _ := do(t, "GET", "/events/a", ""); code != 401 {
		t.Fatalf("after the refused loads: %d, want 401", code)
	}
}

// TestPostToSeveralChannels: one POST to ?channel=a,b reaches the
// subscribers of each, on every broker; the broker publishes it as one
// statement or transaction (broker.TestPublishSeveralIsAllOrNone).
func TestPostToSeveralChannels(t *testing.T) {
	for _, url := range []string{servers.PG.URL(), servers.Redis.URL(), "memory://"} {
		load(t, site("broker "+url+"\npublish_key k"))
		both := subscribe(t, "/events/?channel=many.a,many.b")
		onlyB := subscribe(t, "/events/many.b")
		if code, _, body := do(t, "POST", "/events/?channel=many.a,many.b", "to both", "Authorization", "Bearer k"); code != 202 {
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
