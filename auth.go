package sserelay

import (
	"crypto/elliptic"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// verifier checks subscriber and publisher JWTs. The accepted algorithm
// is pinned by the key's type, so a token cannot pick a weaker one
// (alg "none", or HS256 keyed with a public key).
type verifier struct {
	key     any
	methods []string
}

// claims are what a token may grant: channels to read and to publish on,
// as exact names or * globs.
type claims struct {
	Channels []string `json:"channels"`
	Publish  []string `json:"publish"`
	jwt.RegisteredClaims
}

func newVerifier(secret, publicKeyFile string) (*verifier, error) {
	switch {
	case secret != "" && publicKeyFile != "":
		return nil, errors.New("set jwt_secret or jwt_public_key, not both")
	case secret != "":
		if len(secret) < 32 {
			return nil, errors.New("jwt_secret must be at least 32 bytes")
		}
		return &verifier{key: []byte(secret), methods: []string{"HS256"}}, nil
	case publicKeyFile != "":
		pem, err := os.ReadFile(publicKeyFile)
		if err != nil {
			return nil, fmt.Errorf("jwt_public_key: %w", err)
		}
		return publicKeyVerifier(pem)
	}
	return nil, nil
}

func publicKeyVerifier(pem []byte) (*verifier, error) {
	if k, err := jwt.ParseRSAPublicKeyFromPEM(pem); err == nil {
		return &verifier{key: k, methods: []string{"RS256"}}, nil
	}
	if k, err := jwt.ParseECPublicKeyFromPEM(pem); err == nil {
		alg := map[elliptic.Curve]string{elliptic.P256(): "ES256", elliptic.P384(): "ES384", elliptic.P521(): "ES512"}[k.Curve]
		if alg == "" {
			return nil, errors.New("jwt_public_key: unsupported EC curve")
		}
		return &verifier{key: k, methods: []string{alg}}, nil
	}
	if k, err := jwt.ParseEdPublicKeyFromPEM(pem); err == nil {
		return &verifier{key: k, methods: []string{"EdDSA"}}, nil
	}
	return nil, errors.New("jwt_public_key: not an RSA, EC or Ed25519 public key in PEM form")
}

// parse verifies a token and returns its claims; exp is required.
func (v *verifier) parse(token string) (*claims, error) {
	c := new(claims)
	_, err := jwt.ParseWithClaims(token, c, func(*jwt.Token) (any, error) { return v.key, nil },
		jwt.WithValidMethods(v.methods), jwt.WithExpirationRequired())
	if err != nil {
		return nil, err
	}
	return c, nil
}

// token finds the bearer token: Authorization header, then the
// configured cookie, then the `token` query value (EventSource cannot set
// headers).
func (h *Handler) token(r *http.Request) string {
	if t, ok := bearer(r); ok {
		return t
	}
	if h.JWTCookie != "" {
		if c, err := r.Cookie(h.JWTCookie); err == nil {
			return c.Value
		}
	}
	return r.URL.Query().Get("token")
}

// bearer is the credential of an `Authorization: Bearer …` header; the
// scheme name is case-insensitive, as HTTP has it.
func bearer(r *http.Request) (string, bool) {
	scheme, cred, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	return strings.TrimSpace(cred), true
}

// authError is a refusal with its status.
type authError struct {
	status int
	reason string
}

func (e *authError) Error() string { return e.reason }

// authorizeSubscribe checks a subscriber's token against the channels it
// asks for and returns when the token expires.
func (h *Handler) authorizeSubscribe(r *http.Request, channels []string) (time.Time, error) {
	if h.verifier == nil {
		return time.Time{}, nil
	}
	tok := h.token(r)
	if tok == "" {
		return time.Time{}, &authError{http.StatusUnauthorized, "a token is required"}
	}
	c, err := h.verifier.parse(tok)
	if err != nil {
		return time.Time{}, &authError{http.StatusUnauthorized, "invalid token"}
	}
	if ch, ok := granted(c.Channels, h.rules.heard(channels)); !ok {
		return time.Time{}, &authError{http.StatusForbidden, fmt.Sprintf("channel %q not granted", ch)}
	}
	return c.ExpiresAt.Time, nil
}

// authorizePublish accepts the publish key (compared in constant time) or
// a token whose publish claim grants every channel.
func (h *Handler) authorizePublish(r *http.Request, channels []string) error {
	tok, ok := bearer(r)
	if !ok || tok == "" {
		return &authError{http.StatusUnauthorized, "missing publish key or token"}
	}
	if h.publishKey != "" && subtle.ConstantTimeCompare([]byte(tok), []byte(h.publishKey)) == 1 {
		return nil
	}
	if h.verifier == nil {
		return &authError{http.StatusUnauthorized, "wrong publish key"}
	}
	c, err := h.verifier.parse(tok)
	if err != nil {
		return &authError{http.StatusUnauthorized, "wrong publish key or invalid token"}
	}
	if ch, ok := granted(c.Publish, channels); !ok {
		return &authError{http.StatusForbidden, fmt.Sprintf("publishing on %q not granted", ch)}
	}
	return nil
}

// refuseAuth answers a failed authorization; 401s carry the challenge.
func (h *Handler) refuseAuth(w http.ResponseWriter, err error) {
	var ae *authError
	if !errors.As(err, &ae) {
		ae = &authError{http.StatusUnauthorized, "unauthorized"}
	}
	if ae.status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="sse_relay"`)
	}
	refuse(w, ae.status, ae.reason)
}

// granted reports whether every channel matches one of the grants, and
// names the first that does not.
func granted(grants, channels []string) (string, bool) {
	for _, ch := range channels {
		ok := false
		for _, g := range grants {
			if globMatch(g, ch) {
				ok = true
				break
			}
		}
		if !ok {
			return ch, false
		}
	}
	return "", true
}

// globMatch matches name against a pattern where * stands for any run of
// characters, dots included: "tenant.7.*" grants "tenant.7.orders". The
// pattern's first piece must start the name and its last must end it; the
// pieces between are found leftmost-first, which is enough because a * may
// take any run. So a match costs one pass over the name per piece, never
// a retry of every split (a backtracking matcher is exponential in the
// number of *).
func globMatch(pattern, name string) bool {
	first, rest, ok := strings.Cut(pattern, "*")
	if !ok {
		return pattern == name
	}
	if !strings.HasPrefix(name, first) {
		return false
	}
	name = name[len(first):]
	middle, last := "", rest
	if i := strings.LastIndexByte(rest, '*'); i >= 0 {
		middle, last = rest[:i], rest[i+1:]
	}
	if !strings.HasSuffix(name, last) {
		return false
	}
	name = name[:len(name)-len(last)]
	for more := true; more; {
		var piece string
		piece, middle, more = strings.Cut(middle, "*")
		i := strings.Index(name, piece)
		if i < 0 {
			return false
		}
		name = name[i+len(piece):]
	}
	return true
}
