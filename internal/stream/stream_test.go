package stream

import (
	"bufio"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/sse-relay/caddy-sse-relay/hub"
)

// listener is a broker stand-in that listens at once; the hub is real.
type listener struct{}

var listening = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

func (listener) Listen(string) <-chan struct{} { return listening }
func (listener) Unlisten(string)               {}

// counts is an Observer that counts.
type counts struct{ opened, closed, written, failed atomic.Int64 }

func (c *counts) Opened()                    { c.opened.Add(1) }
func (c *counts) Closed()                    { c.closed.Add(1) }
func (c *counts) Written(n int, _ time.Time) { c.written.Add(int64(n)) }
func (c *counts) WriteFailed()               { c.failed.Add(1) }

// server serves every request a stream of channel "a" with cfg, and
// reports each stream's end on done.
type server struct {
	*httptest.Server
	hub  *hub.Hub
	cfg  *Config
	obs  *counts
	done chan struct{}
}

func newServer(t *testing.T, cfg Config, http2 bool, expires time.Time) *server {
	t.Helper()
	s := &server{hub: hub.New(listener{}, hub.Options{Replay: 10}), obs: new(counts), done: make(chan struct{}, 100)}
	cfg.Logger, cfg.Observer = zap.NewNop(), s.obs
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = 5 * time.Second
	}
	if cfg.EndDelay == nil {
		cfg.EndDelay = func() time.Duration { return 0 }
	}
	s.cfg = &cfg
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sub, err := s.hub.Subscribe([]string{"a"}, r.Header.Get("Last-Event-ID"), 8)
		if err != nil {
			t.Error(err)
			return
		}
		s.cfg.Serve(w, r, Stream{Sub: sub, Expires: expires, Channels: []string{"a"},
			Done: func() { s.hub.Unsubscribe(sub); s.done <- struct{}{} }})
	}))
	if http2 {
		s.EnableHTTP2 = true
		s.StartTLS()
	} else {
		s.Start()
	}
	t.Cleanup(func() { s.Close(); s.hub.Close() })
	return s
}

// open starts a stream and returns its response and a line reader.
func (s *server) open(t *testing.T, method string) (*http.Response, *bufio.Reader) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, method, s.URL+"/", nil)
	resp, err := s.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp, bufio.NewReader(resp.Body)
}

// lines reads n lines, failing after 5 s.
func lines(t *testing.T, rd *bufio.Reader, n int) []string {
	t.Helper()
	got := make(chan []string, 1)
	go func() {
		var out []string
		for range n {
			l, err := rd.ReadString('\n')
			if err != nil {
				break
			}
			out = append(out, strings.TrimSuffix(l, "\n"))
		}
		got <- out
	}()
	select {
	case out := <-got:
		return out
	case <-time.After(5 * time.Second):
		t.Fatalf("fewer than %d lines in 5s", n)
	}
	return nil
}

func (s *server) waitDone(t *testing.T, what string) {
	t.Helper()
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: the stream did not end", what)
	}
}

func protocols(t *testing.T, run func(t *testing.T, http2 bool)) {
	for _, p := range []struct {
		name  string
		http2 bool
	}{{"HTTP/1.1", false}, {"HTTP/2", true}} {
		t.Run(p.name, func(t *testing.T) { run(t, p.http2) })
	}
}

// TestServeOpensAndWrites: the headers, the opening comment and retry,
// then events as the hub queues them, over the taken-over HTTP/1.1
// connection and over HTTP/2's response path alike.
func TestServeOpensAndWrites(t *testing.T) {
	protocols(t, func(t *testing.T, http2 bool) {
		s := newServer(t, Config{Retry: 1500 * time.Millisecond}, http2, time.Time{})
		resp, rd := s.open(t, http.MethodGet)
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" ||
			resp.Header.Get("Cache-Control") != "no-cache, no-transform" || resp.Header.Get("X-Accel-Buffering") != "no" {
			t.Fatalf("%d %v", resp.StatusCode, resp.Header)
		}
		if got := strings.Join(lines(t, rd, 3), "|"); got != ": ok|retry: 1500|" {
			t.Fatalf("opening %q", got)
		}
		s.hub.Deliver("a", []byte(`{"event":"e","data":"one"}`))
		s.hub.Deliver("a", []byte(`two`))
		got := strings.Join(lines(t, rd, 7), "|")
		if !strings.Contains(got, "event: e|data: one|") || !strings.Contains(got, "data: two|") {
			t.Fatalf("events %q", got)
		}
		// Written is counted once the write returned, which may be after
		// the client read it.
		deadline := time.Now().Add(5 * time.Second)
		for s.obs.written.Load() != 2 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if n := s.obs.written.Load(); n != 2 {
			t.Fatalf("written %d frames, want 2", n)
		}
	})
}

// TestServeHeartbeat: a comment line after each heartbeat of silence.
func TestServeHeartbeat(t *testing.T) {
	protocols(t, func(t *testing.T, http2 bool) {
		s := newServer(t, Config{Heartbeat: 50 * time.Millisecond}, http2, time.Time{})
		_, rd := s.open(t, http.MethodGet)
		if got := strings.Join(lines(t, rd, 6), "|"); got != ": ok||:||:|" {
			t.Fatalf("%q, want the opening then two heartbeats", got)
		}
	})
}

// TestServeEnds: a stream ends when its config ends it (after EndDelay),
// when its token expires, and when the client leaves; each end calls Done
// once and the Observer sees it closed.
func TestServeEnds(t *testing.T) {
	protocols(t, func(t *testing.T, http2 bool) {
		ending := make(chan struct{})
		var once sync.Once
		s := newServer(t, Config{Ending: ending, EndDelay: func() time.Duration { return 20 * time.Millisecond }}, http2, time.Time{})
		_, rd := s.open(t, http.MethodGet)
		lines(t, rd, 2)
		once.Do(func() { close(ending) })
		s.waitDone(t, "config replaced")

		s = newServer(t, Config{}, http2, time.Now().Add(200*time.Millisecond))
		_, rd = s.open(t, http.MethodGet)
		lines(t, rd, 2)
		s.waitDone(t, "token expired")

		s = newServer(t, Config{}, http2, time.Time{})
		resp, rd := s.open(t, http.MethodGet)
		lines(t, rd, 2)
		resp.Body.Close()
		s.waitDone(t, "client gone")
		deadline := time.Now().Add(5 * time.Second)
		for s.obs.closed.Load() != 1 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if s.obs.opened.Load() != 1 || s.obs.closed.Load() != 1 {
			t.Fatalf("opened %d, closed %d", s.obs.opened.Load(), s.obs.closed.Load())
		}
	})
}

// TestHead: HEAD gets a stream's headers and no body.
func TestHead(t *testing.T) {
	w := httptest.NewRecorder()
	Head(w)
	if w.Code != 200 || w.Header().Get("Content-Type") != "text/event-stream" || w.Body.Len() != 0 {
		t.Fatalf("HEAD: %d %v %q", w.Code, w.Header(), w.Body)
	}
}

// TestServeReplay: a resume's backlog goes out before live events, in
// order, a chunk at a time however large.
func TestServeReplay(t *testing.T) {
	s := newServer(t, Config{}, false, time.Time{})
	_, rd := s.open(t, http.MethodGet)
	lines(t, rd, 2)
	big := strings.Repeat("x", 40<<10)
	for _, d := range []string{"first", big, big, "last"} {
		s.hub.Deliver("a", []byte(d))
	}
	first := lines(t, rd, 3)
	id := strings.TrimPrefix(first[0], "id: ")

	req, _ := http.NewRequest(http.MethodGet, s.URL+"/", nil)
	req.Header.Set("Last-Event-ID", id)
	resp, err := s.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	rd2 := bufio.NewReader(resp.Body)
	var data []int
	for _, l := range lines(t, rd2, 2+3*3) {
		if d, ok := strings.CutPrefix(l, "data: "); ok {
			data = append(data, len(d))
		}
	}
	if len(data) != 3 || data[0] != len(big) || data[1] != len(big) || data[2] != len("last") {
		t.Fatalf("replayed data lengths %v", data)
	}
}

// TestServeHeartbeatOnlyWhenSilent: events closer together than the
// heartbeat put it off; it comes a heartbeat after the last of them.
func TestServeHeartbeatOnlyWhenSilent(t *testing.T) {
	protocols(t, func(t *testing.T, http2 bool) {
		s := newServer(t, Config{Heartbeat: 150 * time.Millisecond}, http2, time.Time{})
		_, rd := s.open(t, http.MethodGet)
		lines(t, rd, 2)
		for range 10 {
			s.hub.Deliver("a", []byte("tick"))
			time.Sleep(40 * time.Millisecond)
		}
		start := time.Now()
		got := lines(t, rd, 3*10+2)
		for _, l := range got[:30] {
			if l == ":" {
				t.Fatalf("a heartbeat among the events: %q", got)
			}
		}
		if got[30] != ":" {
			t.Fatalf("no heartbeat after the events: %q", got[30:])
		}
		if waited := time.Since(start); waited > time.Second {
			t.Fatalf("heartbeat %v after the last event", waited)
		}
	})
}

// TestServeParked: with a Parking in the request's context, Serve writes
// the headers and returns, and the stream is served from it afterwards,
// outside the handler chain; HTTP/1.1 is taken over instead, as always.
func TestServeParked(t *testing.T) {
	protocols(t, func(t *testing.T, http2 bool) {
		h := hub.New(listener{}, hub.Options{Replay: 10})
		defer h.Close()
		cfg := &Config{WriteTimeout: 5 * time.Second, EndDelay: func() time.Duration { return 0 },
			Logger: zap.NewNop(), Observer: new(counts)}
		parked := make(chan bool, 1)
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			sub, err := h.Subscribe([]string{"a"}, "", 8)
			if err != nil {
				t.Error(err)
				return
			}
			p := new(Parking)
			cfg.Serve(w, r.WithContext(context.WithValue(r.Context(), ParkingKey{}, p)),
				Stream{Sub: sub, Channels: []string{"a"}, Done: func() { h.Unsubscribe(sub) }})
			parked <- p.Stream != nil
			if p.Stream != nil {
				p.Stream.Start()
				p.Stream.Wait(r.Context().Done())
			}
		}))
		srv.EnableHTTP2 = http2
		if http2 {
			srv.StartTLS()
		} else {
			srv.Start()
		}
		defer srv.Close()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		rd := bufio.NewReader(resp.Body)
		if got := strings.Join(lines(t, rd, 2), "|"); got != ": ok|" {
			t.Fatalf("opening %q", got)
		}
		if p := <-parked; p != http2 {
			t.Fatalf("parked: %v, want %v", p, http2)
		}
		h.Deliver("a", []byte(`after the chain`))
		if got := strings.Join(lines(t, rd, 3), "|"); !strings.Contains(got, "data: after the chain") {
			t.Fatalf("event %q", got)
		}
	})
}
