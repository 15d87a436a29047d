package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/sse-relay/caddy-sse-relay/broker"
	"github.com/sse-relay/caddy-sse-relay/hub"
	"github.com/sse-relay/caddy-sse-relay/internal/sseclient"
)

// historyNode is the sse_relay block of a node with history on brokerURL.
func historyNode(brokerURL string) string {
	return "broker " + brokerURL + "\nhistory 1000\nheartbeat 1s\nmax_connections_per_ip 5000"
}

// frontSite is a Caddy that spreads /events/* over the nodes round-robin,
// as a load balancer does, retrying another node while one is down.
func frontSite(nodes ...*node) string {
	var upstreams []string
	for _, n := range nodes {
		upstreams = append(upstreams, strings.TrimPrefix(n.base, "http://"))
	}
	return fmt.Sprintf(`reverse_proxy /events/* %s {
		lb_policy round_robin
		lb_try_duration 5s
		lb_try_interval 50ms
		fail_duration 1s
		flush_interval -1
	}`, strings.Join(upstreams, " "))
}

// publisher publishes event n on a channel through the log, as an
// application would: sse_relay.publish in a transaction, or the Redis
// function.
type publisher func(ctx context.Context, channel, data string) error

func pgPublisher(t *testing.T) publisher {
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, servers.PG(t).URL())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, broker.PostgresSchema); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conn *pgx.Conn
	t.Cleanup(func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	})
	return func(ctx context.Context, channel, data string) error {
		mu.Lock()
		defer mu.Unlock()
		if conn == nil || conn.IsClosed() {
			c, err := pgx.Connect(ctx, servers.PG(t).URL())
			if err != nil {
				return err
			}
			conn = c
		}
		return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `SELECT sse_relay.publish($1, $2)`, channel, data)
			return err
		})
	}
}

func redisPublisher(t *testing.T) publisher {
	rc := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", servers.Redis(t).Port)})
	t.Cleanup(func() { rc.Close() })
	return func(ctx context.Context, channel, data string) error {
		return rc.FCall(ctx, "sse_relay_publish", []string{broker.RedisLogKey(channel)}, data, 1000, 0).Err()
	}
}

// TestHistoryAcrossNodesDeploysAndOutages: two nodes with history behind
// a third Caddy that proxies round-robin to them; 200 clients that
// reconnect with Last-Event-ID, on two channels and on both at once; 300
// events at 100/s. While they go out, one node gets SIGTERM and is started
// again (a deploy), the relays' broker connections are killed, and the
// broker itself is killed and restarted (Redis with its append-only file).
// Every client ends with every event of its channels exactly once, in
// order per channel, and no reset.
func TestHistoryAcrossNodesDeploysAndOutages(t *testing.T) {
	for _, b := range []struct {
		name    string
		url     func(*testing.T) string
		publish func(*testing.T) publisher
		kill    func(*testing.T)
		restart func(*testing.T)
	}{
		{"postgres", func(t *testing.T) string { return servers.PG(t).URL() }, pgPublisher, killPGRelays,
			func(t *testing.T) { restart(t, servers.PG(t).Kill, servers.PG(t).Start) }},
		{"redis", func(t *testing.T) string { return servers.Redis(t).URL() }, redisPublisher, killRedisRelays,
			func(t *testing.T) { restart(t, servers.Redis(t).Kill, servers.Redis(t).Start) }},
	} {
		t.Run(b.name, func(t *testing.T) {
			publish := b.publish(t)
			nodeA := startNode(t, historyNode(b.url(t)))
			nodeB := startNode(t, historyNode(b.url(t)))
			front := startSite(t, frontSite(nodeA, nodeB))
			suffix := strconv.FormatInt(time.Now().UnixNano(), 36)
			h1, h2 := "h1"+suffix, "h2"+suffix
			paths := []string{"/events/" + h1, "/events/" + h2, "/events/?channel=" + h1 + "," + h2}

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: -1, DisableCompression: true}}
			var clients []*sseclient.Resumer
			for i := range 200 {
				clients = append(clients, &sseclient.Resumer{URL: front.base + paths[i%3], Client: client,
					Reset: hub.ResetEvent, Retry: 100 * time.Millisecond})
			}
			wait := sseclient.RunAll(ctx, clients)

			const events = 300
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
			for i := range events {
				<-tick.C
				ch := h1
				if i%2 == 1 {
					ch = h2
				}
				switch i {
				case 60: // a deploy: SIGTERM, then the same node again
					_ = nodeA.cmd.Process.Signal(syscall.SIGTERM)
					waitExit(t, nodeA, 10*time.Second, "SIGTERM", time.Now())
					nodeA.start(t)
				case 140:
					b.kill(t)
				case 220:
					b.restart(t)
				}
				for attempt := 0; ; attempt++ {
					err := publish(ctx, ch, strconv.Itoa(i))
					if err == nil {
						break
					}
					if attempt > 100 {
						t.Fatalf("publishing event %d: %v", i, err)
					}
					time.Sleep(50 * time.Millisecond)
				}
			}

			deadline := time.Now().Add(60 * time.Second)
			for _, r := range clients {
				want := events
				if !strings.Contains(r.URL, ",") {
					want = events / 2
				}
				for r.Count() < want && time.Now().Before(deadline) {
					time.Sleep(20 * time.Millisecond)
				}
			}
			time.Sleep(200 * time.Millisecond) // room for a duplicate to show
			cancel()
			wait()
			checkExactlyOnce(t, clients, h1, h2, events)
		})
	}
}

// checkExactlyOnce fails unless each client got every event of its
// channels once, in order per channel, and no reset.
func checkExactlyOnce(t *testing.T, clients []*sseclient.Resumer, h1, h2 string, events int) {
	t.Helper()
	reconnects := 0
	for i, r := range clients {
		if resets := r.Resets(); len(resets) > 0 {
			t.Fatalf("client %d (%s) got %d resets, first %+v", i, r.URL, len(resets), resets[0])
		}
		perChannel := map[int][]string{}
		for _, ev := range r.Events() {
			n, err := strconv.Atoi(ev.Data)
			if err != nil {
				t.Fatalf("client %d: event %+v", i, ev)
			}
			perChannel[n%2] = append(perChannel[n%2], ev.Data)
		}
		for parity := range 2 {
			name := []string{h1, h2}[parity]
			if !strings.Contains(r.URL, name) {
				if len(perChannel[parity]) > 0 {
					t.Fatalf("client %d (%s) got events of %s", i, r.URL, name)
				}
				continue
			}
			var want []string
			for n := parity; n < events; n += 2 {
				want = append(want, strconv.Itoa(n))
			}
			if got := strings.Join(perChannel[parity], ","); got != strings.Join(want, ",") {
				t.Fatalf("client %d (%s), channel %s: got %d events, want %d exactly once in order:\n got %s",
					i, r.URL, name, len(perChannel[parity]), len(want), got)
			}
		}
		reconnects += r.Reconnects()
	}
	if reconnects < len(clients)/3 {
		t.Fatalf("only %d reconnects: the faults did not reach the clients", reconnects)
	}
	t.Logf("%d clients, %d events: every event exactly once, in order per channel, no reset; %d reconnects",
		len(clients), events, reconnects)
}

// killPGRelays terminates every relay's Postgres connection.
func killPGRelays(t *testing.T) {
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, servers.PG(t).URL())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'caddy-sse-relay'`); err != nil {
		t.Fatal(err)
	}
}

// killRedisRelays kills every relay's pub/sub connection.
func killRedisRelays(t *testing.T) {
	rc := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", servers.Redis(t).Port)})
	defer rc.Close()
	if err := rc.ClientKillByFilter(context.Background(), "TYPE", "pubsub").Err(); err != nil {
		t.Fatal(err)
	}
}

// restart kills the broker, waits a moment and starts it again.
func restart(t *testing.T, kill, start func() error) {
	if err := kill(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if err := start(); err != nil {
		t.Fatal(err)
	}
}
