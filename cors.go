package sserelay

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// originSet is the parsed allowed_origins list.
type originSet struct {
	any      bool
	exact    map[string]bool
	suffixes []originSuffix // from https://*.example.com
}

type originSuffix struct{ scheme, suffix string }

func parseOrigins(list []string) (originSet, error) {
	s := originSet{exact: map[string]bool{}}
	for _, o := range list {
		if o == "*" {
			s.any = true
			continue
		}
		u, err := url.Parse(o)
		if err != nil || u.Scheme == "" || u.Host == "" || (u.Path != "" && u.Path != "/") {
			return s, fmt.Errorf("allowed_origins: %q is not an origin like https://app.example.com", o)
		}
		host := strings.ToLower(u.Host)
		if strings.HasPrefix(host, "*.") {
			s.suffixes = append(s.suffixes, originSuffix{strings.ToLower(u.Scheme), host[1:]})
			continue
		}
		if strings.Contains(host, "*") {
			return s, fmt.Errorf("allowed_origins: %q: a wildcard may only be the first label (https://*.example.com)", o)
		}
		s.exact[strings.ToLower(u.Scheme)+"://"+host] = true
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
// when no list names any.
func (s originSet) listed(origin string, r *http.Request) bool {
	o := strings.ToLower(origin)
	if s.exact[o] {
		return true
	}
	if scheme, host, ok := strings.Cut(o, "://"); ok {
		for _, suf := range s.suffixes {
			if scheme == suf.scheme && strings.HasSuffix(host, suf.suffix) && len(host) > len(suf.suffix) {
				return true
			}
		}
	}
	if len(s.exact) == 0 && len(s.suffixes) == 0 {
		return o == requestScheme(r)+"://"+strings.ToLower(r.Host)
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
