package sserelay

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
)

// adapt runs the Caddyfile adapter on a site whose sse_relay block holds
// lines (starting on line 5 of the file).
func adapt(t *testing.T, global, lines string) (map[string]any, error) {
	t.Helper()
	src := "{\n\tadmin off\n" + global + "}\nhttp://localhost:9999 {\n\tsse_relay /events/* {\n" + lines + "\n\t}\n\treverse_proxy 127.0.0.1:8000\n}\n"
	out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(src), nil)
	if err != nil {
		return nil, err
	}
	var cfg map[string]any
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatal(err)
	}
	return cfg, nil
}

// findHandler walks the adapted JSON for the object with handler sse_relay.
func findHandler(v any) map[string]any {
	switch x := v.(type) {
	case map[string]any:
		if x["handler"] == "sse_relay" {
			return x
		}
		for _, child := range x {
			if h := findHandler(child); h != nil {
				return h
			}
		}
	case []any:
		for _, child := range x {
			if h := findHandler(child); h != nil {
				return h
			}
		}
	}
	return nil
}

func TestCaddyfileSubdirectives(t *testing.T) {
	cases := []struct {
		line, field string
		want        any
	}{
		{"broker redis://redis:6379/0", "broker", "redis://redis:6379/0"},
		{"broker redis://redis:6379/0 cache", "broker_name", "cache"},
		{"history 10000", "history", float64(10000)},
		{"history 10000 24h", "history_max_age", float64(24 * 3600e9)},
		{"channels {http.request.header.X-Sse-Channels}", "channels", "{http.request.header.X-Sse-Channels}"},
		{"allowed_origins https://a.example.com https://*.example.org", "allowed_origins", []any{"https://a.example.com", "https://*.example.org"}},
		{"heartbeat 20s", "heartbeat", float64(20e9)},
		{"heartbeat 0", "heartbeat", float64(0)},
		{"retry 3s", "retry", float64(3e9)},
		{"replay 50", "replay", float64(50)},
		{"replay 0", "replay", float64(0)},
		{"replay_max_bytes 8MiB", "replay_max_bytes", float64(8 << 20)},
		{"linger 1m", "linger", float64(60e9)},
		{"max_channels 4", "max_channels", float64(4)},
		{"buffer 64", "buffer", float64(64)},
		{"publish_key {env.SSE_RELAY_PUBLISH_KEY}", "publish_key", "{env.SSE_RELAY_PUBLISH_KEY}"},
		{"jwt_secret {env.JWT}", "jwt_secret", "{env.JWT}"},
		{"jwt_public_key /etc/caddy/jwt.pem", "jwt_public_key", "/etc/caddy/jwt.pem"},
		{"jwt_cookie sse", "jwt_cookie", "sse"},
		{"jwt_audience https://app.example.com", "jwt_audience", "https://app.example.com"},
		{"jwt_issuer {env.ISSUER}", "jwt_issuer", "{env.ISSUER}"},
		{"max_connections 500", "max_connections", float64(500)},
		{"max_connections_per_ip 20", "max_connections_per_ip", float64(20)},
		{"write_timeout 5s", "write_timeout", float64(5e9)},
		{"reload_close_window 2s", "reload_close_window", float64(2e9)},
		{"reload_close_window 0", "reload_close_window", float64(0)}, // end at once, not the default
		{"allowed_origins https://a.example.com\n\t\tallowed_origins https://b.example.com", "allowed_origins",
			[]any{"https://a.example.com", "https://b.example.com"}}, // lines add up
	}
	for _, c := range cases {
		cfg, err := adapt(t, "", "\t\t"+c.line)
		if err != nil {
			t.Errorf("%s: %v", c.line, err)
			continue
		}
		h := findHandler(cfg)
		if h == nil {
			t.Fatalf("%s: no sse_relay handler in %v", c.line, cfg)
		}
		got, _ := json.Marshal(h[c.field])
		want, _ := json.Marshal(c.want)
		if string(got) != string(want) {
			t.Errorf("%s: %s = %s, want %s", c.line, c.field, got, want)
		}
	}
}

func TestCaddyfileGlobalOptionAndOrder(t *testing.T) {
	cfg, err := adapt(t, "\tsse_relay {\n\t\tbroker postgres://relay@db/app main\n\t}\n", "")
	if err != nil {
		t.Fatal(err)
	}
	apps := cfg["apps"].(map[string]any)
	if app := apps["sse_relay"].(map[string]any); app["broker"] != "postgres://relay@db/app" || app["broker_name"] != "main" {
		t.Fatalf("global broker %v", app)
	}
	// No order line, yet sse_relay comes before reverse_proxy (and respond).
	src := "http://localhost:9999 {\n\trespond /x \"x\"\n\treverse_proxy 127.0.0.1:8000\n\tsse_relay /events/*\n}\n"
	out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(src), nil)
	if err != nil {
		t.Fatal(err)
	}
	s := string(out)
	i, j, k := strings.Index(s, `"sse_relay"`), strings.Index(s, `"static_response"`), strings.Index(s, `"reverse_proxy"`)
	if i < 0 || j < 0 || k < 0 || i > j || i > k {
		t.Fatalf("sse_relay is not ordered before respond and reverse_proxy:\n%s", s)
	}
}

func TestCaddyfileMalformed(t *testing.T) {
	cases := []struct {
		global, lines string
		line          int
	}{
		{"", "\t\tcolour red", 6},
		{"", "\t\tbroker", 6},
		{"", "\t\tbroker a b c", 6},
		{"", "\t\thistory", 6},
		{"", "\t\thistory 0", 6},
		{"", "\t\thistory lots", 6},
		{"", "\t\thistory 10 forever", 6},
		{"", "\t\thistory 10 1h 2h", 6},
		{"\tsse_relay {\n\t\tbroker a b c\n\t}\n", "", 4},
		{"", "\t\theartbeat soon", 6},
		{"", "\t\theartbeat -1s", 6},
		{"", "\t\tretry often", 6},
		{"", "\t\treplay -1", 6},
		{"", "\t\treplay x", 6},
		{"", "\t\treplay_max_bytes lots", 6},
		{"", "\t\tmax_channels 0", 6},
		{"", "\t\tbuffer 0", 6},
		{"", "\t\tbuffer abc", 6},
		{"", "\t\tmax_connections -5", 6},
		{"", "\t\tallowed_origins", 6},
		{"", "\t\tlinger", 6},
		{"", "\t\tjwt_audience", 6},
		{"", "\t\tjwt_issuer a b", 6},
		{"", "\t\twrite_timeout 0", 6},
		{"", "\t\tallowed_origins example.com", 6},
		{"", "\t\tallowed_origins https://a.*.example.com", 6},
		{"\tsse_relay {\n\t\tcolour red\n\t}\n", "", 4},
		{"\tsse_relay extra {\n\t}\n", "", 3},
	}
	for _, c := range cases {
		_, err := adapt(t, c.global, c.lines)
		if err == nil {
			t.Errorf("%q %q adapted without an error", c.global, c.lines)
			continue
		}
		if !strings.Contains(err.Error(), fmt.Sprintf(":%d", c.line)) {
			t.Errorf("%q %q: error %q does not name line %d", c.global, c.lines, err, c.line)
		}
	}
	// An argument after the matcher on the directive line.
	src := "http://localhost:9999 {\n\tsse_relay /events/* extra\n}\n"
	if _, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(src), nil); err == nil || !strings.Contains(err.Error(), ":2") {
		t.Errorf("extra argument: %v", err)
	}
}
