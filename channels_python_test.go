package sserelay

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sse-relay/caddy-sse-relay/broker"
)

// djangoBackends are the brokers django_sse_relay publishes to, by the
// names its MAX_PAYLOAD and MAX_CHANNEL use. Open does not connect, so
// the URLs need no server behind them.
func djangoBackends() map[string]string {
	return map[string]string{"postgres": "postgres://relay@127.0.0.1:1/app", "redis": "redis://127.0.0.1:1/0"}
}

// djangoRules is what django_sse_relay says of the brokers: its limits,
// and whether its check_channel accepts each name it was given.
type djangoRules struct {
	MaxPayload        map[string]int    `json:"max_payload"`
	MaxPayloadHistory map[string]int    `json:"max_payload_history"`
	MaxChannel        map[string]int    `json:"max_channel"`
	Accepts           map[string][]bool `json:"accepts"`
}

// djangoRulesScript prints djangoRules for the names on its standard
// input. The package imports Django only where notify uses it, so neither
// Django nor its settings are needed here.
const djangoRulesScript = `
import json, sys
import django_sse_relay as r

def accepts(name, backend):
    try:
        r.check_channel(name, backend)
    except ValueError:
        return False
    return True

names = json.load(sys.stdin)
print(json.dumps({
    "max_payload": r.MAX_PAYLOAD,
    "max_payload_history": r.MAX_PAYLOAD_HISTORY,
    "max_channel": r.MAX_CHANNEL,
    "accepts": {b: [accepts(n, b) for n in names] for b in r.MAX_CHANNEL},
}))
`

// readDjangoRules runs djangoRulesScript on python3 with
// contrib/django first on PYTHONPATH.
func readDjangoRules(t *testing.T, names []string) djangoRules {
	t.Helper()
	dir, err := filepath.Abs("contrib/django")
	if err != nil {
		t.Fatal(err)
	}
	in, err := json.Marshal(names)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("python3", "-c", djangoRulesScript)
	cmd.Env = append(os.Environ(), "PYTHONPATH="+dir)
	cmd.Stdin = strings.NewReader(string(in))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python3 reading django_sse_relay's rules: %v\n%s", err, stderr.String())
	}
	var rules djangoRules
	if err := json.Unmarshal(out, &rules); err != nil {
		t.Fatalf("django_sse_relay's rules: %v\n%s", err, out)
	}
	return rules
}

// TestDjangoLimitsMatchBrokers: django_sse_relay refuses an oversize
// payload or channel name at the same size as the Go broker it publishes
// to, with history (SSE_RELAY_HISTORY, the relay's history) and without,
// so notify() never lets through what the broker then rejects, nor
// refuses what the relay would carry. Each limit is retyped in Python;
// this is what keeps the copies equal.
func TestDjangoLimitsMatchBrokers(t *testing.T) {
	rules := readDjangoRules(t, []string{})
	backends := djangoBackends()
	for _, payloads := range []map[string]int{rules.MaxPayload, rules.MaxPayloadHistory} {
		for name := range payloads {
			if _, ok := backends[name]; !ok {
				t.Errorf("django_sse_relay has limits for %q, which this test does not compare", name)
			}
		}
	}
	for name, url := range backends {
		for _, c := range []struct {
			python  string
			payload map[string]int
			history broker.History
		}{
			{"MAX_PAYLOAD", rules.MaxPayload, broker.History{}},
			{"MAX_PAYLOAD_HISTORY", rules.MaxPayloadHistory, broker.History{Count: 1}},
		} {
			b, err := broker.Open(url, nil, c.history)
			if err != nil {
				t.Fatal(err)
			}
			limits := b.Limits() // Open does not connect: Start does
			b.Close()
			payload, ok := c.payload[name]
			if !ok || payload != limits.MaxPayload {
				t.Errorf("%s: django_sse_relay.%s is %d (present: %v), the Go broker's MaxPayload (history %v) %d",
					name, c.python, payload, ok, c.history.On(), limits.MaxPayload)
			}
			channel, ok := rules.MaxChannel[name]
			if !ok || channel != limits.MaxChannel {
				t.Errorf("%s: django_sse_relay.MAX_CHANNEL is %d (present: %v), the Go broker's MaxChannel (history %v) %d",
					name, channel, ok, c.history.On(), limits.MaxChannel)
			}
		}
	}
}

// TestDjangoChannelRuleMatchesRelay: django_sse_relay's check_channel
// accepts a name exactly when the relay's channel rules do: control characters,
// whitespace (Unicode's too), quotes, semicolons, backslashes and the
// broker's byte limit, counted in UTF-8. The one difference is deliberate:
// Python also refuses a comma, on which the relay splits the channels a
// request names, so no stream could subscribe to such a channel.
func TestDjangoChannelRuleMatchesRelay(t *testing.T) {
	names := []string{
		"orders", "tenant.7.orders", "user.Alice", "tenant.7.*", "a-b_c:d/e@f", "é", "日本",
		strings.Repeat("x", 63), strings.Repeat("x", 64), strings.Repeat("x", 255), strings.Repeat("x", 256),
		strings.Repeat("é", 31) + "x", strings.Repeat("é", 32), // 63 and 64 bytes in 32 and 33 characters
		" a", "a ", "a b", "a\tb", "a\nb", "a\rb", "a\x01b", "a\x1fb", "a\x7fb",
		"a\u0085b", "a\u00a0b", "a\u1680b", "a\u2028b", "a\u3000b", // Unicode whitespace and C1 control
		"a\u200bb", "a\ufeffb", // format characters, neither space nor control
		`a"b`, "a'b", "a;b", `a\b`,
		"sse_relay", "sse-relay:{orders}", "sse-relay", // the log's own names are reserved
	}
	rules := readDjangoRules(t, append(names, "a,b"))
	for backend, url := range djangoBackends() {
		accepts := rules.Accepts[backend]
		if len(accepts) != len(names)+1 {
			t.Fatalf("%s: django_sse_relay answered for %d names, not %d", backend, len(accepts), len(names)+1)
		}
		if accepts[len(names)] {
			t.Errorf("%s: django_sse_relay accepts a channel with a comma", backend)
		}
		b, err := broker.Open(url, nil, broker.History{})
		if err != nil {
			t.Fatal(err)
		}
		for i, name := range names {
			err := checkChannel(name, b.Limits().MaxChannel)
			if accepts[i] != (err == nil) {
				t.Errorf("%s: channel %q (%d bytes): django_sse_relay accepts it: %v, the relay: %v",
					backend, name, len(name), accepts[i], err)
			}
		}
	}
}
