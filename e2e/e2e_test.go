// Package e2e runs the Caddy binary built from cmd/caddy as separate
// processes: stopping with thousands of streams open, and several nodes
// on one broker.
package e2e

import (
	"context"
	cryptotls "crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/sse-relay/caddy-sse-relay/internal/sseclient"
	"github.com/sse-relay/caddy-sse-relay/internal/testsrv"
)

var (
	servers  *testsrv.Servers
	caddyBin string
)

func TestMain(m *testing.M) {
	code, err := setup(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

func setup(m *testing.M) (int, error) {
	dir, err := os.MkdirTemp("", "sserelay-e2e-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	caddyBin = filepath.Join(dir, "caddy")
	build := exec.Command("go", "build", "-o", caddyBin, "./cmd/caddy")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		return 0, fmt.Errorf("building caddy: %v\n%s", err, out)
	}
	servers = new(testsrv.Servers)
	defer servers.Stop()
	return m.Run(), nil
}

// node is one Caddy process.
type node struct {
	cmd       *exec.Cmd
	admin     string
	base      string
	adminPort int
	httpPort  int
	tls       bool          // the site is https:// with Caddy's internal CA
	global    string        // more global options, such as debug
	log       string        // the file that takes Caddy's stdout and stderr
	dir       string        // its Caddyfile, log and data
	done      chan struct{} // closed when the process has exited
}

// startNode runs Caddy with one site whose sse_relay block has lines.
func startNode(t *testing.T, lines string) *node {
	t.Helper()
	return startSite(t, "sse_relay /events/* {\n"+lines+"\n}")
}

// caddyfile is the whole config of n with site as its one site's body.
func (n *node) caddyfile(site string) string {
	if n.tls {
		return fmt.Sprintf(`{
	admin 127.0.0.1:%d
	https_port %d
	auto_https disable_redirects
	default_bind 127.0.0.1
	persist_config off
	skip_install_trust
%s
}
https://127.0.0.1:%d {
	tls internal
%s
}
`, n.adminPort, n.httpPort, n.global, n.httpPort, site)
	}
	return fmt.Sprintf(`{
	admin 127.0.0.1:%d
	http_port %d
	default_bind 127.0.0.1
	persist_config off
	skip_install_trust
%s
}
http://127.0.0.1:%d {
%s
}
`, n.adminPort, n.httpPort, n.global, n.httpPort, site)
}

// reload replaces n's config through the admin API, as `caddy reload` does.
func (n *node) reload(t *testing.T, site string) {
	t.Helper()
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Post(n.admin+"/load", "text/caddyfile", strings.NewReader(n.caddyfile(site)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /load: %d", resp.StatusCode)
	}
}

// startSite runs Caddy with one site whose body is site.
func startSite(t *testing.T, site string) *node {
	t.Helper()
	return startNodeOf(t, site, false)
}

// startNodeOf runs Caddy with one site, on https:// when tls is set.
func startNodeOf(t *testing.T, site string, tls bool) *node {
	t.Helper()
	return startNodeWith(t, "", site, tls)
}

// startNodeWith runs Caddy with more global options and one site.
func startNodeWith(t *testing.T, global, site string, tls bool) *node {
	t.Helper()
	adminPort, _ := testsrv.FreePort()
	httpPort, _ := testsrv.FreePort()
	scheme := "http"
	if tls {
		scheme = "https"
	}
	n := &node{admin: fmt.Sprintf("http://127.0.0.1:%d", adminPort), base: fmt.Sprintf("%s://127.0.0.1:%d", scheme, httpPort),
		adminPort: adminPort, httpPort: httpPort, tls: tls, global: global}
	n.dir = t.TempDir()
	n.log = filepath.Join(n.dir, "caddy.log")
	if err := os.WriteFile(filepath.Join(n.dir, "Caddyfile"), []byte(n.caddyfile(site)), 0o600); err != nil {
		t.Fatal(err)
	}
	n.start(t)
	t.Cleanup(func() {
		_ = n.cmd.Process.Kill()
		<-n.done
		if t.Failed() {
			b, _ := os.ReadFile(n.log)
			t.Logf("caddy log:\n%s", b)
		}
	})
	return n
}

// start runs the node's Caddy process (again, after it exited) and waits
// until it serves.
func (n *node) start(t *testing.T) {
	t.Helper()
	cmd := exec.Command(caddyBin, "run", "--config", filepath.Join(n.dir, "Caddyfile"), "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "HOME="+n.dir, "XDG_DATA_HOME="+n.dir, "XDG_CONFIG_HOME="+n.dir)
	log, _ := os.OpenFile(n.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	n.cmd, n.done = cmd, done
	go func() {
		_ = cmd.Wait()
		log.Close()
		close(done)
	}()
	deadline := time.Now().Add(30 * time.Second)
	// A timeout, because polling a port nobody listens on yet can connect
	// to itself on loopback and wait forever.
	poll := &http.Client{Timeout: 2 * time.Second}
	ready := n.admin + "/config/"
	if n.tls {
		// Up once the internal CA has issued the site's certificate.
		ready = n.base + "/"
		poll.Transport = &http.Transport{TLSClientConfig: &cryptotls.Config{InsecureSkipVerify: true}}
	}
	for {
		resp, err := poll.Get(ready)
		if err == nil {
			resp.Body.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("caddy did not start: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

var transport = &http.Transport{MaxIdleConnsPerHost: -1, DisableCompression: true, ResponseHeaderTimeout: 20 * time.Second}

// open opens a stream with more request headers, if any, and fails unless
// its status is 200.
func open(url string, header http.Header) (*sseclient.Stream, error) {
	s, err := sseclient.Open(&http.Client{Transport: transport}, url, header)
	if err != nil {
		return nil, err
	}
	if s.Response.StatusCode != 200 {
		s.Close()
		return nil, fmt.Errorf("GET %s: %d", url, s.Response.StatusCode)
	}
	return s, nil
}

func openMany(t *testing.T, url string, n int) []*sseclient.Stream {
	t.Helper()
	streams := make([]*sseclient.Stream, n)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	sem := make(chan struct{}, 200)
	for i := range streams {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			s, err := open(url, nil)
			mu.Lock()
			defer mu.Unlock()
			if err != nil && firstErr == nil {
				firstErr = err
			}
			streams[i] = s
		}()
	}
	wg.Wait()
	if firstErr != nil {
		t.Fatal(firstErr)
	}
	t.Cleanup(func() {
		for _, s := range streams {
			if s != nil {
				s.Close()
			}
		}
	})
	return streams
}

func waitExit(t *testing.T, n *node, limit time.Duration, how string, start time.Time) time.Duration {
	t.Helper()
	select {
	case <-n.done:
		return time.Since(start)
	case <-time.After(limit):
		t.Fatalf("%s: caddy still running after %v", how, limit)
	}
	return 0
}

// TestStopWith2000Streams: `caddy stop` (the admin API's /stop) and
// SIGTERM each return within 3 s with 2,000 streams open.
func TestStopWith2000Streams(t *testing.T) {
	for _, how := range []string{"admin /stop", "SIGTERM"} {
		t.Run(how, func(t *testing.T) {
			n := startNode(t, "heartbeat 0\nmax_connections_per_ip 5000")
			streams := openMany(t, n.base+"/events/stop", 2000)
			start := time.Now()
			if how == "SIGTERM" {
				_ = n.cmd.Process.Signal(syscall.SIGTERM)
			} else {
				resp, err := (&http.Client{Timeout: 5 * time.Second}).Post(n.admin+"/stop", "", nil)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
			}
			took := waitExit(t, n, 3*time.Second, how, start)
			// Every stream has ended: no event, and no wait for one.
			for i, s := range streams {
				if ev, err := s.Next(2 * time.Second); err == nil || errors.Is(err, sseclient.ErrTimeout) {
					t.Fatalf("stream %d is still open: %+v, %v", i, ev, err)
				}
			}
			t.Logf("%s with %d streams open: exited in %v", how, len(streams), took.Round(time.Millisecond))
		})
	}
}

// TestStopAfterShutdownDelay: with Caddy's shutdown_delay, streams are
// served through the delay, as the server is, and end when it shuts down.
func TestStopAfterShutdownDelay(t *testing.T) {
	const delay = 1500 * time.Millisecond
	n := startNodeWith(t, "shutdown_delay 1500ms", "sse_relay /events/* {\npublish_key "+tlsPublishKey+"\nheartbeat 0\n}", false)
	s, err := open(n.base+"/events/delay", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	start := time.Now()
	go func() {
		resp, err := (&http.Client{Timeout: 10 * time.Second}).Post(n.admin+"/stop", "", nil)
		if err == nil {
			resp.Body.Close()
		}
	}()
	time.Sleep(delay / 3)
	publish(t, &http.Client{Transport: transport}, n.base+"/events/delay", "during the delay")
	ev, err := s.Next(5 * time.Second)
	if err != nil || ev.Data != "during the delay" {
		t.Fatalf("during the delay: %+v, %v", ev, err)
	}
	if _, err := s.Next(5 * time.Second); err == nil || errors.Is(err, sseclient.ErrTimeout) {
		t.Fatalf("the stream did not end at the shutdown: %v", err)
	}
	if ended := time.Since(start); ended < delay {
		t.Fatalf("the stream ended %v after the stop, within the %v shutdown_delay", ended, delay)
	}
	took := waitExit(t, n, delay+3*time.Second, "admin /stop", start)
	t.Logf("stream served through the delay; exited %v after the stop", took.Round(time.Millisecond))
}

// TestTwoNodesOneBroker: two Caddy processes on one Redis and on one
// Postgres. A publish reaches subscribers on both nodes, and each node
// holds one broker connection.
func TestTwoNodesOneBroker(t *testing.T) {
	ctx := context.Background()
	pg, err := pgx.Connect(ctx, servers.PG(t).URL())
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close(ctx)
	rc := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", servers.Redis(t).Port)})
	defer rc.Close()

	brokers := []struct {
		name, url string
		publish   func(ch, data string) error
		conns     func() (int, error)
	}{
		{"postgres", servers.PG(t).URL(),
			func(ch, data string) error { _, err := pg.Exec(ctx, `SELECT pg_notify($1, $2)`, ch, data); return err },
			func() (int, error) {
				var n int
				err := pg.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE application_name = 'caddy-sse-relay'`).Scan(&n)
				return n, err
			}},
		{"redis", servers.Redis(t).URL(),
			func(ch, data string) error { return rc.Publish(ctx, ch, data).Err() },
			func() (int, error) {
				list, err := rc.ClientList(ctx).Result()
				n := 0
				for _, l := range strings.Split(list, "\n") {
					if strings.Contains(l, "name=caddy-sse-relay") && !strings.Contains(l, " sub=0 ") {
						n++
					}
				}
				return n, err
			}},
	}
	for _, b := range brokers {
		t.Run(b.name, func(t *testing.T) {
			a := startNode(t, "broker "+b.url)
			c := startNode(t, "broker "+b.url)
			sa := openMany(t, a.base+"/events/both", 50)
			sc := openMany(t, c.base+"/events/both", 50)
			if err := b.publish("both", "to every node"); err != nil {
				t.Fatal(err)
			}
			for _, s := range append(sa, sc...) {
				if ev, err := s.Next(10 * time.Second); err != nil || ev.Data != "to every node" {
					t.Fatalf("got %q, %v", ev.Data, err)
				}
			}
			if n, err := b.conns(); err != nil || n != 2 {
				t.Fatalf("%d relay connections for 2 nodes and 100 subscribers (%v), want 2", n, err)
			}
		})
	}
}
