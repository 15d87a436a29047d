package e2e

import (
	"context"
	"fmt"
	"io"
	stdlog "log"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	neturl "net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/sse-relay/caddy-sse-relay/broker"
	"github.com/sse-relay/caddy-sse-relay/internal/sseclient"
	"github.com/sse-relay/caddy-sse-relay/internal/testsrv"
)

// TestBrowserDjangoCursor: a page rendered by a real Django view with
// {% sse_url %} (SSE_RELAY_HISTORY on) carries the log's position at
// render time, so the events published after the render and before the
// page's EventSource connects all reach it, once each and in order: on a
// channel nobody listened to before, and on one the relay already
// listens to. On the latter the same URL without the cursor, opened at the
// same moment, gets only what comes after it connects: the cursor is what
// carried the others.
func TestBrowserDjangoCursor(t *testing.T) {
	needChromium(t)
	django := startDjango(t)
	n := startSite(t, fmt.Sprintf(`sse_relay /events/* {
		broker %s
		history 1000
		retry 100ms
	}
	reverse_proxy %s`, servers.PG(t).URL(), django))

	ctx := context.Background()
	pg, err := pgx.Connect(ctx, servers.PG(t).URL())
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close(ctx)
	b := newBrowser(t)

	for _, c := range []struct {
		name, channel string
		listened      bool
	}{
		{"a channel nobody listens to", "rendered_cold", false},
		{"a channel the relay listens to", "rendered_warm", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			publish := func(data string) {
				t.Helper()
				if _, err := pg.Exec(ctx, `SELECT sse_relay.publish($1, $2)`, c.channel, data); err != nil {
					t.Fatal(err)
				}
			}
			var watcher *sseclient.Stream
			if c.listened {
				watcher, err = open(n.base+"/events/"+c.channel, nil)
				if err != nil {
					t.Fatal(err)
				}
				defer watcher.Close()
			}
			publish("before the render")
			if err := chromedp.Do(b, chromedp.Navigate(n.base+"/page/?channel="+c.channel)); err != nil {
				t.Fatal(err)
			}
			url := evalJS[string](t, b, `document.getElementById("streams").dataset.cursor`)
			if !strings.Contains(url, "last_event_id=") {
				t.Fatalf("{%% sse_url %%} rendered %q: no cursor", url)
			}
			for _, data := range []string{"1", "2", "3"} {
				publish(data)
			}
			if watcher != nil {
				// The relay has relayed them before the page connects, so
				// the control cannot get them live.
				waitData(t, watcher, "before the render", "1", "2", "3")
			}
			evalJS[bool](t, b, `connect(), true`)
			waitJS(t, b, `got.opens >= 2`, 10*time.Second)
			publish("4") // live, for both
			publish("5")
			waitJS(t, b, `got.cursor.includes("5") && got.plain.includes("5")`, 10*time.Second)

			// In order on one stream, so a repeat would have come before "5".
			cursor := evalJS[[]string](t, b, `got.cursor`)
			if want := []string{"1", "2", "3", "4", "5"}; !slices.Equal(cursor, want) {
				t.Fatalf("with the render-time cursor (%s) the page got %q, want %q", url, cursor, want)
			}
			// The control only where the relay already listens: on a channel
			// it starts listening to, a stream without a cursor also gets
			// what the broker's reader catches up on from its own position,
			// which may be older than the render.
			plain := evalJS[[]string](t, b, `got.plain`)
			if want := []string{"4", "5"}; c.listened && !slices.Equal(plain, want) {
				t.Fatalf("without a cursor the page got %q, want only what came after it connected, %q", plain, want)
			}
			t.Logf("rendered %s; with it the page got %q, without it %q", url, cursor, plain)
		})
	}
}

// waitData reads s until it has had an event with each of the data
// values, in any order, among others.
func waitData(t *testing.T, s *sseclient.Stream, data ...string) {
	t.Helper()
	missing := map[string]bool{}
	for _, d := range data {
		missing[d] = true
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(missing) > 0 {
		ev, err := s.Next(time.Until(deadline))
		if err != nil {
			t.Fatalf("waiting for %d events more (%v): %v", len(missing), slices.Collect(maps.Keys(missing)), err)
		}
		delete(missing, ev.Data)
	}
}

// needChromium fails the test unless Debian's Chromium is installed.
func needChromium(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("the browser tests need Debian's chromium (make deps installs it): %v", err)
	}
}

// startDjango applies django_sse_relay's migration (the log's schema) to
// the test Postgres and runs e2e/djangosite under Django's development
// server on Debian's Django. It returns the server's host:port.
func startDjango(t *testing.T) string {
	t.Helper()
	if out, err := exec.Command(djangoPython, "-c", "import django, psycopg2").CombinedOutput(); err != nil {
		t.Fatalf("the Django site needs Debian's python3-django and python3-psycopg2 (make deps installs them): %v\n%s", err, out)
	}
	contrib, err1 := filepath.Abs("../contrib/django")
	site, err2 := filepath.Abs("djangosite")
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	env := append(os.Environ(),
		"PYTHONPATH="+contrib+string(os.PathListSeparator)+site,
		"DJANGO_SETTINGS_MODULE=relaysite.settings",
		"SSE_RELAY_TEST_PG_URL="+servers.PG(t).URL(),
	)
	migrate := exec.Command(djangoPython, "-m", "django", "migrate", "django_sse_relay", "--verbosity", "0")
	migrate.Env = env
	if out, err := migrate.CombinedOutput(); err != nil {
		t.Fatalf("manage.py migrate django_sse_relay: %v\n%s", err, out)
	}

	port, err := testsrv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	logPath := filepath.Join(t.TempDir(), "django.log")
	log, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(djangoPython, "-m", "django", "runserver", "--noreload", addr)
	cmd.Env, cmd.Stdout, cmd.Stderr = env, log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		log.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("django log:\n%s", b)
		}
	})
	poll := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := poll.Get("http://" + addr + "/page/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return addr
			}
			err = fmt.Errorf("GET /page/: %d", resp.StatusCode)
		}
		select {
		case <-done:
			t.Fatalf("the Django server exited: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the Django server did not start: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// flakyProxy stands in front of Caddy like a load balancer during a
// deploy: while down it ends every stream it carries and answers 502,
// which leaves an EventSource CLOSED. It notes each stream request.
type flakyProxy struct {
	proxy *httputil.ReverseProxy

	mu       sync.Mutex
	down     bool
	cancels  map[*http.Request]context.CancelFunc
	requests []streamRequest
}

// streamRequest is a request for /events/ as the proxy saw it.
type streamRequest struct {
	down        bool   // answered 502
	query       string // its last_event_id query value
	lastEventID string // its Last-Event-ID header
}

// newFlakyProxy starts a flakyProxy to upstream and returns it with its
// base URL.
func newFlakyProxy(t *testing.T, upstream string) (*flakyProxy, string) {
	t.Helper()
	target, err := neturl.Parse(upstream)
	if err != nil {
		t.Fatal(err)
	}
	p := &flakyProxy{proxy: httputil.NewSingleHostReverseProxy(target), cancels: map[*http.Request]context.CancelFunc{}}
	p.proxy.FlushInterval = -1
	p.proxy.ErrorLog = stdlog.New(io.Discard, "", 0) // the streams it cuts
	s := httptest.NewServer(p)
	t.Cleanup(s.Close)
	return p, s.URL
}

func (p *flakyProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	if strings.HasPrefix(r.URL.Path, "/events/") {
		p.requests = append(p.requests, streamRequest{down: p.down,
			query: r.URL.Query().Get("last_event_id"), lastEventID: r.Header.Get("Last-Event-ID")})
	}
	if p.down {
		p.mu.Unlock()
		http.Error(w, "upstream restarting", http.StatusBadGateway)
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	p.cancels[r] = cancel
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.cancels, r)
		p.mu.Unlock()
		cancel()
	}()
	p.proxy.ServeHTTP(w, r.WithContext(ctx))
}

// setDown turns the 502s on, cutting the streams it carries, or off.
func (p *flakyProxy) setDown(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
	if down {
		for _, cancel := range p.cancels {
			cancel()
		}
	}
}

// seen returns the stream requests so far.
func (p *flakyProxy) seen() []streamRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.requests)
}

// TestBrowserHtmxResume: htmx-ext-sse from npm with
// contrib/htmx/sse-relay-resume.js, behind a proxy that answers 502 for a
// moment, so that the browser's EventSource ends CLOSED and htmx opens a
// new one from the sse-connect URL. The events published meanwhile appear
// in the DOM, once each, because the script kept the last id in that URL:
// on Postgres (one position) and on Redis for a stream of two channels
// (a position per channel). Without the script (the control) htmx's new
// EventSource starts from now and they are missing.
func TestBrowserHtmxResume(t *testing.T) {
	needChromium(t)
	root := browserRoot(t)
	contrib, err := filepath.Abs("../contrib")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	pg, err := pgx.Connect(ctx, servers.PG(t).URL())
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close(ctx)
	applySchema(t)
	rc := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", servers.Redis(t).Port)})
	defer rc.Close()

	brokers := []struct {
		name, url string
		channels  []string // the stream's
		publish   func(channel, data string) error
	}{
		{"postgres", servers.PG(t).URL(), []string{"resume_pg"}, func(channel, data string) error {
			_, err := pg.Exec(ctx, `SELECT sse_relay.publish($1, $2)`, channel, data)
			return err
		}},
		{"redis", servers.Redis(t).URL(), []string{"resume_b", "resume_a"}, func(channel, data string) error {
			return rc.FCall(ctx, "sse_relay_publish", []string{broker.RedisLogKey(channel)}, data, 1000, 0).Err()
		}},
	}
	for _, br := range brokers {
		for _, resume := range []bool{true, false} {
			name := br.name
			if !resume {
				name += ", without the script"
			}
			t.Run(name, func(t *testing.T) {
				n := startSite(t, fmt.Sprintf(`sse_relay /events/* {
		broker %s
		history 1000
		retry 100ms
	}
	handle_path /contrib/* {
		root * %s
		file_server
	}
	root * %s
	file_server`, br.url, contrib, root))
				flaky, base := newFlakyProxy(t, n.base)

				// Fresh channels per run, so that no run sees another's events.
				suffix := fmt.Sprintf("_%d", time.Now().UnixNano())
				channels := make([]string, len(br.channels))
				for i, ch := range br.channels {
					channels[i] = ch + suffix
				}
				stream := "/events/" + channels[0]
				if len(channels) > 1 {
					stream = "/events/?channel=" + strings.Join(channels, ",")
				}
				tick := func(round int) {
					t.Helper()
					for _, ch := range channels {
						li := fmt.Sprintf("%s %d", strings.TrimSuffix(ch, suffix), round)
						if err := br.publish(ch, `{"event":"tick","data":"<li>`+li+`</li>"}`); err != nil {
							t.Fatal(err)
						}
					}
				}
				// want is what each channel's items should be, in order:
				// "<channel> <round>" for each round.
				want := func(rounds ...int) map[string][]string {
					out := map[string][]string{}
					for _, ch := range br.channels {
						for _, r := range rounds {
							out[ch] = append(out[ch], fmt.Sprintf("%s %d", ch, r))
						}
					}
					return out
				}
				// Straight to Caddy: it sees what the relay relays.
				watcher, err := open(n.base+stream, nil)
				if err != nil {
					t.Fatal(err)
				}
				defer watcher.Close()

				b := newBrowser(t)
				page := base + "/resume.html?stream=" + neturl.QueryEscape(stream)
				if !resume {
					page += "&resume=off"
				}
				if err := chromedp.Do(b, chromedp.Navigate(page)); err != nil {
					t.Fatal(err)
				}
				waitJS(t, b, `got.opens >= 1`, 10*time.Second)
				tick(1)
				waitJS(t, b, fmt.Sprintf(`document.querySelectorAll("#ticks li").length >= %d`, len(channels)), 10*time.Second)
				connect := evalJS[string](t, b, `document.getElementById("feed").getAttribute("sse-connect")`)

				// Down: the stream is cut, the browser's reconnect (with
				// Last-Event-ID) gets a 502 and ends CLOSED; wait for htmx's
				// own new EventSource (without it) to get one too.
				flaky.setDown(true)
				deadline := time.Now().Add(15 * time.Second)
				for !slices.ContainsFunc(flaky.seen(), func(r streamRequest) bool { return r.down && r.lastEventID == "" }) {
					if time.Now().After(deadline) {
						t.Fatalf("htmx opened no new EventSource while the proxy answered 502: %+v", flaky.seen())
					}
					time.Sleep(20 * time.Millisecond)
				}
				tick(2)
				tick(3)
				// The relay has relayed them before htmx connects again, so
				// that without the script they cannot arrive live.
				var round3 []string
				for _, ch := range br.channels {
					round3 = append(round3, fmt.Sprintf("<li>%s 3</li>", ch))
				}
				waitData(t, watcher, round3...)
				before := len(flaky.seen())
				flaky.setDown(false)

				waitJS(t, b, `got.opens >= 2`, 15*time.Second)
				var through *streamRequest
				for _, r := range flaky.seen()[before:] {
					if !r.down {
						through = &r
						break
					}
				}
				if through == nil || through.lastEventID != "" {
					t.Fatalf("the stream that got through after the 502s was not htmx's new EventSource: %+v", through)
				}
				tick(4)
				// Live events come after the resumed ones on each channel, so
				// all of round 4 in the DOM means nothing is still on its way.
				waitJS(t, b, fmt.Sprintf(`[...document.querySelectorAll("#ticks li")].filter((li) => li.textContent.endsWith(" 4")).length >= %d`, len(channels)), 10*time.Second)
				items := evalJS[[]string](t, b, `[...document.querySelectorAll("#ticks li")].map((li) => li.textContent)`)
				got := map[string][]string{}
				for _, item := range items {
					ch, _, _ := strings.Cut(item, " ")
					got[ch] = append(got[ch], item)
				}

				if resume {
					if through.query == "" {
						t.Fatalf("htmx's new EventSource had no last_event_id in its URL (sse-connect was %q)", connect)
					}
					if w := want(1, 2, 3, 4); !maps.EqualFunc(got, w, slices.Equal) {
						t.Fatalf("the DOM has %q, want %q: every event once and in order, those of the outage too", items, w)
					}
					t.Logf("resumed from last_event_id=%s (sse-connect before the outage: %s); the DOM has %q", through.query, connect, items)
					return
				}
				if through.query != "" {
					t.Fatalf("without the script htmx's URL carried last_event_id=%s", through.query)
				}
				if w := want(1, 4); !maps.EqualFunc(got, w, slices.Equal) {
					t.Fatalf("without the script the DOM has %q, want only %q: then the test cannot tell the script's work", items, w)
				}
				t.Logf("without the script the events of the outage are missing: the DOM has %q", items)
			})
		}
	}
}
