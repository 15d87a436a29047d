package sserelay

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"golang.org/x/net/http2"

	"github.com/sse-relay/caddy-sse-relay/internal/stream"
)

// front serves one listener's HTTP/2 connections for a Caddy server, with
// x/net/http2 as Caddy does, but with a handler of its own above Caddy's:
// serveStream. Caddy's server does not see these connections, so front
// also does what its shutdown would: GOAWAY, and wait for their requests.
type front struct {
	srv    *caddyhttp.Server
	logger *zap.Logger
	h2     *http2.Server
	// base is the HTTP/1 server x/net/http2 takes its timeouts and error
	// log from, and whose Shutdown sends GOAWAY on every connection
	// served (http2.ConfigureServer); it serves nothing itself.
	base *http.Server

	mu      sync.Mutex
	conns   map[*frontConn]struct{}
	served  sync.WaitGroup
	stopped bool
}

// frontConn is one HTTP/2 connection and the requests it has in flight.
type frontConn struct {
	c        net.Conn
	inFlight atomic.Int64 // requests being handled, event streams among them
	streams  atomic.Int64 // event streams served after the chain returned
}

type frontConnKey struct{}

func newFront(srv *caddyhttp.Server, logger *zap.Logger) *front {
	f := &front{srv: srv, logger: logger, h2: new(http2.Server), conns: map[*frontConn]struct{}{}}
	f.base = &http.Server{
		ReadTimeout:       time.Duration(srv.ReadTimeout),
		ReadHeaderTimeout: time.Duration(srv.ReadHeaderTimeout),
		WriteTimeout:      time.Duration(srv.WriteTimeout),
		IdleTimeout:       time.Duration(srv.IdleTimeout),
		MaxHeaderBytes:    srv.MaxHeaderBytes,
		ErrorLog:          zap.NewStdLog(logger),
	}
	// It only errs on a TLS config that forbids HTTP/2's ciphers; base
	// has none, and the handshake was Caddy's.
	_ = http2.ConfigureServer(f.base, f.h2)
	return f
}

// listen wraps ln: its HTTP/2 connections are f's.
func (f *front) listen(ln net.Listener) net.Listener {
	s := &sortingListener{Listener: ln, f: f, timeout: f.handshakeTimeout(),
		conns: make(chan net.Conn), failed: make(chan error, 1), closed: make(chan struct{})}
	go s.acceptLoop()
	return s
}

// handshakeTimeout bounds a TLS handshake as net/http does: by the
// shortest of the server's read and write timeouts; Caddy sets a read
// header timeout by default.
func (f *front) handshakeTimeout() time.Duration {
	d := time.Duration(0)
	for _, t := range []time.Duration{f.base.ReadHeaderTimeout, f.base.ReadTimeout, f.base.WriteTimeout} {
		if t > 0 && (d == 0 || t < d) {
			d = t
		}
	}
	if d == 0 {
		d = time.Minute
	}
	return d
}

// serve serves one HTTP/2 connection until it closes.
func (f *front) serve(tc *tls.Conn) {
	fc := &frontConn{c: tc}
	f.mu.Lock()
	if f.stopped {
		f.mu.Unlock()
		_ = tc.Close()
		return
	}
	f.conns[fc] = struct{}{}
	f.served.Add(1)
	f.mu.Unlock()
	metrics.http2.Inc()
	defer func() {
		metrics.http2.Dec()
		f.mu.Lock()
		delete(f.conns, fc)
		f.mu.Unlock()
		f.served.Done()
	}()
	f.h2.ServeConn(tc, &http2.ServeConnOpts{
		Context:    context.WithValue(context.Background(), frontConnKey{}, fc),
		BaseConfig: f.base,
		Handler:    http.HandlerFunc(f.serveRequest),
	})
}

// serveRequest runs Caddy's handler chain for one request, then, if the
// request is an event stream that Serve left in the Parking, the stream:
// here, with the chain's frames off the stack and its state free.
func (f *front) serveRequest(w http.ResponseWriter, r *http.Request) {
	fc := r.Context().Value(frontConnKey{}).(*frontConn)
	fc.inFlight.Add(1)
	defer fc.inFlight.Add(-1)
	p := new(stream.Parking)
	f.srv.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), stream.ParkingKey{}, p)))
	if p.Run == nil {
		return
	}
	fc.streams.Add(1)
	defer fc.streams.Add(-1)
	p.Run(r.Context().Done())
}

// shutdown begins to shut f down as Caddy's server does: GOAWAY on every
// connection, so they close once their requests are done. When the
// process exits, a connection that has nothing in flight but event streams
// is closed at once instead: its streams would only end, and each end is
// a frame to write (about 2 CPU-seconds for 50,000 streams).
func (f *front) shutdown(exiting bool) {
	f.mu.Lock()
	f.stopped = true
	var idle []*frontConn
	for fc := range f.conns {
		if exiting && fc.inFlight.Load() == fc.streams.Load() {
			idle = append(idle, fc)
		}
	}
	f.mu.Unlock()
	for _, fc := range idle {
		_ = fc.c.Close()
	}
	// Sends GOAWAY; base has no listener or connection to wait for.
	_ = f.base.Shutdown(context.Background())
}

// wait returns once every connection f served has closed, or ctx is done.
func (f *front) wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		f.served.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
