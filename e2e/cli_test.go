package e2e

import (
	"context"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
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

	// --audience and --issuer, for a handler with jwt_audience and jwt_issuer.
	n = startNode(t, "jwt_secret "+secret+"\njwt_audience sse-relay\njwt_issuer https://app.example.com")
	out, err = exec.Command(caddyBin, "sse-relay", "token", "--secret", secret, "--channel", "user.42",
		"--audience", "sse-relay", "--issuer", "https://app.example.com").Output()
	if err != nil {
		t.Fatalf("token --audience --issuer: %v", err)
	}
	openMany(t, n.base+"/events/user.42?token="+strings.TrimSpace(string(out)), 1)
	if _, err := open(n.base+"/events/user.42?token="+tok, nil); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("token without aud and iss: %v", err)
	}
}

// TestCLIHistory: `caddy sse-relay schema` prints the Postgres schema and
// the Redis function library, `--apply` creates them, and `notify
// --history` publishes through the log, so the event carries its
// position as id and stays in the log.
func TestCLIHistory(t *testing.T) {
	out, err := exec.Command(caddyBin, "sse-relay", "schema").Output()
	if err != nil || !strings.Contains(string(out), "CREATE SCHEMA IF NOT EXISTS sse_relay") {
		t.Fatalf("schema: %v\n%s", err, out)
	}
	out, err = exec.Command(caddyBin, "sse-relay", "schema", "--broker", servers.Redis(t).URL()).Output()
	if err != nil || !strings.Contains(string(out), "sse_relay_publish") {
		t.Fatalf("schema --broker redis: %v\n%s", err, out)
	}
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, servers.PG(t).URL())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	for _, sql := range []string{`DROP DATABASE IF EXISTS clilog`, `CREATE DATABASE clilog`} {
		if _, err := admin.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	pgURL := strings.Replace(servers.PG(t).URL(), "/postgres?", "/clilog?", 1)
	for _, url := range []string{pgURL, servers.Redis(t).URL()} {
		out, err := exec.Command(caddyBin, "sse-relay", "schema", "--apply", "--broker", url).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "event log ready") {
			t.Fatalf("schema --apply --broker %s: %v\n%s", url, err, out)
		}
		n := startNode(t, "broker "+url+"\nhistory 10")
		s := openMany(t, n.base+"/events/clilog", 1)[0]
		out, err = exec.Command(caddyBin, "sse-relay", "notify", "--broker", url, "--history", "10",
			"--channel", "clilog", "--data", "logged").CombinedOutput()
		if err != nil {
			t.Fatalf("notify --history: %v\n%s", err, out)
		}
		ev, err := s.Next(10 * time.Second)
		if err != nil || ev.Data != "logged" || !regexp.MustCompile(`^\d+-\d+$`).MatchString(ev.ID) {
			t.Fatalf("%s: got %+v, %v; want the event with its log position as id", url, ev, err)
		}
	}
	var n int
	logged, err := pgx.Connect(ctx, pgURL)
	if err != nil {
		t.Fatal(err)
	}
	defer logged.Close(ctx)
	if err := logged.QueryRow(ctx, `SELECT count(*) FROM sse_relay.events WHERE channel = 'clilog'`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("sse_relay.events has %d rows for clilog (%v), want 1", n, err)
	}
}
