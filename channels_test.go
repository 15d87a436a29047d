package sserelay

import (
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/sse-relay/caddy-sse-relay/broker"
)

func TestPostgresFoldsCase(t *testing.T) {
	load(t, site("broker "+servers.PG(t).URL()+"\npublish_key "+testPublishKey))
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
		code, _, body = do(t, "POST", path, "x", "Authorization", "Bearer "+testPublishKey)
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

func TestChannelsFromQueryAndTemplate(t *testing.T) {
	load(t, site("publish_key "+testPublishKey))
	multi := subscribe(t, "/events/ignored?channel=q1,q2&channel=q3")
	for _, ch := range []string{"q1", "q2", "q3", "ignored"} {
		do(t, "POST", "/events/"+ch, "from "+ch, "Authorization", "Bearer "+testPublishKey)
	}
	for _, ch := range []string{"q1", "q2", "q3"} {
		if ev := multi.next(t); ev.Data != "from "+ch {
			t.Fatalf("got %+v, want from %s", ev, ch)
		}
	}
	multi.nothing(t, 200*time.Millisecond)

	load(t, "http://localhost:9080 {\n\tsse_relay /events/* {\n\t\tchannels {http.request.header.X-Sse-Channels}\n\t\tpublish_key "+testPublishKey+"\n\t}\n}\n")
	tc := subscribe(t, "/events/whatever", "X-Sse-Channels", "t1, t2")
	do(t, "POST", "/events/?channel=t2", "two", "Authorization", "Bearer "+testPublishKey)
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

// FuzzChannels feeds arbitrary query values and paths to the channel
// resolver: whatever it accepts is within the limits and free of
// characters that could confuse a broker, a log or SQL.
func FuzzChannels(f *testing.F) {
	for _, s := range []string{"orders", "a,b", `x"; DROP TABLE t; --`, "a\x00b", "\xff", "tenant.7.*", strings.Repeat("z", 300)} {
		f.Add(s, "/events/"+s)
	}
	mem, _ := broker.Open("memory://", nil, broker.History{})
	h := &Handler{MaxChannels: 16, rules: channelRules{max: 16, limits: mem.Limits()}}
	f.Fuzz(func(t *testing.T, query, path string) {
		for _, r := range []string{"/events/x?channel=" + url.QueryEscape(query), "/events/" + url.PathEscape(path)} {
			req := httptest.NewRequest("GET", "http://localhost"+"/", nil)
			u, err := url.Parse("http://localhost" + r)
			if err != nil {
				continue
			}
			req.URL = u
			chs, err := h.requestChannels(req)
			if err != nil {
				continue
			}
			if len(chs) > h.MaxChannels {
				t.Fatalf("%d channels accepted", len(chs))
			}
			for _, ch := range chs {
				if ch == "" || len(ch) > 255 || !utf8.ValidString(ch) || strings.ContainsAny(ch, "\"';\\,") {
					t.Fatalf("accepted channel %q", ch)
				}
				for _, c := range ch {
					if unicode.IsControl(c) || unicode.IsSpace(c) {
						t.Fatalf("accepted channel %q", ch)
					}
				}
			}
		}
	})
}

// TestChannelRules: the rules every stream and publish goes through, on a
// broker that folds case (Postgres's limits) and one that does not
// (Redis's). Pure: no server.
func TestChannelRules(t *testing.T) {
	pg := channelRules{max: 3, limits: broker.Limits{MaxChannel: 63, FoldsCase: true}}
	rd := channelRules{max: 3, limits: broker.Limits{MaxChannel: 255}}
	cases := []struct {
		rules channelRules
		raw   []string
		want  string // the list joined by |, or the error's start
	}{
		{pg, []string{"orders"}, "orders"},
		{pg, []string{"a, b", "b", " ", "c"}, "a|b|c"},
		{pg, []string{"a,b,c,d"}, "too many channels: 4, at most 3"},
		{pg, []string{strings.Repeat("x", 64)}, "channel name too long: 64 bytes, at most 63"},
		{rd, []string{strings.Repeat("x", 64)}, strings.Repeat("x", 64)},
		{rd, []string{strings.Repeat("x", 256)}, "channel name too long"},
		{pg, []string{"a\x00b"}, "channel name has a control character"},
		{pg, []string{"a\u00a0b"}, "channel name has whitespace"},
		{pg, []string{"a\xffb"}, "channel name is not valid UTF-8"},
		{pg, []string{`x";DROP`}, "channel name has a forbidden character"},
		{pg, []string{`a\b`}, "channel name has a forbidden character"},
		{pg, []string{"Orders,orders"}, `channels "Orders" and "orders" both receive NOTIFY orders`},
		{pg, []string{"sse_relay"}, `channel name "sse_relay" is reserved`},
		{rd, []string{"sse-relay:{orders}"}, `channel name "sse-relay:{orders}" is reserved`},
		{rd, []string{"sse-relay"}, "sse-relay"},
		{rd, []string{"Orders,orders"}, "Orders|orders"},
		{pg, nil, ""},
	}
	for _, c := range cases {
		got, err := c.rules.check(c.raw)
		s := strings.Join(got, "|")
		if err != nil {
			s = err.Error()
		}
		if !strings.HasPrefix(s, c.want) || (c.want == "" && s != "") {
			t.Errorf("check(%q) fold=%v: %q, want %q", c.raw, c.rules.limits.FoldsCase, s, c.want)
		}
	}
}

// TestChannelRulesHeard: on Postgres a stream of user.Alice also hears
// the unquoted NOTIFY of user.alice, so a token must grant both; on Redis
// a name is only itself. Pure: no server.
func TestChannelRulesHeard(t *testing.T) {
	pg := channelRules{limits: broker.Limits{FoldsCase: true}}
	rd := channelRules{}
	if got := strings.Join(pg.heard([]string{"user.Alice", "news"}), "|"); got != "user.Alice|news|user.alice" {
		t.Fatalf("postgres: %s", got)
	}
	if got := strings.Join(rd.heard([]string{"user.Alice"}), "|"); got != "user.Alice" {
		t.Fatalf("redis: %s", got)
	}
}

// TestChannelPrefix: a prefix maps a route's names to the broker's, and
// leaves a name the room the broker's limit gives. Pure: no server.
func TestChannelPrefix(t *testing.T) {
	r := channelRules{max: 4, limits: broker.Limits{MaxChannel: 63, FoldsCase: true}, prefix: "app."}
	if got := strings.Join(r.onBroker([]string{"a", "user.42"}), "|"); got != "app.a|app.user.42" {
		t.Fatalf("onBroker: %s", got)
	}
	if _, err := r.check([]string{strings.Repeat("x", 59)}); err != nil {
		t.Fatalf("59 bytes with a 4-byte prefix: %v", err)
	}
	if _, err := r.check([]string{strings.Repeat("x", 60)}); err == nil {
		t.Fatal("60 bytes with a 4-byte prefix fit in Postgres's 63")
	}
	for prefix, ok := range map[string]bool{"": true, "app.": true, "tenant-7:": true, "App.": false, "a b": false, "x;": false, strings.Repeat("p", 63): false} {
		if err := checkPrefix(prefix); (err == nil) != ok {
			t.Errorf("checkPrefix(%q) = %v", prefix, err)
		}
	}
}
