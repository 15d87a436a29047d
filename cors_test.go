package sserelay

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddytest"
)

func TestCORS(t *testing.T) {
	load(t, site("publish_key "+testPublishKey+"\nallowed_origins https://app.example.com https://*.example.org"))
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
	// A string that ends in the wildcard's name is not an origin under it.
	for _, evil := range []string{"https://evil.test?.example.org", "https://evil.test/.example.org", "https://a.b.example.org"} {
		if code, hdr, _ := do(t, "GET", "/events/a", "", "Origin", evil); code != 403 || hdr.Get("Access-Control-Allow-Origin") != "" {
			t.Fatalf("Origin %s: %d %v, want 403 without CORS headers", evil, code, hdr)
		}
	}
	c := subscribe(t, "/events/a", "Origin", "https://tenant.example.org")
	h := c.Response.Header
	if h.Get("Access-Control-Allow-Origin") != "https://tenant.example.org" || h.Get("Access-Control-Allow-Credentials") != "true" || !strings.Contains(h.Get("Vary"), "Origin") {
		t.Fatalf("stream CORS headers %v", h)
	}
}

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

// TestStarOriginAllowsAny: `*` lets any origin read, but without
// credentials, so another site's page cannot ride the visitor's cookies;
// origins listed beside it keep theirs.
func TestStarOriginAllowsAny(t *testing.T) {
	load(t, site("allowed_origins * https://app.example.com"))
	c := subscribe(t, "/events/a", "Origin", "https://anything.test")
	if h := c.Response.Header; h.Get("Access-Control-Allow-Origin") != "*" || h.Get("Access-Control-Allow-Credentials") != "" {
		t.Fatalf("any origin: headers %v", h)
	}
	c = subscribe(t, "/events/a", "Origin", "https://app.example.com")
	if h := c.Response.Header; h.Get("Access-Control-Allow-Origin") != "https://app.example.com" || h.Get("Access-Control-Allow-Credentials") != "true" {
		t.Fatalf("listed origin: headers %v", h)
	}
}

// TestOriginsParse: what allowed_origins accepts, and the one-line error
// for what it does not. Pure: no server.
func TestOriginsParse(t *testing.T) {
	for _, ok := range [][]string{
		{"https://app.example.com"}, {"https://*.example.com"}, {"*"}, {"http://localhost:8080", "https://app.example.com/"},
		{"https://*.example.com:8443/"}, {"http://[::1]:8080"},
	} {
		if _, err := parseOrigins(ok); err != nil {
			t.Errorf("parseOrigins(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"app.example.com", "https://", "https://app.example.com/path", "https://app.*.example.com", "https://a*.example.com",
		"https://app.example.com?x", "https://user@app.example.com", "https://*.example.com/x", "https://*.", "https://*", "https://app.example.com:port"} {
		if _, err := parseOrigins([]string{bad}); err == nil {
			t.Errorf("parseOrigins(%q) accepted it", bad)
		}
	}
}

// TestOriginMatching: which Origin headers a list lets through, and with
// which CORS answer. Pure: requests are built, not sent.
func TestOriginMatching(t *testing.T) {
	cases := []struct {
		list        []string
		origin      string
		host        string
		allow, cred string // "" allow: refused
	}{
		{nil, "http://relay.test", "relay.test", "http://relay.test", "true"},
		{nil, "https://relay.test", "relay.test", "", ""}, // scheme differs from the request's
		{nil, "http://other.test", "relay.test", "", ""},
		{[]string{"https://app.example.com"}, "https://app.example.com", "relay.test", "https://app.example.com", "true"},
		{[]string{"https://app.example.com"}, "HTTPS://APP.EXAMPLE.COM", "relay.test", "HTTPS://APP.EXAMPLE.COM", "true"},
		{[]string{"https://app.example.com"}, "http://relay.test", "relay.test", "", ""}, // a list replaces same-origin
		{[]string{"https://*.example.com"}, "https://a.example.com", "relay.test", "https://a.example.com", "true"},
		{[]string{"https://*.example.com"}, "https://example.com", "relay.test", "", ""},
		{[]string{"https://*.example.com"}, "http://a.example.com", "relay.test", "", ""},
		{[]string{"https://*.example.com"}, "https://a.example.com.evil.test", "relay.test", "", ""},
		// The * of a wildcard is one DNS label, and an Origin is
		// scheme://host[:port], nothing else: no string that merely ends
		// in the listed name.
		{[]string{"https://*.example.com"}, "https://evil.test?.example.com", "relay.test", "", ""},
		{[]string{"https://*.example.com"}, "https://evil.test/.example.com", "relay.test", "", ""},
		{[]string{"https://*.example.com"}, "https://evil.test#.example.com", "relay.test", "", ""},
		{[]string{"https://*.example.com"}, "https://evil.test\\.example.com", "relay.test", "", ""},
		{[]string{"https://*.example.com"}, "https://evil.test@a.example.com", "relay.test", "", ""},
		{[]string{"https://*.example.com"}, "https://a.b.example.com", "relay.test", "", ""},
		{[]string{"https://*.example.com"}, "https://.example.com", "relay.test", "", ""},
		{[]string{"https://*.example.com"}, "https://a_b.example.com", "relay.test", "", ""},
		{[]string{"https://*.example.com"}, "https://a b.example.com", "relay.test", "", ""},
		{[]string{"https://*.example.com"}, "https://a.example.com.", "relay.test", "", ""},
		{[]string{"https://*.example.com"}, "https://a.example.com/", "relay.test", "", ""},
		{[]string{"https://*.example.com"}, "https://a.example.com:8443", "relay.test", "", ""},
		{[]string{"https://*.example.com"}, "https://a.example.com:", "relay.test", "", ""},
		{[]string{"https://*.example.com"}, "https://A-1.Example.com", "relay.test", "https://A-1.Example.com", "true"},
		{[]string{"https://*.example.com:8443"}, "https://a.example.com:8443", "relay.test", "https://a.example.com:8443", "true"},
		{[]string{"https://*.example.com:8443"}, "https://a.example.com", "relay.test", "", ""},
		{[]string{"https://app.example.com"}, "https://app.example.com/", "relay.test", "", ""},
		{[]string{"https://app.example.com"}, "https://app.example.com?", "relay.test", "", ""},
		{[]string{"http://[::1]:8080"}, "http://[::1]:8080", "relay.test", "http://[::1]:8080", "true"},
		{nil, "http://relay.test/", "relay.test", "", ""},
		{nil, "http://relay.test:9080", "relay.test:9080", "http://relay.test:9080", "true"},
		{[]string{"*"}, "https://anyone.test", "relay.test", "*", ""},
		{[]string{"*"}, "null", "relay.test", "*", ""}, // an opaque origin reads without credentials
		{[]string{"*", "https://*.example.com"}, "https://evil.test?.example.com", "relay.test", "*", ""},
		{[]string{"*", "https://app.example.com"}, "https://app.example.com", "relay.test", "https://app.example.com", "true"},
	}
	for _, c := range cases {
		set, err := parseOrigins(c.list)
		if err != nil {
			t.Fatal(err)
		}
		r := httptest.NewRequest("GET", "http://"+c.host+"/events/a", nil)
		h := http.Header{}
		ok := set.corsHeaders(h, c.origin, r)
		if ok != (c.allow != "") || h.Get("Access-Control-Allow-Origin") != c.allow || h.Get("Access-Control-Allow-Credentials") != c.cred {
			t.Errorf("%q, origin %q: allowed %v, headers %v; want %q credentials %q", c.list, c.origin, ok, h, c.allow, c.cred)
		}
	}
}
