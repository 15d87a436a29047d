package sserelay

import (
	"bytes"
	"crypto/elliptic"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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
	key    any
	parser *jwt.Parser
}

// claims are what a token may grant: channels to read and to publish on,
// as exact names or * globs, with the registered claims beside them.
// UnmarshalJSON reads them.
type claims struct {
	Channels []string
	Publish  []string
	jwt.RegisteredClaims
}

// UnmarshalJSON reads each claim by its exact name: encoding/json alone
// would also take CHANNELS for channels and Exp for exp, which no other
// JWT reader does. A token that names a claim twice, or spells a claim
// this relay reads in other case, is refused rather than read one way
// here and another way by a gateway or a log: encoding/json keeps the
// last copy, other readers the first.
func (c *claims) UnmarshalJSON(b []byte) error {
	fields, err := uniqueObject(b)
	if err != nil {
		return err
	}
	known := map[string]any{
		"channels": &c.Channels, "publish": &c.Publish,
		"exp": &c.ExpiresAt, "nbf": &c.NotBefore, "iat": &c.IssuedAt,
		"aud": &c.Audience, "iss": &c.Issuer, "sub": &c.Subject, "jti": &c.ID,
	}
	for name, raw := range fields {
		dst, ok := known[name]
		if !ok {
			if lower := strings.ToLower(name); known[lower] != nil {
				return fmt.Errorf("claim %q: claim names are case-sensitive, this one is %q", name, lower)
			}
			continue // a claim this relay does not read
		}
		if err := json.Unmarshal(raw, dst); err != nil {
			return fmt.Errorf("claim %s: %w", name, err)
		}
	}
	return nil
}

// uniqueObject reads a JSON object's members, refusing a name that
// appears twice (after unescaping: "\u0065xp" is exp).
func uniqueObject(b []byte) (map[string]json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, errors.New("not a JSON object")
	}
	fields := map[string]json.RawMessage{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, err
		}
		name, _ := t.(string)
		if _, dup := fields[name]; dup {
			return nil, fmt.Errorf("%q appears twice", name)
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
		fields[name] = v
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("data after the JSON object")
	}
	return fields, nil
}

// tokenRules are what a token must show besides a good signature and an
// exp: the configured audience and issuer, when set.
type tokenRules struct {
	audience, issuer string
}

func newVerifier(secret, publicKeyFile string, rules tokenRules) (*verifier, error) {
	var v *verifier
	switch {
	case secret != "" && publicKeyFile != "":
		return nil, errors.New("set jwt_secret or jwt_public_key, not both")
	case secret != "":
		if len(secret) < minKey {
			return nil, fmt.Errorf("jwt_secret must be at least %d bytes", minKey)
		}
		v = &verifier{key: []byte(secret)}
		v.parser = v.newParser("HS256", rules)
	case publicKeyFile != "":
		pem, err := os.ReadFile(publicKeyFile)
		if err != nil {
			return nil, fmt.Errorf("jwt_public_key: %w", err)
		}
		key, alg, err := publicKey(pem)
		if err != nil {
			return nil, err
		}
		v = &verifier{key: key}
		v.parser = v.newParser(alg, rules)
	}
	return v, nil
}

func (v *verifier) newParser(alg string, rules tokenRules) *jwt.Parser {
	opts := []jwt.ParserOption{jwt.WithValidMethods([]string{alg}), jwt.WithExpirationRequired()}
	if rules.audience != "" {
		opts = append(opts, jwt.WithAudience(rules.audience))
	}
	if rules.issuer != "" {
		opts = append(opts, jwt.WithIssuer(rules.issuer))
	}
	return jwt.NewParser(opts...)
}

// publicKey reads a PEM public key and the one algorithm it verifies.
func publicKey(pem []byte) (any, string, error) {
	if k, err := jwt.ParseRSAPublicKeyFromPEM(pem); err == nil {
		return k, "RS256", nil
	}
	if k, err := jwt.ParseECPublicKeyFromPEM(pem); err == nil {
		alg := map[elliptic.Curve]string{elliptic.P256(): "ES256", elliptic.P384(): "ES384", elliptic.P521(): "ES512"}[k.Curve]
		if alg == "" {
			return nil, "", errors.New("jwt_public_key: unsupported EC curve")
		}
		return k, alg, nil
	}
	if k, err := jwt.ParseEdPublicKeyFromPEM(pem); err == nil {
		return k, "EdDSA", nil
	}
	return nil, "", errors.New("jwt_public_key: not an RSA, EC or Ed25519 public key in PEM form")
}

// parse verifies a token and returns its claims; exp is required, and so
// are aud and iss when configured. A header with crit is refused: it names
// extensions the token says must be understood, and none are (RFC 7515
// 4.1.11); so is a header that names a parameter twice.
func (v *verifier) parse(token string) (*claims, error) {
	c := new(claims)
	_, err := v.parser.ParseWithClaims(token, c, func(t *jwt.Token) (any, error) {
		if _, ok := t.Header["crit"]; ok {
			return nil, errors.New("crit header: no extension is understood")
		}
		head, _, _ := strings.Cut(t.Raw, ".")
		b, err := v.parser.DecodeSegment(head)
		if err != nil {
			return nil, err
		}
		if _, err := uniqueObject(b); err != nil {
			return nil, fmt.Errorf("header: %w", err)
		}
		return v.key, nil
	})
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
