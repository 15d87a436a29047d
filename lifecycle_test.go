package sserelay

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sse-relay/caddy-sse-relay/hub"
	"github.com/sse-relay/caddy-sse-relay/internal/sseclient"
)

// TestReloadUnderLoad: 200 clients that resume with Last-Event-ID, on two
// channels, while 300 events go out through Postgres at 100/s and the
// config is reloaded three times through the admin API. Every client ends
// with every event of its channels exactly once, in order.
func TestReloadUnderLoad(t *testing.T) {
	config := func(heartbeat string) string {
		return site("broker " + servers.PG(t).URL() + "\nreload_close_window 500ms\nheartbeat " + heartbeat)
	}
	load(t, config("10s"))
	conn := pgConn(t)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var clients []*sseclient.Resumer
	for i := 0; i < 200; i++ {
		path := "/events/r1"
		if i%2 == 1 {
			path = "/events/?channel=r1,r2"
		}
		clients = append(clients, &sseclient.Resumer{URL: base + path, Client: streamClient, Reset: hub.ResetEvent})
	}
	wait := sseclient.RunAll(ctx, clients)

	const events = 300
	start := time.Now()
	tick := time.NewTicker(10 * time.Millisecond)
	reloads := 0
	for i := 0; i < events; i++ {
		<-tick.C
		ch := "r1"
		if i%2 == 1 {
			ch = "r2"
		}
		pgExec(t, conn, `SELECT pg_notify($1, $2)`, ch, strconv.Itoa(i))
		if i%75 == 74 && reloads < 3 {
			reloads++
			load(t, config([]string{"11s", "10s", "12s"}[reloads-1]))
		}
	}
	tick.Stop()
	publishTime := time.Since(start)

	deadline := time.Now().Add(30 * time.Second)
	for _, r := range clients {
		want := events
		if r.URL == base+"/events/r1" {
			want = events / 2
		}
		for r.Count() < want && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
	}
	cancel()
	wait()

	totalReconnects, totalResets := 0, 0
	for i, r := range clients {
		var want, got []string
		for n := 0; n < events; n++ {
			if r.URL == base+"/events/r1" && n%2 == 1 {
				continue
			}
			want = append(want, strconv.Itoa(n))
		}
		for _, ev := range r.Events() {
			got = append(got, ev.Data)
		}
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Fatalf("client %d (%s) got %d events, want %d exactly once in order:\n got %s", i, r.URL, len(got), len(want), strings.Join(got, ","))
		}
		totalReconnects += r.Reconnects()
		totalResets += len(r.Resets())
	}
	if totalResets != 0 {
		t.Fatalf("%d reset signals: nothing was lost, so none should come", totalResets)
	}
	if totalReconnects < 3*len(clients) {
		t.Fatalf("only %d reconnects: the reloads did not end the old streams", totalReconnects)
	}
	t.Logf("%d clients, %d events in %v, %d reloads, %d reconnects: every event exactly once",
		len(clients), events, publishTime.Round(time.Millisecond), reloads, totalReconnects)
}

// TestStreamsLeaveNothingBehind opens and closes 10,000 streams in rounds
// and checks goroutines and heap return near where they started.
func TestStreamsLeaveNothingBehind(t *testing.T) {
	load(t, site("publish_key "+testPublishKey+"\nlinger 0\nmax_connections_per_ip 5000"))
	settle := func() (int, uint64) {
		var ms runtime.MemStats
		for i := 0; i < 3; i++ {
			runtime.GC()
			time.Sleep(100 * time.Millisecond)
		}
		runtime.ReadMemStats(&ms)
		return runtime.NumGoroutine(), ms.HeapInuse
	}
	// One round first, so pools and caches are warm.
	round := func(n int) {
		var wg sync.WaitGroup
		var failed atomic.Int32
		clients := make([]*sseClient, n)
		for i := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := trySubscribe(fmt.Sprintf("/events/leak%d", i%50))
				if err != nil || c.Response.StatusCode != 200 {
					failed.Add(1)
					return
				}
				clients[i] = c
			}()
		}
		wg.Wait()
		if failed.Load() > 0 {
			t.Fatalf("%d subscribes failed", failed.Load())
		}
		do(t, "POST", "/events/?channel=leak0,leak1", "x", "Authorization", "Bearer "+testPublishKey)
		for _, c := range clients {
			c.Close()
		}
	}
	round(1000)
	streamClient.CloseIdleConnections()
	g0, h0 := settle()
	for i := 0; i < 10; i++ {
		round(1000)
	}
	streamClient.CloseIdleConnections()
	var g1 int
	var h1 uint64
	deadline := time.Now().Add(10 * time.Second)
	for {
		g1, h1 = settle()
		if g1 <= g0+10 || time.Now().After(deadline) {
			break
		}
	}
	t.Logf("after 10,000 streams: goroutines %d -> %d, heap in use %d KiB -> %d KiB", g0, g1, h0>>10, h1>>10)
	if g1 > g0+10 {
		buf := make([]byte, 1<<20)
		n := runtime.Stack(buf, true)
		t.Fatalf("goroutines grew from %d to %d:\n%s", g0, g1, buf[:n])
	}
	if h1 > h0+8<<20 {
		t.Fatalf("heap in use grew from %d KiB to %d KiB", h0>>10, h1>>10)
	}
}

// TestReloadToAnotherBroker: a reload that changes the broker URL opens
// the new connection before the old one closes. The old config's stream
// keeps receiving through the old connection until it ends, and the old
// connection closes when its last stream has gone.
func TestReloadToAnotherBroker(t *testing.T) {
	oldURL := servers.PG(t).URL()
	newURL := oldURL + "&connect_timeout=9" // another URL, the same database
	// A long window: the old stream must outlive the checks below; the
	// test ends it itself.
	load(t, site("broker "+oldURL+"\nreload_close_window 60s"))
	conn := pgConn(t)
	relayConns := func() int {
		return pgInt(t, conn, `SELECT count(*) FROM pg_stat_activity WHERE application_name = 'caddy-sse-relay'`)
	}
	waitConns := func(want int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for relayConns() != want {
			if time.Now().After(deadline) {
				t.Fatalf("relay connections: %d, want %d", relayConns(), want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitConns(1)
	old := subscribe(t, "/events/swap")

	load(t, site("broker "+newURL+"\nreload_close_window 60s"))
	waitConns(2) // the new connection, and the old one still open
	fresh := subscribe(t, "/events/swap")
	pgExec(t, conn, `SELECT pg_notify('swap', 'after the reload')`)
	for name, c := range map[string]*sseClient{"the old config's stream": old, "the new config's stream": fresh} {
		if ev := c.next(t); ev.Data != "after the reload" {
			t.Fatalf("%s got %+v", name, ev)
		}
	}

	old.Close()
	waitConns(1) // the old connection closed with its last stream
	pgExec(t, conn, `SELECT pg_notify('swap', 'on the new connection')`)
	if ev := fresh.next(t); ev.Data != "on the new connection" {
		t.Fatalf("the new config's stream got %+v", ev)
	}
}
