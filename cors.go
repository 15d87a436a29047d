package sserelay

import (
	"fmt"
	"net/http"
	"net/netip"
	"strings"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// originSet is the parsed allowed_origins list.
type originSet struct {
	any       bool
	exact     map[string]bool // scheme://host[:port]
	wildcards []origin        // from https://*.example.com: host is example.com
}

// origin is scheme://host[:port], lowercased: what a browser sends as
// Origin and what allowed_origins lists.
type origin struct{ scheme, host, port string }

func (o origin) String() string {
	if o.port == "" {
		return o.scheme + "://" + o.host
	}
	return o.scheme + "://" + o.host + ":" + o.port
}

// parseOrigin reads scheme://host[:port] and nothing else: no user, path,
// query or fragment, which a browser never puts in Origin and which would
// let a string like https://evil.test?.example.com end in a listed name.
// The host is dot-separated labels of letters, digits, hyphens and
// underscores, or a bracketed IPv6 address.
func parseOrigin(s string) (origin, bool) {
	scheme, rest, ok := strings.Cut(strings.ToLower(s), "://")
	if !ok || !isScheme(scheme) {
		return origin{}, false
	}
	host, port := rest, ""
	if i := strings.LastIndexByte(rest, ':'); i >= 0 && !strings.HasSuffix(rest, "]") {
		host, port = rest[:i], rest[i+1:]
		if port == "" || len(port) > 5 || strings.Trim(port, "0123456789") != "" {
			return origin{}, false
		}
	}
	if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		if a, err := netip.ParseAddr(host[1 : len(host)-1]); err != nil || !a.Is6() || a.Zone() != "" {
			return origin{}, false
		}
		return origin{scheme, host, port}, true
	}
	for _, label := range strings.Split(host, ".") {
		if label == "" || strings.Trim(label, "abcdefghijklmnopqrstuvwxyz0123456789-_") != "" {
			return origin{}, false
		}
	}
	return origin{scheme, host, port}, true
}

// isScheme: a letter, then letters, digits, +, - or . (RFC 3986).
func isScheme(s string) bool {
	return s != "" && s[0] >= 'a' && s[0] <= 'z' &&
		strings.Trim(s, "abcdefghijklmnopqrstuvwxyz0123456789+-.") == ""
}

// isDNSLabel: what a wildcard's * stands for, one label of letters,
// digits and hyphens.
func isDNSLabel(s string) bool {
	return s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyz0123456789-") == ""
}

func parseOrigins(list []string) (originSet, error) {
	s := originSet{exact: map[string]bool{}}
	for _, o := range list {
		if o == "*" {
			s.any = true
			continue
		}
		// A trailing slash is tolerated in the config, as people paste it.
		trimmed, wildcard := strings.TrimSuffix(o, "/"), false
		if scheme, domain, ok := strings.Cut(trimmed, "://*."); ok {
			trimmed, wildcard = scheme+"://"+domain, true
		}
		if strings.Contains(trimmed, "*") {
			return s, fmt.Errorf("allowed_origins: %q: a wildcard may only be the first label (https://*.example.com)", o)
		}
		parsed, ok := parseOrigin(trimmed)
		if !ok {
			return s, fmt.Errorf("allowed_origins: %q is not an origin like https://app.example.com", o)
		}
		if wildcard {
			s.wildcards = append(s.wildcards, parsed)
			continue
		}
		s.exact[parsed.String()] = true
	}
	return s, nil
}

// corsHeaders sets the CORS answer for origin, or reports false when the
// origin may not proceed. A listed origin (or the same origin, with no
// list) is echoed with credentials; `*` lets any other origin read without
// them, so a page elsewhere cannot use the visitor's cookies here.
func (s originSet) corsHeaders(h http.Header, origin string, r *http.Request) bool {
	switch {
	case s.listed(origin, r):
		h.Set("Access-Control-Allow-Origin", origin)
		h.Set("Access-Control-Allow-Credentials", "true")
	case s.any:
		h.Set("Access-Control-Allow-Origin", "*")
	default:
		return false
	}
	return true
}

// listed reports whether origin is one of the list's, or the same origin
// when no list names any. An Origin that is not scheme://host[:port] is
// never listed. A wildcard's * stands for exactly one DNS label.
func (s originSet) listed(raw string, r *http.Request) bool {
	o, ok := parseOrigin(raw)
	if !ok {
		return false
	}
	if s.exact[o.String()] {
		return true
	}
	for _, w := range s.wildcards {
		label, rest, _ := strings.Cut(o.host, ".")
		if o.scheme == w.scheme && o.port == w.port && rest == w.host && isDNSLabel(label) {
			return true
		}
	}
	if len(s.exact) == 0 && len(s.wildcards) == 0 {
		return o.String() == requestScheme(r)+"://"+strings.ToLower(r.Host)
	}
	return false
}

// requestScheme is the scheme the browser used: Caddy's own, or, when the
// request came through one of Caddy's trusted_proxies, the proxy's
// X-Forwarded-Proto (a load balancer that ends TLS forwards plain HTTP).
func requestScheme(r *http.Request) string {
	if trusted, _ := caddyhttp.GetVar(r.Context(), caddyhttp.TrustedProxyVarKey).(bool); trusted {
		if p := strings.ToLower(strings.TrimSpace(strings.Split(r.Header.Get("X-Forwarded-Proto"), ",")[0])); p == "http" || p == "https" {
			return p
		}
	}
	if r.TLS != nil {
		return "https"
	}
	return "http"
}

// servePreflight answers OPTIONS; the origin was already checked.
func (h *Handler) servePreflight(w http.ResponseWriter, r *http.Request) {
	hdr := w.Header()
	hdr.Set("Allow", h.allowed())
	if r.Header.Get("Origin") != "" && r.Header.Get("Access-Control-Request-Method") != "" {
		hdr.Set("Access-Control-Allow-Methods", h.allowed())
		hdr.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, Last-Event-ID, Cache-Control")
		hdr.Set("Access-Control-Max-Age", "600")
	}
	w.WriteHeader(http.StatusNoContent)
}
