package broker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sse-relay/caddy-sse-relay/internal/testsrv"
)

var servers *testsrv.Servers

func TestMain(m *testing.M) { testsrv.Main(m, &servers) }

// recorder is a Sink that keeps what it got.
type recorder struct {
	mu     sync.Mutex
	got    []string // "channel payload"
	resets []string
	pos    []Position // of the entries, in order
	notify chan struct{}
}

func newRecorder() *recorder { return &recorder{notify: make(chan struct{}, 1000)} }

func (r *recorder) Deliver(ch string, payload []byte) {
	r.mu.Lock()
	r.got = append(r.got, ch+" "+string(payload))
	r.mu.Unlock()
	r.notify <- struct{}{}
}

// DeliverEntry keeps "channel payload" like Deliver, and the position.
func (r *recorder) DeliverEntry(e Entry) {
	r.mu.Lock()
	r.got = append(r.got, e.Channel+" "+string(e.Payload))
	r.pos = append(r.pos, e.Pos)
	r.mu.Unlock()
	r.notify <- struct{}{}
}

func (r *recorder) Reset(chs []string, reason string) {
	r.mu.Lock()
	r.resets = append(r.resets, chs...)
	r.mu.Unlock()
	r.notify <- struct{}{}
}

func (r *recorder) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		r.mu.Lock()
		ok := cond()
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-r.notify:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			r.mu.Lock()
			defer r.mu.Unlock()
			t.Fatalf("timed out waiting for %s; got %q resets %q", what, r.got, r.resets)
		}
	}
}

func (r *recorder) has(item string) bool {
	for _, g := range r.got {
		if g == item {
			return true
		}
	}
	return false
}

func waitReady(t *testing.T, c <-chan struct{}) {
	t.Helper()
	select {
	case <-c:
	case <-time.After(20 * time.Second):
		t.Fatal("listen never became ready")
	}
}

func open(t *testing.T, url string) (Broker, *recorder) {
	t.Helper()
	b, rec, _ := openLogged(t, url)
	return b, rec
}

// openLogged is open with the broker's log lines kept.
func openLogged(t *testing.T, url string) (Broker, *recorder, *observer.ObservedLogs) {
	t.Helper()
	return start(t, url, History{})
}

// start opens a broker, with history if set, starts it with a recorder
// and waits until it is connected.
func start(t *testing.T, url string, history History) (Broker, *recorder, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	b, err := Open(url, zap.New(core), history)
	if err != nil {
		t.Fatal(err)
	}
	if history.On() {
		if err := b.Log().Check(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	rec := newRecorder()
	b.Start(rec)
	t.Cleanup(func() { _ = b.Close() })
	deadline := time.Now().Add(20 * time.Second)
	for !b.Connected() {
		if time.Now().After(deadline) {
			t.Fatal("broker never connected")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return b, rec, logs
}

// pgQuery runs use on a connection of its own, closed afterwards.
func pgQuery(t *testing.T, use func(ctx context.Context, conn *pgx.Conn) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, servers.PG(t).URL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := use(ctx, conn); err != nil {
		t.Fatal(err)
	}
}

func pgExec(t *testing.T, sql string, args ...any) {
	t.Helper()
	pgQuery(t, func(ctx context.Context, conn *pgx.Conn) error {
		if _, err := conn.Exec(ctx, sql, args...); err != nil {
			return fmt.Errorf("%s: %w", sql, err)
		}
		return nil
	})
}

func pgCount(t *testing.T, sql string) (n int) {
	t.Helper()
	pgQuery(t, func(ctx context.Context, conn *pgx.Conn) error {
		if err := conn.QueryRow(ctx, sql).Scan(&n); err != nil {
			return fmt.Errorf("%s: %w", sql, err)
		}
		return nil
	})
	return n
}

// TestOpenSchemeAliases: postgresql:// is Postgres (and connects), and
// rediss:// is Redis over TLS (its client asks for TLS).
func TestOpenSchemeAliases(t *testing.T) {
	b, rec := open(t, strings.Replace(servers.PG(t).URL(), "postgres://", "postgresql://", 1))
	if !b.Limits().FoldsCase {
		t.Fatal("postgresql:// did not open the Postgres broker")
	}
	waitReady(t, b.Listen("alias"))
	if err := b.Publish(context.Background(), []string{"alias"}, []byte("x")); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "an event over postgresql://", func() bool { return rec.has("alias x") })

	r, err := Open("rediss://redis.example:6380/0", nil, History{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if rb, ok := r.(*redisBroker); !ok || rb.client.Options().TLSConfig == nil {
		t.Fatal("rediss:// did not open a Redis broker over TLS")
	}
}

func TestOpenRejectsUnknownScheme(t *testing.T) {
	for _, u := range []string{"mysql://x", "nats://localhost", "::bad"} {
		if _, err := Open(u, nil, History{}); err == nil {
			t.Errorf("Open(%q) succeeded", u)
		}
	}
}

// TestLabelNeverHasAPassword: every form of broker URL that pgx and
// go-redis accept gives a label (logs, stats, metrics) built from the
// parsed configuration, without the password wherever it was written,
// and so do Open's errors. Pure: nothing connects.
func TestLabelNeverHasAPassword(t *testing.T) {
	for raw, want := range map[string]string{
		"postgres://relay:s3cret@db:5433/app?sslmode=disable":             "postgres://relay@db:5433/app",
		"postgresql://relay@db/app?password=s3cret&sslmode=disable":       "postgresql://relay@db:5432/app",
		"postgres://relay@db/app?sslpassword=s3cret&sslmode=disable":      "postgres://relay@db:5432/app",
		"postgres://relay:p%40s3cret@db/app?sslmode=disable":              "postgres://relay@db:5432/app",
		"postgres://relay:pa?s3cret@db/app":                               "postgres://relay@db:5432/app",
		"postgres:///app?host=/run/postgresql&user=relay&password=s3cret": "postgres://relay@/run/postgresql:5432/app",
		"redis://:s3cret@cache:6380/2":                                    "redis://cache:6380/2",
		"rediss://default:s3cret@cache:6380":                              "rediss://default@cache:6380/0",
		"redis://relay:s3cret@cache/3?client_name=x":                      "redis://relay@cache:6379/3",
		"redis://relay:pa?s3cret@cache/3":                                 "redis://(unparsable)",
		"memory://":                                                       "memory://",
		"mysql://relay:s3cret@db/app":                                     "(unknown broker)",
	} {
		got := Label(raw)
		if strings.Contains(got, "s3cret") || got != want {
			t.Errorf("Label(%q) = %q, want %q", raw, got, want)
		}
		if _, err := Open(raw, nil, History{}); err != nil && strings.Contains(err.Error(), "s3cret") {
			t.Errorf("Open(%q) error shows the password: %v", raw, err)
		}
	}
}

func TestPostgresListenNotifyAndFold(t *testing.T) {
	b, rec := open(t, servers.PG(t).URL())
	waitReady(t, b.Listen("Orders"))
	waitReady(t, b.Listen("plain"))

	pgExec(t, `SELECT pg_notify($1, $2)`, "Orders", "exact")
	pgExec(t, `NOTIFY Orders, 'folded'`) // the seeds' unquoted form arrives as "orders"
	pgExec(t, `SELECT pg_notify('plain', 'p1')`)
	rec.waitFor(t, "three notifications", func() bool {
		return rec.has("Orders exact") && rec.has("Orders folded") && rec.has("plain p1")
	})

	if n := pgCount(t, `SELECT count(*) FROM pg_stat_activity WHERE application_name = 'caddy-sse-relay'`); n != 1 {
		t.Fatalf("relay connections = %d, want 1", n)
	}

	if err := b.Publish(context.Background(), []string{"Orders"}, []byte("via publish")); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "published", func() bool { return rec.has("Orders via publish") })
}

func TestPostgresChannelNameIsNeverSQL(t *testing.T) {
	b, rec := open(t, servers.PG(t).URL())
	pgExec(t, `CREATE TABLE IF NOT EXISTS victims (id int)`)
	evil := `x"; DROP TABLE victims; --`
	waitReady(t, b.Listen(evil))
	if err := b.Publish(context.Background(), []string{evil}, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "evil channel event", func() bool { return rec.has(evil + " hi") })
	if n := pgCount(t, `SELECT count(*) FROM pg_tables WHERE tablename = 'victims'`); n != 1 {
		t.Fatal("the victims table is gone")
	}
}

func TestPostgresRejectsOversizePayload(t *testing.T) {
	b, _ := open(t, servers.PG(t).URL())
	big := make([]byte, 9000)
	for i := range big {
		big[i] = 'a'
	}
	if err := b.Publish(context.Background(), []string{"c"}, big); err == nil {
		t.Fatal("oversize NOTIFY succeeded")
	}
	// The connection survives a refused publish.
	if err := b.Publish(context.Background(), []string{"c"}, []byte("small")); err != nil {
		t.Fatal(err)
	}
}

func TestPostgresReconnectsAfterTerminate(t *testing.T) {
	b, rec, logs := openLogged(t, servers.PG(t).URL())
	waitReady(t, b.Listen("fault"))
	pgExec(t, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'caddy-sse-relay'`)
	rec.waitFor(t, "reset after reconnect", func() bool { return len(rec.resets) > 0 })
	pgExec(t, `SELECT pg_notify('fault', 'after')`)
	rec.waitFor(t, "event after reconnect", func() bool { return rec.has("fault after") })

	// The connection's life in the log: connected at info, then the loss
	// and the recovery, once each, at warn, the recovery with its length.
	var lines []string
	for _, e := range logs.All() {
		line := e.Level.String() + " " + e.Message
		if _, ok := e.ContextMap()["outage"]; ok {
			line += " (with its length)"
		}
		lines = append(lines, line)
	}
	want := "info broker connected|warn broker connection lost; reconnecting|warn broker connection restored (with its length)"
	if got := strings.Join(lines, "|"); got != want {
		t.Fatalf("log lines:\n %s\nwant\n %s", got, want)
	}
}

func TestRedisSubscribePublish(t *testing.T) {
	b, rec := open(t, servers.Redis(t).URL())
	waitReady(t, b.Listen("news"))
	rc := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", servers.Redis(t).Port)})
	defer rc.Close()
	ctx := context.Background()
	if err := rc.Publish(ctx, "news", "n1").Err(); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ctx, []string{"news"}, []byte("n2")); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "two messages", func() bool { return rec.has("news n1") && rec.has("news n2") })
	n, err := rc.PubSubNumSub(ctx, "news").Result()
	if err != nil || n["news"] != 1 {
		t.Fatalf("NUMSUB = %v, %v", n, err)
	}
	b.Unlisten("news")
	deadline := time.Now().Add(10 * time.Second)
	for {
		n, _ := rc.PubSubNumSub(ctx, "news").Result()
		if n["news"] == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("still subscribed after Unlisten")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRedisReconnectsAfterRestart(t *testing.T) {
	b, rec := open(t, servers.Redis(t).URL())
	waitReady(t, b.Listen("fault"))
	if err := servers.Redis(t).Kill(); err != nil {
		t.Fatal(err)
	}
	if err := servers.Redis(t).Start(); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "reset after reconnect", func() bool { return len(rec.resets) > 0 })
	rc := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", servers.Redis(t).Port)})
	defer rc.Close()
	if err := rc.Publish(context.Background(), "fault", "after").Err(); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "event after reconnect", func() bool { return rec.has("fault after") })

	// A channel first listened after the recovery lost nothing: no reset.
	waitReady(t, b.Listen("fresh"))
	if err := rc.Publish(context.Background(), "fresh", "first").Err(); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "event on a new channel", func() bool { return rec.has("fresh first") })
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.resets) != 1 || rec.resets[0] != "fault" {
		t.Fatalf("resets %q, want only the channel wanted across the outage", rec.resets)
	}
}

func TestMemoryPublishDelivers(t *testing.T) {
	b, rec := open(t, "memory://")
	waitReady(t, b.Listen("m"))
	if err := b.Publish(context.Background(), []string{"m"}, []byte("x")); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "memory event", func() bool { return rec.has("m x") })
}

// TestWantSetReadyAcrossRelisten: a channel unlistened and listened again
// before the connection's goroutine looked is ready at once (the
// connection never stopped listening), and an unlistened channel releases
// whoever waited for it.
func TestWantSetReadyAcrossRelisten(t *testing.T) {
	w := newWantSet()
	first := w.listen("x", false)
	add, _, _ := w.diff(map[string]bool{})
	if len(add) != 1 {
		t.Fatalf("add %v", add)
	}
	w.markActive("x")
	<-first

	w.unlisten("x")
	again := w.listen("x", false)
	if add, remove, ok := w.diff(map[string]bool{"x": true}); !ok || len(add)+len(remove) != 0 {
		t.Fatalf("add %v remove %v: nothing to do on the connection", add, remove)
	}
	select {
	case <-again:
	default:
		t.Fatal("listened again but never ready")
	}

	pending := w.listen("y", false)
	w.unlisten("y")
	select {
	case <-pending:
	default:
		t.Fatal("unlistened before it was listened, and still waited for")
	}
}

// TestListenWaitsForFirstConnection: a channel listened while the broker
// is still opening its first connection is ready only once it is really
// listened, so a stream's headers never promise what the broker would
// miss. (Ready at once is for a broker known to be down.)
func TestListenWaitsForFirstConnection(t *testing.T) {
	for _, url := range []string{servers.PG(t).URL(), servers.Redis(t).URL()} {
		b, err := Open(url, nil, History{})
		if err != nil {
			t.Fatal(err)
		}
		rec := newRecorder()
		b.Start(rec)
		ready := b.Listen("first")
		waitReady(t, ready)
		if !b.Connected() {
			t.Fatalf("%s: ready before the first connection was up", url)
		}
		if err := b.Publish(context.Background(), []string{"first"}, []byte("x")); err != nil {
			t.Fatal(err)
		}
		rec.waitFor(t, "the first event", func() bool { return rec.has("first x") })
		_ = b.Close()
	}
}

// TestCloseWithoutStart: a broker opened but never started (its config
// failed to provision further on) closes at once.
func TestCloseWithoutStart(t *testing.T) {
	for _, url := range []string{servers.PG(t).URL(), servers.Redis(t).URL(), "memory://"} {
		b, err := Open(url, nil, History{})
		if err != nil {
			t.Fatal(err)
		}
		closed := make(chan struct{})
		go func() {
			_ = b.Close()
			close(closed)
		}()
		select {
		case <-closed:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: Close without Start hangs", url)
		}
	}
}

// TestPublishSeveralIsAllOrNone: a publish to several channels goes out on
// every one of them, in order, or on none when the broker refuses any.
func TestPublishSeveralIsAllOrNone(t *testing.T) {
	ctx := context.Background()
	t.Run("postgres", func(t *testing.T) {
		b, rec := open(t, servers.PG(t).URL())
		waitReady(t, b.Listen("atom.a"))
		waitReady(t, b.Listen("atom.b"))
		// Postgres refuses an empty channel name: the statement fails, and
		// with it the NOTIFY on atom.a before it.
		if err := b.Publish(ctx, []string{"atom.a", "", "atom.b"}, []byte("none")); !errors.Is(err, ErrRejected) {
			t.Fatalf("publish with an empty channel: %v, want ErrRejected", err)
		}
		if err := b.Publish(ctx, []string{"atom.a", "atom.b"}, []byte("all")); err != nil {
			t.Fatal(err)
		}
		rec.exactly(t, "a refused publish went out in part, or out of order", "atom.a all", "atom.b all")
	})
	t.Run("redis", func(t *testing.T) {
		rc := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", servers.Redis(t).Port)})
		defer rc.Close()
		// A user that may use atom.a but not atom.b.
		if err := rc.Do(ctx, "ACL", "SETUSER", "atomtest", "on", ">atom-pw", "~*", "resetchannels", "&atom.a", "+@all").Err(); err != nil {
			t.Fatal(err)
		}
		defer rc.Do(ctx, "ACL", "DELUSER", "atomtest")
		u := strings.Replace(servers.Redis(t).URL(), "redis://", "redis://atomtest:atom-pw@", 1)
		b, rec := open(t, u)
		waitReady(t, b.Listen("atom.a"))
		if err := b.Publish(ctx, []string{"atom.a", "atom.b"}, []byte("none")); !errors.Is(err, ErrRejected) {
			t.Fatalf("publish with a forbidden channel: %v, want ErrRejected", err)
		}
		if err := b.Publish(ctx, []string{"atom.a"}, []byte("one")); err != nil {
			t.Fatal(err)
		}
		rec.exactly(t, "a refused publish went out in part", "atom.a one")
	})
}

// TestPublishAbandonedIsNotSent: a publish whose context is done before
// the broker's goroutine gets to it is not sent, so a publisher told it
// failed does not find the event delivered anyway.
func TestPublishAbandonedIsNotSent(t *testing.T) {
	b, rec := open(t, servers.PG(t).URL())
	waitReady(t, b.Listen("abandoned"))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for i := 0; i < 20; i++ {
		if err := b.Publish(ctx, []string{"abandoned"}, []byte("gave up")); err == nil {
			t.Fatal("a publish with a done context succeeded")
		}
	}
	if err := b.Publish(context.Background(), []string{"abandoned"}, []byte("kept")); err != nil {
		t.Fatal(err)
	}
	rec.exactly(t, "an abandoned publish went out", "abandoned kept")
}

func TestRedisReplyClasses(t *testing.T) {
	for reply, refused := range map[string]bool{
		"NOPERM User atomtest has no permissions to access the 'atom.b' channel": true,
		"EXECABORT Transaction discarded because of previous errors.":            true,
		"ERR wrong number of arguments for 'publish' command":                    true,
		"LOADING Redis is loading the dataset in memory":                         false,
		"BUSY Redis is busy running a script":                                    false,
		"MASTERDOWN Link with MASTER is down":                                    false,
		"OOM command not allowed when used memory > 'maxmemory'":                 false,
		"TRYAGAIN Multiple keys request during rehashing of slot":                false,
	} {
		if got := refusedByRedis(reply); got != refused {
			t.Errorf("%q: refused %v, want %v", reply, got, refused)
		}
	}
}

// exactly waits until rec has got want, and fails, saying why, if it got
// anything else or in another order.
func (r *recorder) exactly(t *testing.T, why string, want ...string) {
	t.Helper()
	r.waitFor(t, strings.Join(want, ", "), func() bool { return len(r.got) >= len(want) })
	r.mu.Lock()
	defer r.mu.Unlock()
	if strings.Join(r.got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got %q: %s", r.got, why)
	}
}

// TestLeastPrivilegeCredentials: the relay works with the credentials the
// README's hardening checklist and docs/DEPLOYMENT.md recommend: a
// Postgres role with no privileges of its own, and a Redis ACL user
// limited to pub/sub.
func TestLeastPrivilegeCredentials(t *testing.T) {
	ctx := context.Background()
	t.Run("postgres", func(t *testing.T) {
		pgExec(t, `DROP ROLE IF EXISTS sse_relay_min`)
		pgExec(t, `CREATE ROLE sse_relay_min LOGIN`)
		t.Cleanup(func() { pgExec(t, `DROP ROLE IF EXISTS sse_relay_min`) })
		u := strings.Replace(servers.PG(t).URL(), "postgres://postgres@", "postgres://sse_relay_min@", 1)
		b, rec := open(t, u)
		waitReady(t, b.Listen("least"))
		if err := b.Publish(ctx, []string{"least"}, []byte("pg")); err != nil {
			t.Fatal(err)
		}
		pgExec(t, `SELECT pg_notify('least', 'from the app')`)
		rec.exactly(t, "the minimal role could not listen or publish", "least pg", "least from the app")
	})
	t.Run("redis", func(t *testing.T) {
		rc := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", servers.Redis(t).Port)})
		defer rc.Close()
		acl := []any{"ACL", "SETUSER", "relaymin", "reset", "on", ">min-pw", "&*", "+subscribe", "+unsubscribe", "+publish", "+ping", "+multi", "+exec", "+client|setname"}
		if err := rc.Do(ctx, acl...).Err(); err != nil {
			t.Fatal(err)
		}
		defer rc.Do(ctx, "ACL", "DELUSER", "relaymin")
		u := strings.Replace(servers.Redis(t).URL(), "redis://", "redis://relaymin:min-pw@", 1)
		b, rec := open(t, u)
		waitReady(t, b.Listen("least"))
		if err := b.Publish(ctx, []string{"least"}, []byte("redis")); err != nil {
			t.Fatal(err)
		}
		if err := b.Publish(ctx, []string{"least", "least.too"}, []byte("both")); err != nil {
			t.Fatal(err)
		}
		rec.exactly(t, "the pub/sub-only user could not subscribe or publish", "least redis", "least both")
	})
}

// openHistory is open with history on.
func openHistory(t *testing.T, url string, history History) (Broker, *recorder) {
	t.Helper()
	b, rec, _ := start(t, url, history)
	return b, rec
}

// pgSchema applies the log's schema to the test Postgres.
func pgSchema(t *testing.T) {
	t.Helper()
	pgExec(t, PostgresSchema)
}

// TestPostgresLogCommitOrder: two transactions publish through the log
// and commit in the reverse order of their transaction ids. The reader
// delivers neither before both have committed (the later id waits for the
// earlier transaction), then both, once each, in (tx, id) order; a read of
// the log between the two commits has neither, so a resume there misses
// nothing either.
func TestPostgresLogCommitOrder(t *testing.T) {
	pgSchema(t)
	b, rec := openHistory(t, servers.PG(t).URL(), History{Count: 100})
	co := fresh("co")
	waitReady(t, b.Listen(co))
	ctx := context.Background()
	first, err := pgx.Connect(ctx, servers.PG(t).URL())
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close(ctx)
	second, err := pgx.Connect(ctx, servers.PG(t).URL())
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close(ctx)
	txA, _ := first.Begin(ctx)
	txB, _ := second.Begin(ctx)
	var posA, posB string
	if err := txA.QueryRow(ctx, `SELECT sse_relay.publish($1, 'a')`, co).Scan(&posA); err != nil {
		t.Fatal(err)
	}
	if err := txB.QueryRow(ctx, `SELECT sse_relay.publish($1, 'b')`, co).Scan(&posB); err != nil {
		t.Fatal(err)
	}
	if err := txB.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	rec.mu.Lock()
	early := len(rec.got)
	rec.mu.Unlock()
	if early != 0 {
		t.Fatalf("delivered %d entries while an older transaction could still commit one", early)
	}
	between, _, err := b.Log().Read(ctx, map[string]Position{co: {}}, 10)
	if err != nil || len(between) != 0 {
		t.Fatalf("a read between the commits got %d entries (%v), want none yet", len(between), err)
	}
	if err := txA.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "both entries", func() bool { return len(rec.got) >= 2 })
	time.Sleep(200 * time.Millisecond)
	rec.exactly(t, "both once, in transaction order", co+" a", co+" b")
	if rec.pos[0].String() != posA || rec.pos[1].String() != posB {
		t.Fatalf("positions %v, want %s %s", rec.pos, posA, posB)
	}
	all, _, err := b.Log().Read(ctx, map[string]Position{co: {}}, 10)
	if err != nil || len(all) != 2 || all[0].Pos.String() != posA {
		t.Fatalf("read after both commits: %v %v", all, err)
	}
}

// TestPostgresLogAcrossReconnect: with history, what is published while
// the relay's connection is gone is delivered once it is back, and no
// reset is sent.
func TestPostgresLogAcrossReconnect(t *testing.T) {
	pgSchema(t)
	b, rec := openHistory(t, servers.PG(t).URL(), History{Count: 100})
	waitReady(t, b.Listen("rc"))
	pgExec(t, `SELECT sse_relay.publish('rc', 'before')`)
	rec.waitFor(t, "before", func() bool { return rec.has("rc before") })
	pgExec(t, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'caddy-sse-relay'`)
	pgExec(t, `SELECT sse_relay.publish('rc', 'during')`)
	rec.waitFor(t, "during", func() bool { return rec.has("rc during") })
	pgExec(t, `SELECT sse_relay.publish('rc', 'after')`)
	rec.waitFor(t, "after", func() bool { return rec.has("rc after") })
	rec.exactly(t, "each once, no reset", "rc before", "rc during", "rc after")
	if b.State().Reconnects < 1 {
		t.Fatal("the connection was never lost: the test proves nothing")
	}
	if len(rec.resets) != 0 {
		t.Fatalf("resets %v", rec.resets)
	}
}

// TestRedisLogAcrossRestart: with history each publish is an entry of the
// channel's stream; what is published while Redis is down and back up
// (before the relay resubscribes) is backfilled from the stream, once, and
// a read from a position trimmed away names the channel.
func TestRedisLogAcrossRestart(t *testing.T) {
	b, rec := openHistory(t, servers.Redis(t).URL(), History{Count: 5})
	waitReady(t, b.Listen("rr"))
	ctx := context.Background()
	if err := b.Publish(ctx, []string{"rr"}, []byte("one")); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "one", func() bool { return rec.has("rr one") })
	if err := servers.Redis(t).Kill(); err != nil {
		t.Fatal(err)
	}
	if err := servers.Redis(t).Start(); err != nil {
		t.Fatal(err)
	}
	rc := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", servers.Redis(t).Port)})
	defer rc.Close()
	waitReady(t, b.Listen("rr"))
	rec.waitFor(t, "the relay back", func() bool { return b.Connected() })
	// Kill the relay's pub/sub connection and publish in one round trip:
	// "two" is appended while the relay is away, so only the backfill
	// can bring it.
	if _, err := rc.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.ClientKillByFilter(ctx, "TYPE", "pubsub")
		p.FCall(ctx, "sse_relay_publish", []string{RedisLogKey("rr")}, "two", 5, 0)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "two", func() bool { return rec.has("rr two") })
	// The backfill comes before the connection counts as up.
	rec.waitFor(t, "the relay back", func() bool { return b.Connected() })
	if err := b.Publish(ctx, []string{"rr"}, []byte("three")); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "three", func() bool { return rec.has("rr three") })
	rec.exactly(t, "each once", "rr one", "rr two", "rr three")
	if len(rec.resets) != 0 {
		t.Fatalf("resets %v", rec.resets)
	}
	first := rec.pos[0]
	for i := range 6 {
		if err := b.Publish(ctx, []string{"rr"}, []byte(fmt.Sprint("more ", i))); err != nil {
			t.Fatal(err)
		}
	}
	got, trimmed, err := b.Log().Read(ctx, map[string]Position{"rr": first}, 10)
	if err != nil || len(trimmed) != 1 || trimmed[0] != "rr" {
		t.Fatalf("read from a trimmed position: trimmed %v, %v", trimmed, err)
	}
	head, err := b.Log().Head(ctx, []string{"rr", "empty"})
	if err != nil || head["rr"].IsZero() || !head["empty"].IsZero() {
		t.Fatalf("heads %v %v", head, err)
	}
	// A stream trimmed empty (as age does to a quiet channel) keeps its
	// last id as head, and a cursor there sees later entries with no
	// reset: nothing after it was trimmed.
	if err := rc.XTrimMaxLen(ctx, RedisLogKey("rr"), 0).Err(); err != nil {
		t.Fatal(err)
	}
	head, err = b.Log().Head(ctx, []string{"rr"})
	if err != nil || head["rr"].IsZero() {
		t.Fatalf("head of a stream trimmed empty: %v %v", head, err)
	}
	if err := b.Publish(ctx, []string{"rr"}, []byte("after empty")); err != nil {
		t.Fatal(err)
	}
	got, trimmed, err = b.Log().Read(ctx, head, 10)
	if err != nil || len(got) != 1 || len(trimmed) != 0 {
		t.Fatalf("read from the head of an emptied stream: %v trimmed %v, %v", got, trimmed, err)
	}
}

// fresh is a channel name no earlier run used: the logs outlive a run.
func fresh(prefix string) string { return fmt.Sprintf("%s%d", prefix, time.Now().UnixNano()) }

// TestLeastPrivilegeHistory: the grants the README gives a relay with
// history are enough, and no more is asked. Postgres: USAGE on the
// schema, SELECT on its tables, EXECUTE on trim (retention) and publish
// (POST publishing). Redis: the pub/sub commands, plus the function and
// the stream commands on the sse-relay:* keys.
func TestLeastPrivilegeHistory(t *testing.T) {
	ctx := context.Background()
	t.Run("postgres", func(t *testing.T) {
		pgSchema(t)
		dropRole := `DO $$ BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'sse_relay_log') THEN
			DROP OWNED BY sse_relay_log CASCADE; DROP ROLE sse_relay_log; END IF; END $$`
		pgExec(t, dropRole)
		pgExec(t, `CREATE ROLE sse_relay_log LOGIN`)
		pgExec(t, `GRANT USAGE ON SCHEMA sse_relay TO sse_relay_log;
			GRANT SELECT ON sse_relay.events, sse_relay.trimmed TO sse_relay_log;
			GRANT EXECUTE ON FUNCTION sse_relay.trim(integer, interval), sse_relay.publish(text, text) TO sse_relay_log`)
		t.Cleanup(func() { pgExec(t, dropRole) })
		u := strings.Replace(servers.PG(t).URL(), "postgres://postgres@", "postgres://sse_relay_log@", 1)
		b, rec := openHistory(t, u, History{Count: 3})
		ch := fresh("least")
		waitReady(t, b.Listen(ch))
		if err := b.Publish(ctx, []string{ch}, []byte("relay")); err != nil {
			t.Fatal(err)
		}
		pgExec(t, `SELECT sse_relay.publish($1, 'app')`, ch)
		rec.waitFor(t, "both", func() bool { return len(rec.got) >= 2 })
		rec.exactly(t, "the minimal role could not read the log or publish", ch+" relay", ch+" app")
		if got, _, err := b.Log().Read(ctx, map[string]Position{ch: {}}, 10); err != nil || len(got) != 2 {
			t.Fatalf("read as the minimal role: %d entries, %v", len(got), err)
		}
		conn, err := pgx.Connect(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, `SELECT sse_relay.trim(3, NULL)`); err != nil {
			t.Fatalf("retention as the minimal role: %v", err)
		}
	})
	t.Run("redis", func(t *testing.T) {
		rc := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", servers.Redis(t).Port)})
		defer rc.Close()
		acl := []any{"ACL", "SETUSER", "relaylog", "reset", "on", ">log-pw", "&*", "~sse-relay:*",
			"+subscribe", "+unsubscribe", "+publish", "+ping", "+multi", "+exec", "+client|setname",
			"+function|load", "+fcall", "+xadd", "+xtrim", "+time", "+xrange", "+xrevrange", "+xinfo|stream", "+xlen", "+get", "+set"}
		if err := rc.Do(ctx, acl...).Err(); err != nil {
			t.Fatal(err)
		}
		defer rc.Do(ctx, "ACL", "DELUSER", "relaylog")
		u := strings.Replace(servers.Redis(t).URL(), "redis://", "redis://relaylog:log-pw@", 1)
		b, rec := openHistory(t, u, History{Count: 3, MaxAge: time.Hour})
		ch := fresh("least")
		waitReady(t, b.Listen(ch))
		if err := b.Publish(ctx, []string{ch}, []byte("one")); err != nil {
			t.Fatal(err)
		}
		if err := b.Publish(ctx, []string{ch, ch + ".too"}, []byte("both")); err != nil {
			t.Fatal(err)
		}
		rec.waitFor(t, "both", func() bool { return len(rec.got) >= 2 })
		rec.exactly(t, "the minimal user could not use the log", ch+" one", ch+" both")
		if got, _, err := b.Log().Read(ctx, map[string]Position{ch: {}}, 10); err != nil || len(got) != 2 {
			t.Fatalf("read as the minimal user: %d entries, %v", len(got), err)
		}
		if _, err := b.Log().Head(ctx, []string{ch}); err != nil {
			t.Fatal(err)
		}
	})
}

// TestResyncAtScale: 20,000 listened channels on a server 2 ms away (each
// way, through a latency proxy) are all listened to again within 10 s of
// the connection being cut, and the broker counts as connected only once
// they are: a notify on the last channel arrives as soon as it does.
func TestResyncAtScale(t *testing.T) {
	const channels = 20000
	for _, c := range []struct {
		name   string
		target func() (string, string) // address, URL with {addr}
		notify func(ch string)
	}{
		{"postgres", func() (string, string) {
			u := servers.PG(t).URL()
			return fmt.Sprintf("127.0.0.1:%d", servers.PG(t).Port), strings.Replace(u, fmt.Sprintf("127.0.0.1:%d", servers.PG(t).Port), "{addr}", 1)
		}, func(ch string) { pgExec(t, `SELECT pg_notify($1, 'back')`, ch) }},
		{"redis", func() (string, string) {
			addr := fmt.Sprintf("127.0.0.1:%d", servers.Redis(t).Port)
			return addr, strings.Replace(servers.Redis(t).URL(), addr, "{addr}", 1)
		}, func(ch string) {
			rc := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", servers.Redis(t).Port)})
			defer rc.Close()
			if err := rc.Publish(context.Background(), ch, "back").Err(); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			addr, url := c.target()
			proxy, err := testsrv.StartLatencyProxy(addr, 2*time.Millisecond)
			if err != nil {
				t.Fatal(err)
			}
			defer proxy.Close()
			b, rec := open(t, strings.Replace(url, "{addr}", proxy.Addr(), 1))
			prefix := fresh("scale")
			readies := make([]<-chan struct{}, channels)
			start := time.Now()
			for i := range readies {
				readies[i] = b.Listen(fmt.Sprintf("%s.%d", prefix, i))
			}
			for _, r := range readies {
				waitReady(t, r)
			}
			t.Logf("%s: %d channels listened in %v", c.name, channels, time.Since(start).Round(time.Millisecond))
			cut := time.Now()
			proxy.Cut()
			for b.Connected() && time.Since(cut) < 10*time.Second {
				time.Sleep(time.Millisecond)
			}
			for !b.Connected() && time.Since(cut) < 20*time.Second {
				time.Sleep(5 * time.Millisecond)
			}
			resync := time.Since(cut)
			if !b.Connected() || resync > 10*time.Second {
				t.Fatalf("%s: %d channels not listened again within 10s (%v)", c.name, channels, resync)
			}
			last := fmt.Sprintf("%s.%d", prefix, channels-1)
			c.notify(last)
			rec.waitFor(t, "the last channel's notify", func() bool { return rec.has(last + " back") })
			t.Logf("%s: %d channels listened again %v after the cut", c.name, channels, resync.Round(time.Millisecond))
		})
	}
}

// TestPostgresLogStartsAtListen: the reader has one place for all
// channels; a channel listened to after an entry of it was committed does
// not get that entry as a live event (a stream without a cursor starts
// where the log is), only what is committed after.
func TestPostgresLogStartsAtListen(t *testing.T) {
	pgSchema(t)
	b, rec := openHistory(t, servers.PG(t).URL(), History{Count: 100})
	ch := fresh("late")
	pgExec(t, `SELECT sse_relay.publish($1, 'before anyone listened')`, ch)
	waitReady(t, b.Listen(ch))
	pgExec(t, `SELECT sse_relay.publish($1, 'after')`, ch)
	rec.waitFor(t, "after", func() bool { return rec.has(ch + " after") })
	time.Sleep(100 * time.Millisecond)
	rec.exactly(t, "only what came after the listen", ch+" after")
}
