package sserelay

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"

	"github.com/sse-relay/caddy-sse-relay/internal/sseclient"
	"github.com/sse-relay/caddy-sse-relay/internal/testsrv"
)

const testSecret = "0123456789abcdef0123456789abcdef-test"

func hsToken(t *testing.T, c jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString([]byte(testSecret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func expiresIn(d time.Duration) int64 { return time.Now().Add(d).Unix() }

func TestJWTSubscribers(t *testing.T) {
	load(t, site("jwt_secret "+testSecret+"\njwt_cookie sse_token"))
	good := hsToken(t, jwt.MapClaims{"channels": []string{"user.42", "tenant.7.*"}, "exp": expiresIn(time.Hour)})
	b64 := base64.RawURLEncoding.EncodeToString
	parts := strings.Split(good, ".")
	tampered := parts[0] + "." + b64([]byte(`{"channels":["*"],"exp":9999999999}`)) + "." + parts[2]
	none := b64([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + b64([]byte(`{"channels":["*"],"exp":9999999999}`)) + "."
	cases := []struct {
		name, path string
		header     []string
		want       int
	}{
		{"no token", "/events/user.42", nil, 401},
		{"garbage token", "/events/user.42", []string{"Authorization", "Bearer not.a.token"}, 401},
		{"expired", "/events/user.42", []string{"Authorization", "Bearer " + hsToken(t, jwt.MapClaims{"channels": []string{"*"}, "exp": expiresIn(-time.Minute)})}, 401},
		{"no exp", "/events/user.42", []string{"Authorization", "Bearer " + hsToken(t, jwt.MapClaims{"channels": []string{"*"}})}, 401},
		{"tampered claims", "/events/user.42", []string{"Authorization", "Bearer " + tampered}, 401},
		{"alg none", "/events/user.42", []string{"Authorization", "Bearer " + none}, 401},
		{"wrong secret", "/events/user.42", []string{"Authorization", "Bearer " + func() string {
			s, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"channels": []string{"*"}, "exp": expiresIn(time.Hour)}).SignedString([]byte("another-secret-another-secret-xx"))
			return s
		}()}, 401},
		{"another user's channel", "/events/user.43", []string{"Authorization", "Bearer " + good}, 403},
		{"one of several not granted", "/events/?channel=user.42,user.43", []string{"Authorization", "Bearer " + good}, 403},
		{"glob grant", "/events/tenant.7.orders", []string{"Authorization", "Bearer " + good}, 200},
		{"glob does not reach another tenant", "/events/tenant.70.orders", []string{"Authorization", "Bearer " + good}, 403},
		{"header token", "/events/user.42", []string{"Authorization", "Bearer " + good}, 200},
		{"cookie token", "/events/user.42", []string{"Cookie", "sse_token=" + good}, 200},
		{"query token", "/events/user.42?token=" + good, nil, 200},
		{"scheme name in lowercase", "/events/user.42", []string{"Authorization", "bearer " + good}, 200},
	}
	for _, c := range cases {
		if c.want == 200 {
			s := subscribe(t, c.path, c.header...)
			s.Close()
			continue
		}
		code, hdr, body := do(t, "GET", c.path, "", c.header...)
		if code != c.want {
			t.Errorf("%s: %d %q, want %d", c.name, code, body, c.want)
		}
		if code == 401 && !strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("%s: 401 without WWW-Authenticate: Bearer", c.name)
		}
	}

	// The stream ends when the token expires.
	short := hsToken(t, jwt.MapClaims{"channels": []string{"user.42"}, "exp": expiresIn(2 * time.Second)})
	s := subscribe(t, "/events/user.42?token="+short)
	switch _, err := s.Next(5 * time.Second); {
	case err == nil:
		t.Fatal("unexpected event")
	case errors.Is(err, sseclient.ErrTimeout):
		t.Fatal("stream outlived its token")
	}
}

// hsRaw signs header and claims exactly as written, for tokens that no
// JWT library would produce.
func hsRaw(header, claims string) string {
	b64 := base64.RawURLEncoding.EncodeToString
	signing := b64([]byte(header)) + "." + b64([]byte(claims))
	mac := hmac.New(sha256.New, []byte(testSecret))
	mac.Write([]byte(signing))
	return signing + "." + b64(mac.Sum(nil))
}

// TestJWTClaimsReadExactly: claims are read by their exact names, a
// token that names a claim or a header parameter twice or carries crit
// is refused, and jwt_audience and jwt_issuer, when set, must match. Each
// bad token is well signed, and gets 401 on a stream and on a publish.
func TestJWTClaimsReadExactly(t *testing.T) {
	load(t, site("jwt_secret "+testSecret+"\njwt_audience sse-relay\njwt_issuer https://app.example.com"))
	const hdr = `{"alg":"HS256","typ":"JWT"}`
	exp := fmt.Sprint(expiresIn(time.Hour))
	right := `"aud":"sse-relay","iss":"https://app.example.com","exp":` + exp
	good := hsRaw(hdr, `{"channels":["news"],"publish":["news"],`+right+`}`)
	subscribe(t, "/events/news?token="+good).Close()
	if code, _, body := do(t, "POST", "/events/news", "x", "Authorization", "Bearer "+good); code != 202 {
		t.Fatalf("good token publishing: %d %q", code, body)
	}
	listed := hsRaw(hdr, `{"channels":["news"],"aud":["other","sse-relay"],"iss":"https://app.example.com","exp":`+exp+`}`)
	subscribe(t, "/events/news?token="+listed).Close()

	for _, c := range []struct{ name, token string }{
		{"CHANNELS", hsRaw(hdr, `{"CHANNELS":["*"],"PUBLISH":["*"],`+right+`}`)},
		{"Exp", hsRaw(hdr, `{"channels":["*"],"publish":["*"],"aud":"sse-relay","iss":"https://app.example.com","Exp":`+exp+`}`)},
		{"exp and Exp", hsRaw(hdr, `{"channels":["*"],"publish":["*"],`+right+`,"Exp":`+exp+`}`)},
		{"channels twice", hsRaw(hdr, `{"channels":["nothing"],"publish":["nothing"],`+right+`,"channels":["*"],"publish":["*"]}`)},
		{"channels twice, once escaped", hsRaw(hdr, `{"channels":["nothing"],"publish":["nothing"],`+right+`,"\u0063hannels":["*"],"\u0070ublish":["*"]}`)},
		{"exp twice", hsRaw(hdr, `{"channels":["*"],"publish":["*"],`+right+`,"exp":4102444800}`)},
		{"crit", hsRaw(`{"alg":"HS256","typ":"JWT","crit":["exp"]}`, `{"channels":["*"],"publish":["*"],`+right+`}`)},
		{"crit empty", hsRaw(`{"alg":"HS256","crit":[]}`, `{"channels":["*"],"publish":["*"],`+right+`}`)},
		{"alg twice", hsRaw(`{"alg":"none","alg":"HS256"}`, `{"channels":["*"],"publish":["*"],`+right+`}`)},
		{"no aud", hsRaw(hdr, `{"channels":["*"],"publish":["*"],"iss":"https://app.example.com","exp":`+exp+`}`)},
		{"another aud", hsRaw(hdr, `{"channels":["*"],"publish":["*"],"aud":"billing","iss":"https://app.example.com","exp":`+exp+`}`)},
		{"aud in other case", hsRaw(hdr, `{"channels":["*"],"publish":["*"],"aud":"SSE-RELAY","iss":"https://app.example.com","exp":`+exp+`}`)},
		{"no iss", hsRaw(hdr, `{"channels":["*"],"publish":["*"],"aud":"sse-relay","exp":`+exp+`}`)},
		{"another iss", hsRaw(hdr, `{"channels":["*"],"publish":["*"],"aud":"sse-relay","iss":"https://evil.test","exp":`+exp+`}`)},
		{"Iss", hsRaw(hdr, `{"channels":["*"],"publish":["*"],"aud":"sse-relay","Iss":"https://app.example.com","exp":`+exp+`}`)},
	} {
		if code, hdr, body := do(t, "GET", "/events/news?token="+c.token, ""); code != 401 || hdr.Get("WWW-Authenticate") == "" {
			t.Errorf("%s: stream %d %q, want 401 with WWW-Authenticate", c.name, code, body)
		}
		if code, _, body := do(t, "POST", "/events/news", "x", "Authorization", "Bearer "+c.token); code != 401 {
			t.Errorf("%s: publish %d %q, want 401", c.name, code, body)
		}
	}
}

// TestJWTAudienceNeedsAKey: jwt_audience and jwt_issuer without a token
// key are config errors, as jwt_cookie is.
func TestJWTAudienceNeedsAKey(t *testing.T) {
	load(t, site(""))
	for _, line := range []string{"jwt_audience sse-relay", "jwt_issuer https://app.example.com", "jwt_audience {env.SSE_RELAY_TEST_UNSET}\njwt_secret " + testSecret} {
		if why := loadFails(t, site(line)); !strings.Contains(why, "jwt_") {
			t.Errorf("%s: refused with %q, want the option named", line, why)
		}
	}
}

// TestJWTCaseFoldingOnPostgres: on Postgres a channel with capitals also
// receives the unquoted NOTIFY of its lowercase name, so a token granting
// user.Alice alone cannot open it (it would read user.alice's events); a
// token granting both can.
func TestJWTCaseFoldingOnPostgres(t *testing.T) {
	load(t, site("broker "+servers.PG(t).URL()+"\njwt_secret "+testSecret))
	alice := hsToken(t, jwt.MapClaims{"channels": []string{"user.Alice"}, "exp": expiresIn(time.Hour)})
	if code, _, body := do(t, "GET", "/events/user.Alice?token="+alice, ""); code != 403 || !strings.Contains(body, "user.alice") {
		t.Fatalf("user.Alice without user.alice granted: %d %q, want 403 naming user.alice", code, body)
	}
	both := hsToken(t, jwt.MapClaims{"channels": []string{"user.Alice", "user.alice"}, "exp": expiresIn(time.Hour)})
	s := subscribe(t, "/events/user.Alice?token="+both)
	s.Close()
	// Lowercase names need nothing more.
	lower := hsToken(t, jwt.MapClaims{"channels": []string{"user.bob"}, "exp": expiresIn(time.Hour)})
	subscribe(t, "/events/user.bob?token="+lower).Close()
}

func TestJWTPublishers(t *testing.T) {
	load(t, site("jwt_secret "+testSecret+"\npublish_key "+testPublishKey))
	sub := subscribe(t, "/events/news", "Authorization", "Bearer "+hsToken(t, jwt.MapClaims{"channels": []string{"news"}, "exp": expiresIn(time.Hour)}))
	pubTok := hsToken(t, jwt.MapClaims{"publish": []string{"news", "tenant.*"}, "exp": expiresIn(time.Hour)})
	subTok := hsToken(t, jwt.MapClaims{"channels": []string{"*"}, "exp": expiresIn(time.Hour)})
	for _, c := range []struct {
		name, path, tok string
		want            int
	}{
		{"publish claim", "/events/news", pubTok, 202},
		{"publish glob", "/events/tenant.1", pubTok, 202},
		{"publish not granted", "/events/other", pubTok, 403},
		{"subscriber token cannot publish", "/events/news", subTok, 403},
		{"publish key still works", "/events/news", testPublishKey, 202},
		{"garbage", "/events/news", "nope", 401},
	} {
		if code, _, body := do(t, "POST", c.path, c.name, "Authorization", "Bearer "+c.tok); code != c.want {
			t.Errorf("%s: %d %q, want %d", c.name, code, body, c.want)
		}
	}
	for _, want := range []string{"publish claim", "publish key still works"} {
		if ev := sub.next(t); ev.Data != want {
			t.Fatalf("got %+v, want %q", ev, want)
		}
	}

	// With tokens on and no publish_key, POST is on for tokens with a
	// publish claim, not 405.
	load(t, site("jwt_secret "+testSecret))
	if code, _, body := do(t, "POST", "/events/news", "x", "Authorization", "Bearer "+pubTok); code != 202 {
		t.Fatalf("token publish without publish_key: %d %q", code, body)
	}
	if code, hdr, _ := do(t, "POST", "/events/news", "x"); code != 401 || hdr.Get("WWW-Authenticate") == "" {
		t.Fatalf("no token, no publish_key: %d", code)
	}
}

func TestJWTPublicKeyPinsAlgorithm(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	path := filepath.Join(t.TempDir(), "jwt.pem")
	if err := os.WriteFile(path, pubPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	load(t, site("jwt_public_key "+path))
	claims := jwt.MapClaims{"channels": []string{"*"}, "exp": expiresIn(time.Hour)}
	rs, _ := jwt.NewWithClaims(jwt.SigningMethodRS256, claims).SignedString(key)
	s := subscribe(t, "/events/a", "Authorization", "Bearer "+rs)
	s.Close()
	// Key confusion: HS256 signed with the public key as the secret.
	confused, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(pubPEM)
	if code, _, _ := do(t, "GET", "/events/a", "", "Authorization", "Bearer "+confused); code != 401 {
		t.Fatalf("HS256 with the RSA public key as secret: %d, want 401", code)
	}
	// Another RSA key.
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	forged, _ := jwt.NewWithClaims(jwt.SigningMethodRS256, claims).SignedString(other)
	if code, _, _ := do(t, "GET", "/events/a", "", "Authorization", "Bearer "+forged); code != 401 {
		t.Fatalf("token from another key: %d, want 401", code)
	}
}

// TestJWTECAndEd25519Keys: an EC P-256 key takes ES256 and an Ed25519 key
// EdDSA, and neither takes a token of the other kind.
func TestJWTECAndEd25519Keys(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	claims := jwt.MapClaims{"channels": []string{"*"}, "exp": expiresIn(time.Hour)}
	es256, _ := jwt.NewWithClaims(jwt.SigningMethodES256, claims).SignedString(ec)
	eddsa, _ := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims).SignedString(ed)
	for _, c := range []struct {
		name        string
		pub         any
		good, wrong string
	}{
		{"EC P-256", &ec.PublicKey, es256, eddsa},
		{"Ed25519", ed.Public(), eddsa, es256},
	} {
		der, err := x509.MarshalPKIXPublicKey(c.pub)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "jwt.pem")
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		load(t, site("jwt_public_key "+path))
		subscribe(t, "/events/a", "Authorization", "Bearer "+c.good).Close()
		if code, _, _ := do(t, "GET", "/events/a", "", "Authorization", "Bearer "+c.wrong); code != 401 {
			t.Fatalf("%s key, token of the other kind: %d, want 401", c.name, code)
		}
	}
}

// TestPythonMintedToken mints with the one Python minter, the Django
// package's standard-library-only django_sse_relay.tokens, and uses its
// token.
func TestPythonMintedToken(t *testing.T) {
	load(t, site("jwt_secret "+testSecret))
	cmd := exec.Command("python3", "-m", "django_sse_relay.tokens", testSecret, "user.42,tenant.7.*", "60")
	cmd.Env = append(os.Environ(), "PYTHONPATH=contrib/django")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python3 -m django_sse_relay.tokens: %v", err)
	}
	tok := strings.TrimSpace(string(out))
	s := subscribe(t, "/events/tenant.7.orders?token="+tok)
	s.Close()
	if code, _, _ := do(t, "GET", "/events/user.43?token="+tok, ""); code != 403 {
		t.Fatalf("python token for another channel: %d", code)
	}

	// With jwt_audience and jwt_issuer, its --audience and --issuer.
	load(t, site("jwt_secret "+testSecret+"\njwt_audience sse-relay\njwt_issuer https://app.example.com"))
	cmd = exec.Command("python3", "-m", "django_sse_relay.tokens", testSecret, "user.42", "60",
		"--audience", "sse-relay", "--issuer", "https://app.example.com")
	cmd.Env = append(os.Environ(), "PYTHONPATH=contrib/django")
	if out, err = cmd.Output(); err != nil {
		t.Fatalf("python3 -m django_sse_relay.tokens --audience --issuer: %v", err)
	}
	subscribe(t, "/events/user.42?token="+strings.TrimSpace(string(out))).Close()
	if code, _, _ := do(t, "GET", "/events/user.42?token="+tok, ""); code != 401 {
		t.Fatalf("python token without aud and iss: %d, want 401", code)
	}
}

// TestForwardAuthRecipe: Django decides through forward_auth and hands the
// channels over in X-Sse-Channels; a client cannot widen that by sending
// the header itself.
func TestForwardAuthRecipe(t *testing.T) {
	django := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/sse/auth" {
			http.NotFound(w, r)
			return
		}
		switch c, _ := r.Cookie("session"); {
		case c == nil:
			w.WriteHeader(http.StatusUnauthorized)
		case c.Value == "alice":
			w.Header().Set("X-Sse-Channels", "user.42")
		default: // signed in, but no channels
		}
	}))
	port, _ := testsrv.FreePort()
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	django.Listener = l
	django.Start()
	defer django.Close()

	load(t, fmt.Sprintf(`http://localhost:9080 {
	forward_auth 127.0.0.1:%d {
		uri /sse/auth
		copy_headers X-Sse-Channels
	}
	sse_relay /events/* {
		channels {http.request.header.X-Sse-Channels}
		publish_key %s
	}
}
`, port, testPublishKey))
	alice := subscribe(t, "/events/", "Cookie", "session=alice", "X-Sse-Channels", "admin,user.43")
	for _, ch := range []string{"admin", "user.43", "user.42"} {
		do(t, "POST", "/events/?channel="+ch, "to "+ch, "Cookie", "session=alice", "Authorization", "Bearer "+testPublishKey)
	}
	if ev := alice.next(t); ev.Data != "to user.42" {
		t.Fatalf("alice got %+v: the spoofed header widened access", ev)
	}
	alice.nothing(t, 300*time.Millisecond)
	if code, _, _ := do(t, "GET", "/events/", "", "X-Sse-Channels", "admin"); code != 401 {
		t.Fatalf("no session, spoofed header: %d, want 401 from forward_auth", code)
	}
	if code, _, _ := do(t, "GET", "/events/", "", "Cookie", "session=bob", "X-Sse-Channels", "admin"); code != 204 {
		t.Fatalf("session without channels, spoofed header: %d, want 204", code)
	}
}

// FuzzTokens: no string that is not a token signed with the key parses,
// whatever its header claims; nothing panics.
func FuzzTokens(f *testing.F) {
	v, _ := newVerifier(testSecret, "", tokenRules{})
	good, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"channels": []string{"*"}, "exp": 4102444800}).SignedString([]byte(testSecret)) // fixed: fuzz workers must agree
	f.Add(good, 0, byte('x'))
	f.Add("eyJhbGciOiJub25lIn0.eyJleHAiOjk5OTk5OTk5OTl9.", 3, byte('A'))
	f.Fuzz(func(t *testing.T, tok string, pos int, b byte) {
		if tok == good {
			return
		}
		if _, err := v.parse(tok); err == nil {
			t.Fatalf("token %q accepted", tok)
		}
		// One byte flipped in a good token.
		if pos < 0 || pos >= len(good) || good[pos] == b {
			return
		}
		flipped := good[:pos] + string(b) + good[pos+1:]
		if _, err := v.parse(flipped); err == nil && flipped != good {
			// base64url padding bits can make two encodings decode alike;
			// accept only if the decoded token is unchanged.
			if !sameDecoded(flipped, good) {
				t.Fatalf("tampered token %q accepted", flipped)
			}
		}
	})
}

func sameDecoded(a, b string) bool {
	pa, pb := strings.Split(a, "."), strings.Split(b, ".")
	if len(pa) != 3 || len(pb) != 3 {
		return false
	}
	for i := range pa {
		da, ea := jwt.NewParser().DecodeSegment(pa[i])
		db, eb := jwt.NewParser().DecodeSegment(pb[i])
		if ea != nil || eb != nil || string(da) != string(db) {
			return false
		}
	}
	return true
}

// TestGlobMatch: grants are exact names or * globs where * stands for
// any run, dots included. Pure: no server.
func TestGlobMatch(t *testing.T) {
	cases := []struct {
		pattern, name string
		want          bool
	}{
		{"orders", "orders", true},
		{"orders", "orders2", false},
		{"orders", "Orders", false},
		{"*", "", true},
		{"*", "anything.at.all", true},
		{"tenant.7.*", "tenant.7.orders", true},
		{"tenant.7.*", "tenant.7.", true},
		{"tenant.7.*", "tenant.70.orders", false},
		{"tenant.*.orders", "tenant.7.orders", true},
		{"tenant.*.orders", "tenant.7.8.orders", true},
		{"tenant.*.orders", "tenant.7.news", false},
		{"*.orders", "orders", false},
		{"a*b*c", "abc", true},
		{"a*b*c", "aXbYc", true},
		{"a*b*c", "acb", false},
		{"", "", true},
		{"", "a", false},
		{"**", "", true},
		{"a**b", "ab", true},
		{"*a*", "", false},
		{"a*a", "a", false}, // the first and last pieces may not share a byte
		{"ab*ba", "aba", false},
		{"ab*ba", "abba", true},
		{"*.*.orders", "tenant.7.orders", true},
		{"*.*.orders", "tenant.orders", false},
		{"*aab", "aaab", true}, // a leftmost match of a piece that is not the answer
		{"*ab*ab*", "xabyab", true},
		{"*ab*ab*", "xabyba", false},
	}
	for _, c := range cases {
		if got := globMatch(c.pattern, c.name); got != c.want {
			t.Errorf("globMatch(%q, %q) = %v, want %v", c.pattern, c.name, got, c.want)
		}
	}
}

// globWorstCases are grants with many stars against the longest names a
// broker takes (255 bytes), made so that every star has many places to
// start: the recursive matcher this replaced took about a second for
// *a*a*a*b alone, and doubled with every further star.
var globWorstCases = []struct{ pattern, name string }{
	{"*a*a*a*b", strings.Repeat("a", 255)},
	{strings.Repeat("*a", 40) + "*b", strings.Repeat("a", 255)},
	{strings.Repeat("*a", 40) + "*b*", strings.Repeat("a", 255)},
	{"*" + strings.Repeat("a", 60) + "b*", strings.Repeat("a", 255)},
	{strings.Repeat("*ab", 30) + "*c", strings.Repeat("ab", 127) + "a"},
}

// TestGlobMatchWorstCase: a token full of stars cannot stall the stream
// that presents it. A thousand of each worst case in a second leaves a
// margin of about a thousand over what they take (BenchmarkGlobMatch), so
// the bound does not flake, while the old matcher took that second for
// one match of the first case. Pure: no server.
func TestGlobMatchWorstCase(t *testing.T) {
	start := time.Now()
	for _, c := range globWorstCases {
		for range 1000 {
			if globMatch(c.pattern, c.name) {
				t.Fatalf("globMatch(%q, %d bytes) matched", c.pattern, len(c.name))
			}
		}
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("%d worst-case matches took %v", 1000*len(globWorstCases), d)
	}
}

// BenchmarkGlobMatch times the worst cases, one match each per iteration.
func BenchmarkGlobMatch(b *testing.B) {
	for b.Loop() {
		for _, c := range globWorstCases {
			globMatch(c.pattern, c.name)
		}
	}
}

// FuzzGlob compares globMatch with a regular expression built from the
// pattern (each piece quoted, each * as (?s:.*)), the plainest statement
// of the rule. Both are read as UTF-8: channel names are checked to be,
// and grants come out of JSON strings.
func FuzzGlob(f *testing.F) {
	for _, c := range []struct{ pattern, name string }{
		{"tenant.7.*", "tenant.7.orders"}, {"*.orders", "orders"}, {"a*b*c", "aXbYc"},
		{"ab*ba", "aba"}, {"*a*a*b", "aaaa"}, {"*", ""}, {"a.b", "aXb"}, {"[a]*", "[a]x"},
	} {
		f.Add(c.pattern, c.name)
	}
	f.Fuzz(func(t *testing.T, pattern, name string) {
		if !utf8.ValidString(pattern) || !utf8.ValidString(name) {
			return
		}
		pieces := strings.Split(pattern, "*")
		for i, p := range pieces {
			pieces[i] = regexp.QuoteMeta(p)
		}
		want := regexp.MustCompile(`\A` + strings.Join(pieces, `(?s:.*)`) + `\z`).MatchString(name)
		if got := globMatch(pattern, name); got != want {
			t.Fatalf("globMatch(%q, %q) = %v, the regexp says %v", pattern, name, got, want)
		}
	})
}

// TestGranted names the first channel no grant covers. Pure: no server.
func TestGranted(t *testing.T) {
	grants := []string{"user.42", "tenant.7.*"}
	if ch, ok := granted(grants, []string{"user.42", "tenant.7.orders"}); !ok {
		t.Fatalf("refused %q", ch)
	}
	if ch, ok := granted(grants, []string{"tenant.7.orders", "user.43", "x"}); ok || ch != "user.43" {
		t.Fatalf("granted(...) = %q, %v; want user.43 refused", ch, ok)
	}
	if _, ok := granted(nil, []string{"a"}); ok {
		t.Fatal("no grants granted a channel")
	}
}
