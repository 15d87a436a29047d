package e2e

import (
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/sse-relay/caddy-sse-relay/internal/sseclient"
)

// TestTokensNeverLogged runs a node at debug level with an access log
// filtered as the README's security section says, sends it every kind of
// credential, good and bad, by header, cookie and query, and looks for
// them in everything Caddy wrote.
func TestTokensNeverLogged(t *testing.T) {
	const secret = "log-secret-log-secret-log-secret-42"
	const publishKey = "publish-key-that-must-not-be-logged"
	mint := func(claims jwt.MapClaims) string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(secret))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	exp := time.Now().Add(time.Hour).Unix()
	query := mint(jwt.MapClaims{"exp": exp, "channels": []string{"user.42"}, "sub": "query"})
	header := mint(jwt.MapClaims{"exp": exp, "channels": []string{"user.42"}, "sub": "header"})
	cookie := mint(jwt.MapClaims{"exp": exp, "channels": []string{"user.42"}, "sub": "cookie"})
	expired := mint(jwt.MapClaims{"exp": time.Now().Add(-time.Minute).Unix(), "channels": []string{"user.42"}})
	publisher := mint(jwt.MapClaims{"exp": exp, "publish": []string{"user.42"}})
	tampered := query[:len(query)-4] + "AAAA"
	if tampered == query {
		tampered = query[:len(query)-4] + "BBBB"
	}

	n := startNodeWith(t, "debug", `log {
	format filter {
		request>uri query {
			delete token
		}
	}
}
sse_relay /events/* {
	jwt_secret `+secret+`
	jwt_cookie sse_token
	publish_key `+publishKey+`
}`, false)

	url := n.base + "/events/user.42"
	withQuery := openMany(t, url+"?token="+query, 1)[0]
	withHeader := openAuthorized(t, url, http.Header{"Authorization": {"Bearer " + header}})
	withCookie := openAuthorized(t, url, http.Header{"Cookie": {"sse_token=" + cookie}})
	for _, c := range []struct {
		method, url, auth string
		want              int
	}{
		{"GET", url + "?token=" + expired, "", 401},
		{"GET", url + "?token=" + tampered, "", 401},
		{"GET", url, "Bearer " + tampered, 401},
		{"GET", n.base + "/events/user.43?token=" + query, "", 403},
		{"POST", url, "Bearer " + publishKey, 202},
		{"POST", url, "Bearer " + publisher, 202},
		{"POST", url, "Bearer " + publishKey + "-wrong", 401},
		// Publishers are servers: their token goes in the header only.
		{"POST", url + "?token=" + publisher, "", 401},
	} {
		req, _ := http.NewRequest(c.method, c.url, strings.NewReader(`{"data":"hello"}`))
		if c.auth != "" {
			req.Header.Set("Authorization", c.auth)
		}
		resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Fatalf("%s %s with %q: %d, want %d", c.method, c.url, c.auth, resp.StatusCode, c.want)
		}
	}
	for _, s := range []*sseclient.Stream{withQuery, withHeader, withCookie} {
		if ev, err := s.Next(10 * time.Second); err != nil || ev.Data != "hello" {
			t.Fatalf("stream got %q, %v", ev.Data, err)
		}
		s.Close()
	}
	waitStreams(t, n, 0)
	_ = n.cmd.Process.Signal(os.Interrupt)
	<-n.done

	b, err := os.ReadFile(n.log)
	if err != nil {
		t.Fatal(err)
	}
	logs := string(b)
	// The log must have seen these requests, or finding nothing proves nothing.
	for _, want := range []string{`"msg":"stream opened"`, `"msg":"stream closed"`, `"uri":"/events/user.42"`, `"status":401`, `"status":202`} {
		if !strings.Contains(logs, want) {
			t.Fatalf("the log has no %s:\n%s", want, logs)
		}
	}
	// Streams taken over from net/http are logged with their 200 too.
	if n := strings.Count(logs, `"method":"GET","host":"`+strings.TrimPrefix(n.base, "http://")+`","uri":"/events/user.42"`); n != 6 {
		t.Errorf("%d access-log lines for GET /events/user.42, want 6 (3 streams, 3 refusals)", n)
	}
	if !regexp.MustCompile(`"status":200`).MatchString(logs) || strings.Contains(logs, `"status":0,`) {
		t.Errorf("streams are not logged with status 200")
	}
	for name, secret := range map[string]string{"query token": query, "header token": header, "cookie token": cookie,
		"expired token": expired, "tampered token": tampered, "publisher token": publisher, "publish key": publishKey, "jwt secret": secret} {
		// A JWT's signature alone would give it away too.
		if sig := secret[strings.LastIndexByte(secret, '.')+1:]; strings.Contains(logs, sig) {
			t.Errorf("the %s is in the log", name)
		}
	}
	if t.Failed() {
		t.Logf("log:\n%s", logs)
	}
}

// openAuthorized opens a stream with a request that carries header.
func openAuthorized(t *testing.T, url string, header http.Header) *sseclient.Stream {
	t.Helper()
	// The 200 goes out once the channel is listened to.
	s, err := open(url, header)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}
