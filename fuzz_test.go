package sserelay

import (
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"

	"github.com/sse-relay/caddy-sse-relay/broker"
)

// FuzzChannels feeds arbitrary query values and paths to the channel
// resolver: whatever it accepts is within the limits and free of
// characters that could confuse a broker, a log or SQL.
func FuzzChannels(f *testing.F) {
	for _, s := range []string{"orders", "a,b", `x"; DROP TABLE t; --`, "a\x00b", "\xff", "tenant.7.*", strings.Repeat("z", 300)} {
		f.Add(s, "/events/"+s)
	}
	mem, _ := broker.Open("memory://", nil)
	h := &Handler{MaxChannels: 16, relay: &relay{broker: mem}}
	f.Fuzz(func(t *testing.T, query, path string) {
		for _, r := range []string{"/events/x?channel=" + url.QueryEscape(query), "/events/" + url.PathEscape(path)} {
			req := httptest.NewRequest("GET", "http://localhost"+"/", nil)
			u, err := url.Parse("http://localhost" + r)
			if err != nil {
				continue
			}
			req.URL = u
			chs, err := h.requestChannels(req)
			if err != nil {
				continue
			}
			if len(chs) > h.MaxChannels {
				t.Fatalf("%d channels accepted", len(chs))
			}
			for _, ch := range chs {
				if ch == "" || len(ch) > 255 || !utf8.ValidString(ch) || strings.ContainsAny(ch, "\"';\\,") {
					t.Fatalf("accepted channel %q", ch)
				}
				for _, c := range ch {
					if unicode.IsControl(c) || unicode.IsSpace(c) {
						t.Fatalf("accepted channel %q", ch)
					}
				}
			}
		}
	})
}

// FuzzTokens: no string that is not a token signed with the key parses,
// whatever its header claims; nothing panics.
func FuzzTokens(f *testing.F) {
	v, _ := newVerifier(testSecret, "")
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
