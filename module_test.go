package sserelay

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

func TestRefusals(t *testing.T) {
	load(t, site("publish_key "+testPublishKey+"\nmax_channels 3\nallowed_origins https://app.example.com https://*.example.org"))
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
		{"post bad payload", "POST", "/events/a", `{"event":"a\nb","data":"x"}`, []string{"Authorization", "Bearer " + testPublishKey}, 400},
		{"post bad retry", "POST", "/events/a", `{"retry":"x","data":"x"}`, []string{"Authorization", "Bearer " + testPublishKey}, 400},
		{"post the relay's reset event", "POST", "/events/a", `{"event":"sse-relay-reset","data":"{\"channels\":[\"a\"],\"reason\":\"unknown-id\"}"}`, []string{"Authorization", "Bearer " + testPublishKey}, 400},
		{"post no channel", "POST", "/events/", "x", []string{"Authorization", "Bearer " + testPublishKey}, 400},
		{"post bad channel", "POST", "/events/?channel=a;b", "x", []string{"Authorization", "Bearer " + testPublishKey}, 400},
		{"post too big", "POST", "/events/a", strings.Repeat("x", 64<<10+1), []string{"Authorization", "Bearer " + testPublishKey}, 413},
		{"post origin refused", "POST", "/events/a", "x", []string{"Authorization", "Bearer " + testPublishKey, "Origin", "https://evil.com"}, 403},
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
	code, _, _ := do(t, "POST", "/events/a", strings.Repeat("x", 64<<10), "Authorization", "Bearer "+testPublishKey)
	if code != 202 {
		t.Errorf("a payload at the limit: %d, want 202", code)
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

// TestHistoryNeedsItsSchema: history on a Postgres without the sse_relay
// schema is refused at config time, with the command that creates it;
// history on memory:// is refused too, and so is a max age of 0.
func TestHistoryNeedsItsSchema(t *testing.T) {
	load(t, site(""))
	admin := pgConn(t)
	pgExec(t, admin, `DROP DATABASE IF EXISTS nolog`)
	pgExec(t, admin, `CREATE DATABASE nolog`)
	nolog := strings.Replace(servers.PG(t).URL(), "/postgres?", "/nolog?", 1)
	for config, want := range map[string]string{
		site("broker " + nolog + "\nhistory 10"):    "caddy sse-relay schema --apply",
		site("history 10"):                          "history needs a broker that can keep it",
		site("broker " + nolog + "\nhistory 10 0s"): "want a positive max age",
	} {
		if body := loadFails(t, config); !strings.Contains(body, want) {
			t.Errorf("refused with %q, want it to say %q", body, want)
		}
	}
}

// TestShortPublishKeyRefused: a publish_key under 32 bytes stops the
// config, as a short jwt_secret does, whether written out or from the
// environment; the config in force keeps publishing with its own key.
func TestShortPublishKeyRefused(t *testing.T) {
	load(t, site("publish_key "+testPublishKey))
	t.Setenv("SSE_RELAY_TEST_SHORT_KEY", "dev-publish-key")
	for _, line := range []string{
		"publish_key k",
		"publish_key " + testPublishKey[:31],
		"publish_key {env.SSE_RELAY_TEST_SHORT_KEY}",
	} {
		if why := loadFails(t, site(line)); !strings.Contains(why, "publish_key must be at least 32 bytes") {
			t.Errorf("%s: refused with %q, want the 32-byte minimum named", line, why)
		}
	}
	if code, _, body := do(t, "POST", "/events/a", "x", "Authorization", "Bearer "+testPublishKey); code != 202 {
		t.Fatalf("after the refused loads: %d %q, want 202", code, body)
	}
	if code, _, _ := do(t, "POST", "/events/a", "x", "Authorization", "Bearer k"); code != 401 {
		t.Fatalf("a short key after the refused loads: %d, want 401", code)
	}
}
