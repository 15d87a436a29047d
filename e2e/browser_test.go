package e2e

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/jackc/pgx/v5"
)

// chromiumPath is Debian's Chromium; make deps installs it.
const chromiumPath = "/usr/bin/chromium"

// browserSite serves e2e/browser (the page and npm's htmx) beside an
// sse_relay route on Postgres. heartbeat varies so that a reload really
// replaces the handler.
func browserSite(root, broker, heartbeat string) string {
	return fmt.Sprintf(`	sse_relay /events/* {
		broker %s
		retry 100ms
		heartbeat %s
		reload_close_window 300ms
	}
	root * %s
	file_server`, broker, heartbeat, root)
}

// htmxItems is the page's #items as numbers, in the DOM's order.
const htmxItems = `[...document.querySelectorAll("#items li")].map((li) => Number(li.textContent))`

// browserProtocol is one way for Chromium to reach a node, and the
// protocol its requests must then report.
type browserProtocol struct {
	name   string // the subtest's
	tls    bool   // https:// with tls internal, else http://
	want   string // nextHopProtocol, and the DevTools response's protocol
	global string // more global options for the node
}

// browserProtocols are the ones each browser test page runs over: HTTP/2
// served by Caddy, and by the relay's listener wrapper.
var browserProtocols = []browserProtocol{
	{"h1", false, "http/1.1", ""},
	{"h2", true, "h2", ""},
	{"h2 served by the relay", true, "h2", relayHTTP2},
	{"h3", true, "h3", ""},
}

// flags are the Chromium flags that make it reach n over p. HTTPS needs
// trust in n's certificate, from tls internal's CA, which no store holds.
// --ignore-certificate-errors does not do over QUIC: Chromium 156 still
// fails the handshake with ERR_CERT_AUTHORITY_INVALID (netlog:
// QUIC_SESSION_CERTIFICATE_VERIFY_FAILED; the page: ERR_QUIC_PROTOCOL_ERROR).
// So the key of the certificate n serves is listed, which TCP and QUIC
// both honour. h2 keeps newBrowser's --disable-quic, so it stays on TCP
// by construction, whatever Chromium makes of Caddy's Alt-Svc header; h3
// forces QUIC on n's origin from the first request, with no TCP to fall
// back to.
func (p browserProtocol) flags(t *testing.T, n *node) []chromedp.ExecAllocatorOption {
	t.Helper()
	if !p.tls {
		return nil
	}
	flags := []chromedp.ExecAllocatorOption{chromedp.Flag("ignore-certificate-errors-spki-list", servedKey(t, n))}
	if p.want == "h3" {
		flags = append(flags,
			chromedp.Flag("disable-quic", false),
			chromedp.Flag("origin-to-force-quic-on", strings.TrimPrefix(n.base, "https://")))
	}
	return flags
}

// servedKey is the base64 SHA-256 of the public key of the certificate n
// serves, as --ignore-certificate-errors-spki-list takes it.
func servedKey(t *testing.T, n *node) string {
	t.Helper()
	conn, err := tls.Dial("tcp", strings.TrimPrefix(n.base, "https://"), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	sum := sha256.Sum256(conn.ConnectionState().PeerCertificates[0].RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// checkProtocol fails unless the page in b, its scripts, the streams that
// have ended (in the page's performance entries) and every response for
// /events/ (streams) went over p.
func checkProtocol(t *testing.T, b context.Context, p browserProtocol, streams []streamResponse) {
	t.Helper()
	type entry struct {
		Name     string `json:"name"`
		Protocol string `json:"protocol"`
	}
	entries := evalJS[[]entry](t, b, `performance.getEntriesByType("navigation").concat(performance.getEntriesByType("resource"))
		.map((e) => ({ name: e.name, protocol: e.nextHopProtocol }))`)
	var scripts int
	for _, e := range entries {
		if e.Protocol != p.want {
			t.Fatalf("%s went over %q, want %s: %+v", e.Name, e.Protocol, p.want, entries)
		}
		if strings.HasSuffix(e.Name, ".js") {
			scripts++
		}
	}
	if len(entries) == 0 || !strings.HasSuffix(entries[0].Name, "/index.html") || scripts < 2 {
		t.Fatalf("the page's performance entries lack the page or its two scripts: %+v", entries)
	}
	var ok bool
	for _, s := range streams {
		if s.Protocol != p.want {
			t.Fatalf("%s (%d) went over %q, want %s: %+v", s.URL, s.Status, s.Protocol, p.want, streams)
		}
		ok = ok || s.Status == 200
	}
	if !ok {
		t.Fatalf("no stream got a 200: %+v", streams)
	}
	t.Logf("the page, %d resources and %d stream responses over %s", len(entries)-1, len(streams), p.want)
}

// TestBrowser drives headless Chromium against a page served by the same
// Caddy, over HTTP/1.1 in clear and over HTTPS (tls internal) with HTTP/2
// and with HTTP/3: htmx's SSE extension swaps the DOM on pg_notify, named
// events reach addEventListener with their ids, EventSource and htmx
// resume across admin-API reloads without missing or repeating an event,
// and a 204 for a missing channel stops EventSource from reconnecting. The
// protocol is the one the browser reports for the page, its scripts and
// every stream.
func TestBrowser(t *testing.T) {
	needChromium(t)
	root := browserRoot(t)
	ctx := context.Background()
	pg, err := pgx.Connect(ctx, servers.PG(t).URL())
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close(ctx)
	for _, p := range browserProtocols {
		t.Run(p.name, func(t *testing.T) { testBrowser(t, p, root, pg) })
	}
}

// testBrowser is TestBrowser over p, with a node and a browser of its own.
func testBrowser(t *testing.T, p browserProtocol, root string, pg *pgx.Conn) {
	ctx := context.Background()
	notify := func(channel, payload string) {
		t.Helper()
		if _, err := pg.Exec(ctx, `SELECT pg_notify($1, $2)`, channel, payload); err != nil {
			t.Fatal(err)
		}
	}
	n := startNodeWith(t, p.global, browserSite(root, servers.PG(t).URL(), "15s"), p.tls)
	b := newBrowser(t, p.flags(t, n)...)
	streams := watchStreams(t, b)
	if err := chromedp.Do(b, chromedp.Navigate(n.base+"/index.html")); err != nil {
		t.Fatal(err)
	}
	// Publish only once the page's EventSource and htmx's are open: the
	// relay sends headers once the broker listens.
	waitJS(t, b, `got.opens >= 1 && got.htmxOpens >= 1`, 10*time.Second)

	t.Run("htmx swaps the DOM on pg_notify", func(t *testing.T) {
		notify("dom", `{"data":"<b id=\"order\">order 42 shipped</b>"}`)
		waitJS(t, b, `document.querySelector("#swap #order")?.textContent === "order 42 shipped"`, 10*time.Second)
	})

	t.Run("named events reach addEventListener with their ids", func(t *testing.T) {
		notify("seq", `{"event":"custom","id":"order-7","data":"named"}`)
		waitJS(t, b, `got.named.length === 1`, 10*time.Second)
		named := evalJS[[]map[string]string](t, b, `got.named`)
		if len(named) != 1 || named[0]["data"] != "named" || named[0]["id"] != "order-7" {
			t.Fatalf("named events: %v", named)
		}
	})

	t.Run("EventSource and htmx resume across reloads without a gap or a duplicate", func(t *testing.T) {
		const total = 150
		done := make(chan error, 1)
		go func() {
			// About 50 events/s on each channel for 3 s, through the
			// reloads below: a tick for EventSource, an <li> for htmx.
			for i := 1; i <= total; i++ {
				if _, err := pg.Exec(ctx, `SELECT pg_notify('seq', $1), pg_notify('dom', $2)`,
					`{"event":"tick","data":"`+strconv.Itoa(i)+`"}`, `{"event":"item","data":"<li>`+strconv.Itoa(i)+`</li>"}`); err != nil {
					done <- err
					return
				}
				time.Sleep(20 * time.Millisecond)
			}
			done <- nil
		}()
		for i, hb := range []string{"16s", "17s", "18s"} {
			time.Sleep(700 * time.Millisecond)
			n.reload(t, browserSite(root, servers.PG(t).URL(), hb))
			t.Logf("reload %d through the admin API (heartbeat %s)", i+1, hb)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		waitJS(t, b, fmt.Sprintf(`got.ticks.length >= %d && %s.length >= %d`, total, htmxItems, total), 20*time.Second)
		ticks := evalJS[[]int](t, b, `got.ticks`)
		items := evalJS[[]int](t, b, htmxItems)
		opens := evalJS[int](t, b, `got.opens`)
		htmxOpens := evalJS[int](t, b, `got.htmxOpens`)
		want := make([]int, total)
		for i := range want {
			want[i] = i + 1
		}
		if !slices.Equal(ticks, want) {
			t.Fatalf("EventSource got %d ticks, not 1..%d in order: %v", len(ticks), total, ticks)
		}
		if !slices.Equal(items, want) {
			t.Fatalf("htmx put %d items in the DOM, not 1..%d in order: %v", len(items), total, items)
		}
		if opens < 2 || htmxOpens < 2 {
			t.Fatalf("EventSource opened %d times, htmx's %d times: the reloads did not end the streams", opens, htmxOpens)
		}
		t.Logf("%d of %d events, in order, none twice, across 3 reloads: EventSource over %d connections, htmx over %d", len(ticks), total, opens, htmxOpens)
	})

	t.Run("204 for a missing channel stops EventSource", func(t *testing.T) {
		// EventSource retries at about 100 ms after a network error; give it
		// ten times that to show it does not.
		time.Sleep(time.Second)
		none := evalJS[struct {
			Errors int `json:"errors"`
			State  int `json:"state"`
		}](t, b, `got.none`)
		if none.Errors != 1 || none.State != 2 {
			t.Fatalf("EventSource on a 204: %d errors, readyState %d; want 1 error and CLOSED (2)", none.Errors, none.State)
		}
	})

	t.Run("the page and every stream used the protocol", func(t *testing.T) {
		checkProtocol(t, b, p, streams())
	})
}

// newBrowser starts headless Chromium with the flags this machine's
// closed network needs, and more if any, in a profile of its own. more
// come last, so one may turn a default off, as HTTP/3 does --disable-quic.
func newBrowser(t *testing.T, more ...chromedp.ExecAllocatorOption) context.Context {
	t.Helper()
	opts := append(slices.Clone(chromedp.DefaultExecAllocatorOptions[:]),
		chromedp.ExecPath(chromiumPath),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
	)
	opts = append(opts, more...)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	return ctx
}

// streamResponse is a response to a request for /events/ as Chromium saw it.
type streamResponse struct {
	URL      string
	Status   int64
	Protocol string
}

// watchStreams notes every response that b's tab gets for a URL under
// /events/, from now on, and returns a function that lists those so far.
func watchStreams(t *testing.T, b context.Context) func() []streamResponse {
	t.Helper()
	var mu sync.Mutex
	var seen []streamResponse
	if err := chromedp.Listen(b, func(ev any) {
		if e, ok := ev.(*network.EventResponseReceived); ok && strings.Contains(e.Response.URL, "/events/") {
			mu.Lock()
			seen = append(seen, streamResponse{e.Response.URL, e.Response.Status, e.Response.Protocol})
			mu.Unlock()
		}
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(b, network.Enable, network.EnableParams{}); err != nil {
		t.Fatal(err)
	}
	return func() []streamResponse {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(seen)
	}
}

// evalJS evaluates expr in the page and decodes its JSON value.
func evalJS[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluating %s: %v", expr, err)
	}
	return v
}

// waitJS polls expr in the page until it is true.
func waitJS(t *testing.T, ctx context.Context, expr string, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		if evalJS[bool](t, ctx, "Boolean("+expr+")") {
			return
		}
		if time.Now().After(deadline) {
			state, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`JSON.stringify(got)`))
			t.Fatalf("still false after %v: %s\npage state: %s", limit, strings.TrimSpace(expr), state)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// browserRoot is e2e/browser, the pages the browser tests serve, with
// htmx and its SSE extension installed under it.
func browserRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("browser")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "node_modules/htmx-ext-sse/dist/sse.js")); err != nil {
		t.Fatalf("htmx is not installed: run npm ci in e2e/browser (make deps does): %v", err)
	}
	return root
}
