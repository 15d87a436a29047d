package sserelay

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"
	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/sse-relay/caddy-sse-relay/internal/sseclient"
	"github.com/sse-relay/caddy-sse-relay/internal/testsrv"
)

// waitStreams waits until the node counts want open streams. Tests that
// count streams wait for 0 first: streams that earlier tests closed end
// when the relay notices, which on a busy machine can come after the next
// test has started, and the limits and gauges count them.
func waitStreams(t *testing.T, want int) {
	t.Helper()
	if err := testsrv.WaitStreams("http://localhost:2999", want); err != nil {
		t.Fatal(err)
	}
}

// This is the one package that starts Caddy (through caddytest, admin
// port 2999, HTTP port 9080). Its tests run one at a time, and each
// starts only the servers it uses: a test of a pure function starts none.

var servers *testsrv.Servers

const base = "http://localhost:9080"

// testPublishKey is the publish_key of every test config that publishes:
// the relay refuses one under 32 bytes.
const testPublishKey = "test-publish-key-0123456789abcdef"

func TestMain(m *testing.M) { testsrv.Main(m, &servers) }

// globals is the Caddyfile global block every test config starts with.
const globals = `{
	admin localhost:2999
	http_port 9080
	https_port 9443
	grace_period 5s
	skip_install_trust
}
`

// load puts config (a Caddyfile without the global block) into the running
// test Caddy. A missing harness fails the test rather than skipping it.
func load(t *testing.T, config string) {
	t.Helper()
	loadWith(t, globals, config)
}

// loadWith is load with another global block.
func loadWith(t *testing.T, global, config string) {
	t.Helper()
	var skipped bool
	t.Run("load", func(st *testing.T) {
		tc := caddytest.NewTester(st)
		tc.InitServer(global+config, "caddyfile")
		skipped = st.Skipped()
	})
	if skipped {
		t.Fatal("the caddytest integration harness could not start Caddy")
	}
	// A relay reused from an earlier test may still be reconnecting.
	waitHealthy(t)
}

// trustingLocalProxy is globals with the test client's own addresses as
// trusted proxies, so a test sets the client IP with X-Forwarded-For.
var trustingLocalProxy = strings.Replace(globals, "\tgrace_period 5s\n",
	"\tgrace_period 5s\n\tservers {\n\t\ttrusted_proxies static 127.0.0.1/32 ::1/128\n\t}\n", 1)

// site wraps handler lines into a site serving /events/*. Every test
// comes from one address, so the new-channel rate is raised unless the
// lines set it.
func site(lines string) string {
	if !strings.Contains(lines, "max_new_channels_per_ip") {
		lines += "\n\t\tmax_new_channels_per_ip 1000000"
	}
	return "http://localhost:9080 {\n\tsse_relay /events/* {\n" + lines + "\n\t}\n\trespond \"not events\"\n}\n"
}

// event is one parsed SSE event.
type event = sseclient.Event

// sseClient is a stream on the test Caddy, read by the one SSE test
// client (internal/sseclient), with test-failing helpers.
type sseClient struct{ *sseclient.Stream }

var streamClient = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: -1, DisableCompression: true}}

// subscribe opens a stream and returns once the headers are in.
func subscribe(t testing.TB, path string, header ...string) *sseClient {
	t.Helper()
	c, err := trySubscribe(path, header...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	if c.Response.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: status %d", path, c.Response.StatusCode)
	}
	return c
}

// trySubscribe opens a stream; a status other than 200 is no error.
func trySubscribe(path string, header ...string) (*sseClient, error) {
	h := http.Header{}
	for i := 0; i+1 < len(header); i += 2 {
		h.Set(header[i], header[i+1])
	}
	s, err := sseclient.Open(streamClient, base+path, h)
	if err != nil {
		return nil, err
	}
	return &sseClient{s}, nil
}

// next waits for the next event.
func (c *sseClient) next(t testing.TB) event {
	t.Helper()
	ev, err := c.Next(10 * time.Second)
	if err != nil {
		t.Fatalf("stream: %v", err)
	}
	return ev
}

// nothing asserts no event arrives within d.
func (c *sseClient) nothing(t testing.TB, d time.Duration) {
	t.Helper()
	if err := c.Nothing(d); err != nil {
		t.Fatal(err)
	}
}

// do sends a request and returns status, headers and body.
func do(t testing.TB, method, path, body string, header ...string) (int, http.Header, string) {
	t.Helper()
	req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

func pgConn(t testing.TB) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, servers.PG(t).URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func pgExec(t testing.TB, conn *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := conn.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func pgInt(t testing.TB, conn *pgx.Conn, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := conn.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func redisClient(t testing.TB) *redis.Client {
	t.Helper()
	rc := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", servers.Redis(t).Port)})
	t.Cleanup(func() { rc.Close() })
	return rc
}

// rawConn opens a TCP connection that sends a request and never reads.
func rawConn(t testing.TB, path string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", "localhost:9080")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: localhost:9080\r\n\r\n", path)
	return c
}

// waitHealthy waits until every broker of the running config is connected
// (an earlier test may have left one reconnecting).
func waitHealthy(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://localhost:2999/sse_relay/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("brokers not healthy within 10s: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
