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
)

// resumer is a client that reconnects with Last-Event-ID whenever its
// stream ends, as EventSource does, and keeps every event it got.
type resumer struct {
	path       string
	mu         sync.Mutex
	data       []string
	resets     int
	reconnects int
	lastID     string
}

func (r *resumer) run(ctx context.Context, opened *sync.WaitGroup) {
	first := true
	for ctx.Err() == nil {
		r.mu.Lock()
		last := r.lastID
		r.mu.Unlock()
		var hdr []string
		if last != "" {
			hdr = []string{"Last-Event-ID", last}
		}
		c, err := trySubscribe(r.path, hdr...)
		if first {
			opened.Done()
			first = false
		}
		if err != nil || c.resp.StatusCode != 200 {
			if c != nil {
				c.Close()
			}
			time.Sleep(50 * time.Millisecond)
			continue
		}
		stop := context.AfterFunc(ctx, c.Close)
		for ev := range c.events {
			r.mu.Lock()
			if ev.Name == hub.ResetEvent {
				r.resets++
			} else {
				r.data = append(r.data, ev.Data)
			}
			if ev.ID != "" {
				r.lastID = ev.ID
			}
			r.mu.Unlock()
		}
		stop()
		c.Close()
		if ctx.Err() == nil {
			r.mu.Lock()
			r.reconnects++
			r.mu.Unlock()
		}
	}
}

func (r *resumer) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.data)
}

// TestReloadUnderLoad: 200 clients that resume with Last-Event-ID, on two
// channels, while 300 events go out through Postgres at 100/s and the
// config is reloaded three times through the admin API. Every client ends
// with every event of its channels exactly once, in order.
func TestReloadUnderLoad(t *testing.T) {
	config := func(heartbeat string) string {
		return site("broker " + servers.PG.URL() + "\nreload_close_window 500ms\nheartbeat " + heartbeat)
	}
	load(t, config("10s"))
	conn := pgConn(t)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var clients []*resumer
	var opened, done sync.WaitGroup
	for i := 0; i < 200; i++ {
		path := "/events/r1"
		if i%2 == 1 {
			path = "/events/?channel=r1,r2"
		}
		r := &resumer{path: path}
		clients = append(clients, r)
		opened.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			r.run(ctx, &opened)
		}()
	}
	opened.Wait()

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
		if r.path == "/events/r1" {
			want = events / 2
		}
		for r.count() < want && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
	}
	cancel()
	done.Wait()

	totalReconnects, totalResets := 0, 0
	for i, r := range clients {
		var want []string
		for n := 0; n < events; n++ {
			if r.path == "/events/r1" && n%2 == 1 {
				continue
			}
			want = append(want, strconv.Itoa(n))
		}
		if got := strings.Join(r.data, ","); got != strings.Join(want, ",") {
			t.Fatalf("client %d (%s) got %d events, want %d exactly once in order:\n got %s", i, r.path, len(r.data), len(want), got)
		}
		totalReconnects += r.reconnects
		totalResets += r.resets
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

func idOf(t *testing.T, c *sseClient) (event, string) {
	t.Helper()
	ev := c.next(t)
	if ev.ID == "" {
		t.Fatalf("event %+v has no id", ev)
	}
	return ev, ev.ID
}

func TestReplayOverHTTP(t *testing.T) {
	load(t, site("publish_key k\nreplay 100"))
	pub := func(ch, payload string) {
		t.Helper()
		if code, _, body := do(t, "POST", "/events/"+ch, payload, "Authorization", "Bearer k"); code != 202 {
			t.Fatalf("publish: %d %s", code, body)
		}
	}
	c := subscribe(t, "/events/?channel=p1,p2")
	pub("p1", "a")
	_, id := idOf(t, c)
	c.Close()
	pub("p2", "b")
	pub("p1", `{"id":"mine-1","data":"c"}`)

	// Header form: the missed events in order, then live ones.
	r := subscribe(t, "/events/?channel=p1,p2", "Last-Event-ID", id)
	if ev := r.next(t); ev.Data != "b" {
		t.Fatalf("first replayed %+v", ev)
	}
	if ev := r.next(t); ev.Data != "c" || ev.ID != "mine-1" {
		t.Fatalf("second replayed %+v (publisher id kept)", ev)
	}
	pub("p2", "d")
	if ev := r.next(t); ev.Data != "d" {
		t.Fatalf("live after replay %+v", ev)
	}
	r.nothing(t, 200*time.Millisecond)

	// Query form, and a publisher's id as the resume point.
	q := subscribe(t, "/events/?channel=p1,p2&last_event_id=mine-1")
	if ev := q.next(t); ev.Data != "d" {
		t.Fatalf("query resume %+v", ev)
	}

	// An id no ring holds: the reset signal, then live events.
	u := subscribe(t, "/events/p1", "Last-Event-ID", "zzzz-99")
	if ev := u.next(t); ev.Name != hub.ResetEvent || !strings.Contains(ev.Data, "unknown-id") {
		t.Fatalf("unknown id: %+v", ev)
	}
	pub("p1", "e")
	if ev := u.next(t); ev.Data != "e" {
		t.Fatalf("after reset %+v", ev)
	}
}

// TestReplayLargeBacklog: a resume whose backlog spans many write chunks
// gets all of it, in order, then live events.
func TestReplayLargeBacklog(t *testing.T) {
	load(t, site("publish_key k\nreplay 1000"))
	pad := strings.Repeat("x", 1000)
	pub := func(n int) {
		t.Helper()
		if code, _, body := do(t, "POST", "/events/big", fmt.Sprintf("%d %s", n, pad), "Authorization", "Bearer k"); code != 202 {
			t.Fatalf("publish: %d %s", code, body)
		}
	}
	c := subscribe(t, "/events/big")
	pub(0)
	_, id := idOf(t, c)
	c.Close()
	const events = 600 // about 600 KiB: ten chunks
	for n := 1; n < events; n++ {
		pub(n)
	}
	r := subscribe(t, "/events/big", "Last-Event-ID", id)
	for n := 1; n < events; n++ {
		if ev := r.next(t); ev.Data != fmt.Sprintf("%d %s", n, pad) {
			t.Fatalf("replayed event %d: %.20q", n, ev.Data)
		}
	}
	pub(events)
	if ev := r.next(t); !strings.HasPrefix(ev.Data, fmt.Sprint(events)+" ") {
		t.Fatalf("live after replay: %.20q", ev.Data)
	}
}

func TestReplayOffHasNoRelayIDs(t *testing.T) {
	load(t, site("publish_key k\nreplay 0"))
	c := subscribe(t, "/events/x")
	do(t, "POST", "/events/x", "plain", "Authorization", "Bearer k")
	if ev := c.next(t); ev.ID != "" || ev.Data != "plain" {
		t.Fatalf("replay 0: %+v", ev)
	}
}

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
	load(t, site("broker "+servers.PG.URL()+"\npublish_key k"))
	c := subscribe(t, "/events/fault")

	// 0. A payload Postgres itself refuses (text cannot hold invalid
	// UTF-8) is the publisher's fault: 400, and the connection stays.
	if code, _, body := do(t, "POST", "/events/fault", "bad \xff\xfe bytes", "Authorization", "Bearer k"); code != 400 {
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
	if err := servers.PG.Kill(); err != nil {
		t.Fatal(err)
	}
	// Publishing over HTTP in the outage queues nothing: 503, try later.
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, hdr, body := do(t, "POST", "/events/fault", "in the outage", "Authorization", "Bearer k")
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
	if err := servers.PG.Start(); err != nil {
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
	load(t, site("broker "+servers.Redis.URL()))
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
	if err := servers.Redis.Kill(); err != nil {
		t.Fatal(err)
	}
	during := subscribe(t, "/events/fault")
	if err := servers.Redis.Start(); err != nil {
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

// TestStreamsLeaveNothingBehind opens and closes 10,000 streams in rounds
// and checks goroutines and heap return near where they started.
func TestStreamsLeaveNothingBehind(t *testing.T) {
	load(t, site("publish_key k\nlinger 0\nmax_connections_per_ip 5000"))
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
				if err != nil || c.resp.StatusCode != 200 {
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
		do(t, "POST", "/events/?channel=leak0,leak1", "x", "Authorization", "Bearer k")
		for _, c := range clients {
			c.Close()
		}
	}
	round(1000)
	streamTransport.CloseIdleConnections()
	g0, h0 := settle()
	for i := 0; i < 10; i++ {
		round(1000)
	}
	streamTransport.CloseIdleConnections()
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
	oldURL := servers.PG.URL()
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
