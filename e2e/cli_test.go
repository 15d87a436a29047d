package e2e

import (
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestCLI: `caddy sse-relay notify` publishes through Postgres and Redis,
// and `caddy sse-relay token` mints a token the relay accepts.
func TestCLI(t *testing.T) {
	for _, url := range []string{servers.PG(t).URL(), servers.Redis(t).URL()} {
		n := startNode(t, "broker "+url)
		s := openMany(t, n.base+"/events/cli", 1)[0]
		out, err := exec.Command(caddyBin, "sse-relay", "notify", "--broker", url, "--channel", "cli",
			"--event", "note", "--id", "n-1", "--retry", "500", "--data", "from the CLI").CombinedOutput()
		if err != nil {
			t.Fatalf("notify: %v\n%s", err, out)
		}
		if ev, err := s.Next(10 * time.Second); err != nil || ev.Data != "from the CLI" {
			t.Fatalf("%s: got %q, %v", url, ev.Data, err)
		}
		cmd := exec.Command(caddyBin, "sse-relay", "notify", "--broker", url, "--channel", "cli", "--data", "-")
		cmd.Stdin = strings.NewReader("from stdin\n")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("notify --data -: %v\n%s", err, out)
		}
		if ev, err := s.Next(10 * time.Second); err != nil || ev.Data != "from stdin" {
			t.Fatalf("%s: got %q, %v", url, ev.Data, err)
		}
	}
	if out, err := exec.Command(caddyBin, "sse-relay", "notify", "--broker", servers.PG(t).URL(), "--channel", "a;b", "--data", "x").CombinedOutput(); err == nil {
		t.Fatalf("a bad channel was published: %s", out)
	}

	const secret = "cli-secret-cli-secret-cli-secret-42"
	n := startNode(t, "jwt_secret "+secret)
	out, err := exec.Command(caddyBin, "sse-relay", "token", "--secret", secret, "--channel", "user.42", "--ttl", "10m").Output()
	if err != nil {
		t.Fatalf("token: %v", err)
	}
	tok := strings.TrimSpace(string(out))
	s := openMany(t, n.base+"/events/user.42?token="+tok, 1)[0]
	_ = s
	if _, err := open(n.base+"/events/user.43?token="+tok, nil); err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("token for another channel: %v", err)
	}
}
