package e2e

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	example "github.com/sse-relay/caddy-sse-relay/examples/django"
)

// TestExample drives Chromium against the stack `make example` runs
// (examples/django: Django under gunicorn behind Caddy's reverse_proxy,
// sse_relay with history and forward_auth to django_sse_relay.views.authorize,
// a throw-away Postgres), started the same way, on plain HTTP and on HTTPS
// with tls internal, where the streams must be HTTP/2. alice signs in
// through the login form and opens the page; bob, in another browser
// context, creates an order through the page's form and it reaches alice's
// list within a second; bob's message to alice reaches alice's inbox and
// not bob's; an order rolled back with its event never shows; after alice
// signs out in another tab, her stream's session gets 401 from forward_auth
// and her page stops updating.
func TestExample(t *testing.T) {
	needChromium(t)
	for _, tls := range []bool{false, true} {
		name := "http"
		if tls {
			name = "https tls internal h2"
		}
		t.Run(name, func(t *testing.T) { testExample(t, tls) })
	}
}

func testExample(t *testing.T, tls bool) {
	cfg := example.Config{Caddy: caddyBin, Host: "127.0.0.1", TLS: tls}
	client := &http.Client{Timeout: 10 * time.Second}
	var flags []chromedp.ExecAllocatorOption
	if tls {
		client.Transport = example.InsecureTransport()
		flags = append(flags, chromedp.Flag("ignore-certificate-errors", true))
	}
	stack, err := example.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("caddy log:\n%s\ngunicorn log:\n%s", stack.Log("caddy.log"), stack.Log("gunicorn.log"))
		}
		stack.Stop()
	})
	site := stack.Site

	alice := newBrowser(t, flags...)
	bob, cancelBob := chromedp.NewContext(alice, chromedp.WithNewBrowserContext())
	t.Cleanup(cancelBob)
	// The first step on a tab opens it, and lives as long as its context:
	// not one of the bounded ones below.
	if err := chromedp.Do(bob); err != nil {
		t.Fatal(err)
	}

	// Every response to alice's page for /events/, with its protocol.
	streams := watchStreams(t, alice)

	// within bounds the browser steps that wait: one that never ends fails
	// the test instead of hanging it.
	within := func(b context.Context) context.Context {
		ctx, cancel := context.WithTimeout(b, 15*time.Second)
		t.Cleanup(cancel)
		return ctx
	}
	signIn := func(b context.Context, user string) {
		t.Helper()
		if err := chromedp.Do(within(b),
			chromedp.Navigate(site+"/"), // login_required sends it to the form
			chromedp.WaitVisible(chromedp.ID("#username")),
			chromedp.SendKeys(chromedp.ID("#username"), user),
			chromedp.SendKeys(chromedp.ID("#password"), stack.Passwords[user]),
			chromedp.Click(chromedp.ID("#sign-in")),
			chromedp.WaitVisible(chromedp.ID("#feed")),
		); err != nil {
			t.Fatalf("%s signing in: %v", user, err)
		}
		if got := evalJS[string](t, b, `document.getElementById("user").textContent`); got != user {
			t.Fatalf("signed in as %q, want %q", got, user)
		}
		waitJS(t, b, `document.getElementById("live").textContent === "live"`, 10*time.Second)
	}
	submit := func(b context.Context, form map[string]string, button string) {
		t.Helper()
		var actions []chromedp.Action[chromedp.Void]
		for id, value := range form {
			actions = append(actions, chromedp.SetValue(chromedp.ID(id), value))
		}
		if err := chromedp.Do(within(b), append(actions, chromedp.Click(chromedp.ID(button)))...); err != nil {
			t.Fatalf("submitting %v with %s: %v", form, button, err)
		}
	}
	items := func(b context.Context, list string) []string {
		t.Helper()
		return evalJS[[]string](t, b, `[...document.querySelectorAll("#`+list+` li")].map((li) => li.textContent)`)
	}
	has := func(list, text string) string {
		return fmt.Sprintf(`[...document.querySelectorAll("#%s li")].some((li) => li.textContent.includes(%q))`, list, text)
	}
	lacks := func(b context.Context, list, text string) {
		t.Helper()
		if got := items(b, list); slices.ContainsFunc(got, func(s string) bool { return strings.Contains(s, text) }) {
			t.Fatalf("#%s has %q: %q", list, text, got)
		}
	}

	signIn(alice, "alice")
	signIn(bob, "bob")

	t.Run("bob's order reaches alice's list within a second", func(t *testing.T) {
		start := time.Now()
		submit(bob, map[string]string{"#description": "six blue mugs"}, "#create")
		waitJS(t, alice, has("orders", "six blue mugs"), 5*time.Second)
		took := time.Since(start)
		if took > time.Second {
			t.Fatalf("the order took %v from bob's click to alice's list", took)
		}
		waitJS(t, bob, has("orders", "six blue mugs"), 5*time.Second)
		t.Logf("from bob's click to alice's list: %v; alice's list %q", took.Round(time.Millisecond), items(alice, "orders"))
	})

	t.Run("a message to alice reaches alice and not bob", func(t *testing.T) {
		submit(bob, map[string]string{"#recipient": "alice", "#text": "lunch at noon?"}, "#send")
		waitJS(t, alice, has("messages", "lunch at noon?"), 5*time.Second)
		// alice answers: bob's stream gets his inbox in the log's order, so
		// with her answer in his list anything for alice would be there.
		submit(alice, map[string]string{"#recipient": "bob", "#text": "yes, see you"}, "#send")
		waitJS(t, bob, has("messages", "yes, see you"), 5*time.Second)
		lacks(bob, "messages", "lunch at noon?")
		lacks(alice, "messages", "yes, see you")
		t.Logf("alice's inbox %q, bob's %q", items(alice, "messages"), items(bob, "messages"))
	})

	t.Run("a rolled-back order never appears", func(t *testing.T) {
		submit(bob, map[string]string{"#description": "a rolled-back order"}, "#create-rolled-back")
		waitJS(t, bob, `document.getElementById("notice").textContent.startsWith("Rolled back")`, 5*time.Second)
		submit(bob, map[string]string{"#description": "after the rollback"}, "#create")
		// Events come in the log's order: the rolled-back one would be first.
		waitJS(t, alice, has("orders", "after the rollback"), 5*time.Second)
		waitJS(t, bob, has("orders", "after the rollback"), 5*time.Second)
		lacks(alice, "orders", "a rolled-back order")
		lacks(bob, "orders", "a rolled-back order")
		if err := chromedp.Do(within(alice), chromedp.Reload(), chromedp.WaitVisible(chromedp.ID("#feed"))); err != nil {
			t.Fatal(err)
		}
		waitJS(t, alice, `document.getElementById("live").textContent === "live"`, 10*time.Second)
		lacks(alice, "orders", "a rolled-back order")
		t.Logf("alice's list, reloaded: %q", items(alice, "orders"))
	})

	t.Run("after alice signs out her stream is refused and her page stops", func(t *testing.T) {
		jar, err := chromedp.Call(alice, network.GetCookies, network.GetCookiesParams{URLs: []string{site}})
		if err != nil {
			t.Fatal(err)
		}
		var session string
		for _, c := range jar.Cookies {
			if c.Name == "sessionid" {
				session = c.Value
			}
		}
		if session == "" {
			t.Fatalf("alice has no session cookie: %v", jar.Cookies)
		}
		status := func() int {
			req, _ := http.NewRequest("GET", site+"/events/", nil)
			req.Header.Set("Cookie", "sessionid="+session)
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			return resp.StatusCode
		}
		if code := status(); code != http.StatusOK {
			t.Fatalf("alice's session opens a stream with %d before she signs out, want 200", code)
		}

		// Another tab of hers signs out; the page stays open in the first.
		tab, cancel := chromedp.NewContext(alice)
		defer cancel()
		if err := chromedp.Do(tab); err != nil {
			t.Fatal(err)
		}
		if err := chromedp.Do(within(tab),
			chromedp.Navigate(site+"/"),
			chromedp.WaitVisible(chromedp.ID("#sign-out")),
			chromedp.Click(chromedp.ID("#sign-out")),
			chromedp.WaitVisible(chromedp.ID("#username")),
		); err != nil {
			t.Fatalf("signing out: %v", err)
		}
		waitJS(t, alice, `document.getElementById("status").dataset.status === "401"`, 10*time.Second)
		if code := status(); code != http.StatusUnauthorized {
			t.Fatalf("alice's old session opens a stream with %d after she signed out, want 401", code)
		}
		submit(bob, map[string]string{"#description": "after alice left"}, "#create")
		waitJS(t, bob, has("orders", "after alice left"), 5*time.Second)
		time.Sleep(500 * time.Millisecond)
		lacks(alice, "orders", "after alice left")
		t.Logf("alice's page: %q", evalJS[string](t, alice, `document.getElementById("status").textContent`))
	})

	want := "http/1.1"
	if tls {
		want = "h2"
	}
	var statuses []int64
	seen := streams()
	for _, s := range seen {
		statuses = append(statuses, s.Status)
		if s.Protocol != want {
			t.Fatalf("a stream request of alice's page went over %q, want %s: %+v", s.Protocol, want, seen)
		}
	}
	if !slices.Contains(statuses, 200) || !slices.Contains(statuses, 401) {
		t.Fatalf("alice's page got %v for /events/, want a 200 and, once signed out, a 401", statuses)
	}
	t.Logf("alice's page's /events/ responses over %s: %v", want, statuses)
}
