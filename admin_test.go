package sserelay

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

func adminGet(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://localhost:2999" + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestMetricsStatsHealth: the Prometheus metrics, /sse_relay/stats and
// /sse_relay/health on the admin endpoint, through a broker outage.
func TestMetricsStatsHealth(t *testing.T) {
	// The password in the user info and as a query value: neither may
	// show in a label, the stats or a log line.
	withPassword := strings.Replace(servers.PG(t).URL(), "postgres@", "postgres:hunter2@", 1) + "&password=hunter2"
	load(t, site("broker "+withPassword+"\nbuffer 1\npublish_key "+testPublishKey))
	waitStreams(t, 0) // the counts below are this test's alone
	conn := pgConn(t)
	a := subscribe(t, "/events/m1")
	b := subscribe(t, "/events/?channel=m1,m2")
	// The refused payload first: once 'one' arrives, the broker's reader
	// has counted it.
	pgExec(t, conn, `SELECT pg_notify('m1', '{"event":"bad\nx","data":"refused"}')`)
	pgExec(t, conn, `SELECT pg_notify('m1', 'one')`)
	a.next(t)
	b.next(t)
	do(t, "GET", "/events/?channel=a%20b", "") // a 400 is no stream

	code, body := adminGet(t, "/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	var excerpt []string
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, "caddy_sse_relay_") {
			excerpt = append(excerpt, line)
		}
	}
	text := strings.Join(excerpt, "\n")
	for _, want := range []string{
		`caddy_sse_relay_streams_open 2`,
		fmt.Sprintf(`caddy_sse_relay_broker_connected{broker="postgres://postgres@127.0.0.1:%d/postgres"} 1`, servers.PG(t).Port),
		// Counters live as long as the process: 1 or more.
		`caddy_sse_relay_payloads_refused_total{reason="event_has_control_characters"} `,
		`caddy_sse_relay_publish_to_write_seconds_count`,
		`caddy_sse_relay_frames_delivered_total`,
		`caddy_sse_relay_events_received_total{broker=`,
		`caddy_sse_relay_streams_opened_total`,
		`caddy_sse_relay_broker_reconnects_total{broker=`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %q; sse_relay lines:\n%s", want, text)
		}
	}
	if strings.Contains(body, "hunter2") {
		t.Fatal("/metrics shows the broker password")
	}
	if regexp.MustCompile(`caddy_sse_relay_[a-z_]+\{[^}]*m1`).MatchString(text) {
		t.Fatal("a channel name is a metric label")
	}
	t.Logf("metrics excerpt:\n%s", text)

	code, body = adminGet(t, "/sse_relay/stats")
	if code != 200 || strings.Contains(body, "hunter2") {
		t.Fatalf("/sse_relay/stats: %d %s", code, body)
	}
	var st stats
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatal(err)
	}
	if st.Totals.Streams != 2 || st.Totals.Subscribers != 3 || len(st.Brokers) != 1 || st.Brokers[0].State != "connected" {
		t.Fatalf("stats %+v", st)
	}
	t.Logf("/sse_relay/stats:\n%s", body)

	if code, body := adminGet(t, "/sse_relay/health"); code != 200 {
		t.Fatalf("health with the broker up: %d %s", code, body)
	}
	if err := servers.PG(t).Kill(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body := adminGet(t, "/sse_relay/health")
		if code == 503 && strings.Contains(body, "broker down") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("health with the broker down: %d %s", code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := servers.PG(t).Start(); err != nil {
		t.Fatal(err)
	}
	expectReset(t, a)
	if code, body := adminGet(t, "/sse_relay/health"); code != 200 {
		t.Fatalf("health after recovery: %d %s", code, body)
	}
	_, body = adminGet(t, "/metrics")
	if !regexp.MustCompile(`caddy_sse_relay_broker_reconnects_total\{[^}]*\} [1-9]`).MatchString(body) {
		t.Fatal("the reconnect was not counted")
	}
}

// TestHistoryStats: with history, /sse_relay/stats shows each relay's log
// (its settings, depth and oldest entry, resumes that read it) and the
// resets sent by reason, and /metrics exports the same.
func TestHistoryStats(t *testing.T) {
	load(t, historySite(historyBrokers(t)["postgres"], ""))
	ch := uniq("st")
	c := subscribe(t, "/a/"+ch)
	post(t, "/a/"+ch, "one")
	_, id := idOf(t, c)
	post(t, "/a/"+ch, "two")
	subscribe(t, "/b/"+ch, "Last-Event-ID", id).next(t) // a resume on a relay that must read the log
	unknown := subscribe(t, "/b/"+ch, "Last-Event-ID", "not-a-cursor")
	unknown.next(t)

	code, body := adminGet(t, "/sse_relay/stats")
	if code != 200 {
		t.Fatalf("stats: %d", code)
	}
	var stats struct {
		Brokers []struct {
			Resets  map[string]int `json:"resets"`
			History *struct {
				Count int `json:"count"`
				Depth struct {
					Entries int       `json:"entries"`
					Oldest  time.Time `json:"oldest"`
				} `json:"depth"`
				Backfills int `json:"backfills"`
			} `json:"history"`
		} `json:"brokers"`
	}
	if err := json.Unmarshal([]byte(body), &stats); err != nil {
		t.Fatal(err)
	}
	backfills, unknowns := 0, 0
	for _, b := range stats.Brokers {
		if b.History == nil || b.History.Count != 100 || b.History.Depth.Entries < 2 || b.History.Depth.Oldest.IsZero() {
			t.Fatalf("relay without its log's stats:\n%s", body)
		}
		backfills += b.History.Backfills
		unknowns += b.Resets["unknown-id"]
	}
	if backfills < 1 || unknowns < 1 {
		t.Fatalf("backfills %d, unknown-id resets %d:\n%s", backfills, unknowns, body)
	}
	_, metricsText := adminGet(t, "/metrics")
	for _, want := range []string{
		`caddy_sse_relay_history_backfills_total{broker="postgres://postgres@`,
		`caddy_sse_relay_history_entries{broker="postgres://postgres@`,
		`caddy_sse_relay_history_oldest_seconds{broker="postgres://postgres@`,
		`reason="unknown-id"`,
	} {
		if !strings.Contains(metricsText, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// TestBrokerName: `broker <url> <name>` names the broker in the stats and
// the metric labels instead of its URL's label.
func TestBrokerName(t *testing.T) {
	load(t, site("broker "+servers.Redis(t).URL()+" sessions"))
	subscribe(t, "/events/named")
	_, stats := adminGet(t, "/sse_relay/stats")
	_, metricsText := adminGet(t, "/metrics")
	if !strings.Contains(stats, `"url": "sessions"`) || !strings.Contains(metricsText, `caddy_sse_relay_broker_connected{broker="sessions"} 1`) {
		t.Fatalf("the broker's name is not its label:\n%s", stats)
	}
}
