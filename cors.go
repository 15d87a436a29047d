package sserelay

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
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

// allows reports whether a request with this Origin may proceed. With no
// list configured only the same origin is allowed.
func (s originSet) allows(origin string, r *http.Request) bool {
	if s.any {
		return true
	}
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
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		return o == scheme+"://"+strings.ToLower(r.Host)
	}
	return false
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
