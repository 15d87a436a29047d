package sserelay

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sse-relay/caddy-sse-relay/broker"
	"github.com/sse-relay/caddy-sse-relay/hub"
)

// expectReset reads until the reset signal arrives.
func expectReset(t *testing.T, c *sseClient) {
	t.Helper()
	for {
		ev := c.next(t)
		if ev.Name == hub.ResetEvent {
			if !strings.Contains(ev.Data, "broker-reconnect") {
				t.Fatalf("reset %+v", ev)
			}
			return
		}
	}
}

func TestPostgresFaults(t *testing.T) {
	load(t, site("broker "+servers.PG(t).URL()+"\npublish_key "+testPublishKey))
	c := subscribe(t, "/events/fault")

	// 0. A payload Postgres itself refuses (text cannot hold invalid
	// UTF-8) is the publisher's fault: 400, and the connection stays.
	if code, _, body := do(t, "POST", "/events/fault", "bad \xff\xfe bytes", "Authorization", "Bearer "+testPublishKey); code != 400 {
		t.Fatalf("payload Postgres refuses: %d %q, want 400", code, body)
	}

	// 1. The relay's backend is terminated.
	admin := pgConn(t)
	pgExec(t, admin, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'caddy-sse-relay'`)
	expectReset(t, c)
	pgExec(t, admin, `SELECT pg_notify('fault', 'after terminate')`)
	if ev := c.next(t); ev.Data != "after terminate" {
		t.Fatalf("got %+v", ev)
	}

	// 2. The server goes away (crash) and comes back. A client that
	// arrives during the outage still gets its 200, then its events.
	if err := servers.PG(t).Kill(); err != nil {
		t.Fatal(err)
	}
	// Publishing over HTTP in the outage queues nothing: 503, try later.
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, hdr, body := do(t, "POST", "/events/fault", "in the outage", "Authorization", "Bearer "+testPublishKey)
		if code == 503 && hdr.Get("Retry-After") != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("POST while Postgres is down: %d %q, want 503 with Retry-After", code, body)
		}
		time.Sleep(50 * time.Millisecond) // the relay has not noticed yet
	}
	start := time.Now()
	during := subscribe(t, "/events/fault")
	if waited := time.Since(start); waited > 3*time.Second {
		t.Fatalf("a subscriber during the outage waited %v for its headers", waited)
	}
	if err := servers.PG(t).Start(); err != nil {
		t.Fatal(err)
	}
	expectReset(t, c)
	expectReset(t, during)
	admin = pgConn(t)
	pgExec(t, admin, `SELECT pg_notify('fault', 'after restart')`)
	for _, s := range []*sseClient{c, during} {
		if ev := s.next(t); ev.Data != "after restart" {
			t.Fatalf("got %+v", ev)
		}
	}
}

func TestRedisFaults(t *testing.T) {
	load(t, site("broker "+servers.Redis(t).URL()))
	c := subscribe(t, "/events/fault")
	rc := redisClient(t)
	ctx := context.Background()

	// 1. The pub/sub client is killed.
	if err := rc.ClientKillByFilter(ctx, "TYPE", "pubsub").Err(); err != nil {
		t.Fatal(err)
	}
	expectReset(t, c)
	if err := rc.Publish(ctx, "fault", "after kill").Err(); err != nil {
		t.Fatal(err)
	}
	if ev := c.next(t); ev.Data != "after kill" {
		t.Fatalf("got %+v", ev)
	}

	// 2. Redis restarts.
	if err := servers.Redis(t).Kill(); err != nil {
		t.Fatal(err)
	}
	during := subscribe(t, "/events/fault")
	if err := servers.Redis(t).Start(); err != nil {
		t.Fatal(err)
	}
	expectReset(t, c)
	expectReset(t, during)
	if err := rc.Publish(ctx, "fault", "after restart").Err(); err != nil {
		t.Fatal(err)
	}
	for _, s := range []*sseClient{c, during} {
		if ev := s.next(t); ev.Data != "after restart" {
			t.Fatalf("got %+v", ev)
		}
	}
}

// fanOut opens 300 subscribers over 3 channels, publishes 50 events on
// each channel and checks every subscriber got its channel's 50, in order.
func fanOut(t *testing.T, publish func(channel, payload string), during func()) {
	const perChannel, events = 100, 50
	channels := []string{"alpha", "beta", "gamma"}
	clients := make([][]*sseClient, len(channels))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for ci, ch := range channels {
		for i := 0; i < perChannel; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := trySubscribe("/events/" + ch)
				if err != nil || c.Response.StatusCode != 200 {
					t.Errorf("subscribe %s: %v", ch, err)
					return
				}
				mu.Lock()
				clients[ci] = append(clients[ci], c)
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	defer func() {
		for _, cs := range clients {
			for _, c := range cs {
				c.Close()
			}
		}
	}()
	if t.Failed() {
		return
	}
	for i := 0; i < events; i++ {
		for _, ch := range channels {
			publish(ch, fmt.Sprintf(`{"event":"n","data":"%s-%d"}`, ch, i))
		}
	}
	if during != nil {
		during()
	}
	for ci, cs := range clients {
		for _, c := range cs {
			for i := 0; i < events; i++ {
				ev := c.next(t)
				if want := fmt.Sprintf("%s-%d", channels[ci], i); ev.Data != want || ev.Name != "n" {
					t.Fatalf("client of %s got %+v, want data %q", channels[ci], ev, want)
				}
			}
		}
	}
	t.Logf("%d subscribers on %d channels each got all %d events", perChannel*len(channels), len(channels), events)
}

func TestFanOutPostgresOneConnection(t *testing.T) {
	load(t, site("broker "+servers.PG(t).URL()))
	conn := pgConn(t)
	relayConns := func() int {
		return pgInt(t, conn, `SELECT count(*) FROM pg_stat_activity WHERE application_name = 'caddy-sse-relay'`)
	}
	fanOut(t, func(ch, payload string) {
		pgExec(t, conn, `SELECT pg_notify($1, $2)`, ch, payload)
	}, func() {
		if n := relayConns(); n != 1 {
			t.Errorf("pg_stat_activity shows %d relay connections, want 1", n)
		}
	})
}

func TestFanOutRedisOneConnection(t *testing.T) {
	load(t, site("broker "+servers.Redis(t).URL()))
	rc := redisClient(t)
	fanOut(t, func(ch, payload string) {
		if err := rc.Publish(context.Background(), ch, payload).Err(); err != nil {
			t.Fatal(err)
		}
	}, func() {
		list, err := rc.ClientList(context.Background()).Result()
		if err != nil {
			t.Fatal(err)
		}
		subscribers := 0
		for _, line := range strings.Split(list, "\n") {
			if strings.Contains(line, "name=caddy-sse-relay") && !strings.Contains(line, " sub=0 ") {
				subscribers++
			}
		}
		if subscribers != 1 {
			t.Errorf("CLIENT LIST shows %d relay pub/sub connections, want 1:\n%s", subscribers, list)
		}
	})
}

func TestFanOutMemoryHTTPPublish(t *testing.T) {
	load(t, site("broker memory://\npublish_key "+testPublishKey))
	fanOut(t, func(ch, payload string) {
		if code, _, body := do(t, "POST", "/events/"+ch, payload, "Authorization", "Bearer "+testPublishKey); code != 202 {
			t.Fatalf("publish: %d %s", code, body)
		}
	}, nil)
}

// TestHistoryAcrossBrokerOutage: with history, an event published while
// the relay's broker connection is gone reaches the open stream once the
// connection is back, with no reset: the relay goes on from the log.
func TestHistoryAcrossBrokerOutage(t *testing.T) {
	ctx := context.Background()
	for name, url := range historyBrokers(t) {
		t.Run(name, func(t *testing.T) {
			load(t, historySite(url, ""))
			waitHealthy(t)
			ch := uniq("out")
			c := subscribe(t, "/a/"+ch)
			post(t, "/a/"+ch, "before")
			if ev := c.next(t); ev.Data != "before" {
				t.Fatalf("got %+v", ev)
			}
			if name == "postgres" {
				// Terminate the relays' connections, and publish before
				// they can be back.
				admin := pgConn(t)
				pgExec(t, admin, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'caddy-sse-relay'`)
				pgExec(t, admin, `SELECT sse_relay.publish($1, 'during')`, ch)
			} else {
				// Kill the pub/sub connections and publish in one round trip.
				rc := redisClient(t)
				if _, err := rc.Pipelined(ctx, func(p redis.Pipeliner) error {
					p.ClientKillByFilter(ctx, "TYPE", "pubsub")
					p.FCall(ctx, "sse_relay_publish", []string{broker.RedisLogKey(ch)}, "during", 100, 0)
					return nil
				}); err != nil {
					t.Fatal(err)
				}
			}
			if ev := c.next(t); ev.Data != "during" {
				t.Fatalf("after the outage: %+v, want the event published during it", ev)
			}
			// The backfill comes before the connection counts as up.
			waitHealthy(t)
			post(t, "/a/"+ch, "after")
			if ev := c.next(t); ev.Data != "after" {
				t.Fatalf("got %+v", ev)
			}
			c.nothing(t, 300*time.Millisecond)
		})
	}
}
