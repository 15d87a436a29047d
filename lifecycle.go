package sserelay

import (
	"math/rand/v2"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// Reload and stop, in order:
//
//  1. A new config provisions its handlers while the old one still serves.
//     Each takes its relay from the pool (app.go): an unchanged broker URL
//     and hub options find the running relay, so the connection, the hub
//     and its replay rings carry over.
//  2. The old config stops: its servers shut down (endOnShutdown). When
//     the process exits, every stream ends at once, so `caddy stop`
//     returns in seconds; on a reload, each stream ends at a random point
//     of reload_close_window and its client resumes on the new config with
//     Last-Event-ID. Where the relay serves HTTP/2 (http2.go), its
//     connections get GOAWAY too, and, when the process exits, those with
//     only streams in flight are closed 50 ms later, before the streams
//     are ended; Caddy's stop then waits for the rest.
//  3. The old handlers' Cleanup does the same (end), for a config whose
//     servers never started, and gives its relay back to the pool.
//  4. A relay no handler uses any more (a changed broker URL or hub
//     options) is closed by Destruct, or, while streams of the old config
//     are still open, by release once the last of them has ended: old
//     streams keep receiving until they end, and the new connection was
//     opened in step 1.

// end makes every stream of this handler finish within window.
func (h *Handler) end(window time.Duration) {
	if h.endOnce == nil {
		return // never provisioned
	}
	h.endOnce.Do(func() {
		h.window = window
		close(h.ending)
	})
}

// closeWindow is reload_close_window; a handler that was never
// provisioned has none.
func (h *Handler) closeWindow() time.Duration {
	if h.ReloadCloseWindow == nil {
		return 0
	}
	return time.Duration(*h.ReloadCloseWindow)
}

// endDelay is how long one stream waits once ending closes: a random
// point of the window, so clients do not all reconnect at once.
func (h *Handler) endDelay() time.Duration {
	if h.window <= 0 {
		return 0
	}
	return rand.N(h.window)
}

// endOnShutdown ends the handler's streams when a server of its config
// begins to shut down: at once when the process exits, spread over the
// reload window otherwise. It is the server's shutdown, not Caddy's
// earlier stopping event, so that the goroutine stopping Caddy is already
// waiting in http.Server.Shutdown while the streams end: 50,000 streams
// ending at the event kept it from the CPU for over a second before the
// shutdown had even begun (docs/PERFORMANCE.md). A shutdown_delay also
// keeps the streams for its length, as it keeps the server.
func (h *Handler) endOnShutdown(ctx caddy.Context) {
	app, err := ctx.AppIfConfigured("http")
	if err != nil {
		return // not in an HTTP server: Cleanup ends the streams
	}
	for _, srv := range app.(*caddyhttp.App).Servers {
		srv.RegisterOnShutdown(func() {
			if !caddy.Exiting() {
				h.end(h.closeWindow())
				return
			}
			if len(liveFronts(nil)) > 0 {
				// The relay serves HTTP/2 (http2.go) and first closes the
				// connections that carry only streams: those streams
				// then need no end of their own, each a frame to write.
				// A wait, not a barrier on the closes: with the ends held
				// until every close had returned, 50,000 streams took
				// 0.6 s to stop instead of 0.35 to 0.45 (not understood;
				// each close of a connection waits for its reader to be
				// scheduled).
				time.Sleep(drainBeforeClose + 20*time.Millisecond)
			}
			h.end(0)
		})
	}
}

// Destruct runs when the last handler using the relay is cleaned up. With
// streams still open the relay, and so its broker connection, stays until
// release sees the last of them end.
func (r *relay) Destruct() error {
	r.mu.Lock()
	r.closing = true
	idle := r.streams == 0
	r.mu.Unlock()
	if idle {
		return r.close()
	}
	return nil
}

// release gives back a stream's slot; the last stream of a relay no
// handler uses closes it.
func (r *relay) release(ip string) {
	r.mu.Lock()
	r.streams--
	if r.perIP[ip]--; r.perIP[ip] == 0 {
		delete(r.perIP, ip)
	}
	last := r.closing && r.streams == 0
	r.mu.Unlock()
	if last {
		_ = r.close()
	}
}

func (r *relay) close() error {
	var err error
	r.closeOnce.Do(func() {
		r.hub.Close()
		err = r.broker.Close()
		r.pump.stop()
	})
	return err
}
