package e2e

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/jackc/pgx/v5"

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
