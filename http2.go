package sserelay

import (
	"context"
	"crypto/tls"
	"log"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"golang.org/x/net/http2"
)

// front serves one listener's HTTP/2 connections for a Caddy server, with
// x/net/http2 as Caddy does, but with a handler of its own above Caddy's:
// its ServeHTTP. Caddy's server does not see these connections, so front
// also does what its shutdown would: GOAWAY, and a wait for their requests.
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
	served  sync.WaitGroup // connections being served
	stopped bool
}

// frontConn is one HTTP/2 connection and the requests it has in flight.
type frontConn struct {
	c        net.Conn
	inFlight atomic.Int64 // requests being handled, event streams among them
	streams  atomic.Int64 // event streams served after the chain returned
	// lastDone is when a request other than an event stream last
	// returned (Unix nanoseconds): x/net may still be writing its end.
	lastDone atomic.Int64
	// release gives back the connection's count in served, once: when
	// it is served no more, or when the exit closes it (its serving then
	// only unwinds, and the exit need not wait behind that).
	release sync.Once
}

type frontConnKey struct{}

// fronts are the fronts of every config still serving connections: a
// process that exits waits for those a reload left behind too.
var fronts = struct {
	sync.Mutex
	all map[*front]struct{}
}{all: map[*front]struct{}{}}

// drainBeforeClose is how long, when the process exits, front waits after
// GOAWAY before it closes the connections that have only event streams in
// flight: for GOAWAY to reach the client (which then knows what was
// handled), and for the end of a response whose handler has returned.
const drainBeforeClose = 50 * time.Millisecond

func newFront(srv *caddyhttp.Server, logger *zap.Logger) *front {
	f := &front{srv: srv, logger: logger, h2: new(http2.Server), conns: map[*frontConn]struct{}{}}
	f.base = &http.Server{
		ReadTimeout:       time.Duration(srv.ReadTimeout),
		ReadHeaderTimeout: time.Duration(srv.ReadHeaderTimeout),
		WriteTimeout:      time.Duration(srv.WriteTimeout),
		IdleTimeout:       time.Duration(srv.IdleTimeout),
		MaxHeaderBytes:    srv.MaxHeaderBytes,
		ErrorLog:          log.New(errorLogWriter{logger}, "", 0),
	}
	// It only errs on a TLS config that forbids HTTP/2's ciphers; base
	// has none, and the handshake was Caddy's.
	_ = http2.ConfigureServer(f.base, f.h2)
	fronts.Lock()
	fronts.all[f] = struct{}{}
	fronts.Unlock()
	return f
}

// errorLogWriter logs what x/net/http2 reports as Caddy logs its HTTP
// servers' error log: a handler's panic as an error, the rest (clients
// that misbehave) at debug.
type errorLogWriter struct{ logger *zap.Logger }

func (e errorLogWriter) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	if strings.Contains(msg, "panic") {
		e.logger.Error(msg)
	} else {
		e.logger.Debug(msg)
	}
	return len(p), nil
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

// serve serves one HTTP/2 connection until it closes. One whose
// handshake ended after the shutdown began is closed: its client has sent
// nothing yet and tries again.
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
		f.forgetIfDone()
		f.mu.Unlock()
		fc.release.Do(f.served.Done)
	}()
	f.h2.ServeConn(tc, &http2.ServeConnOpts{
		Context:    context.WithValue(context.Background(), frontConnKey{}, fc),
		BaseConfig: f.base,
		Handler:    f,
	})
}

// forgetIfDone drops a stopped front with no connection from fronts, so
// that an old config is not kept. f.mu is held.
func (f *front) forgetIfDone() {
	if f.stopped && len(f.conns) == 0 {
		fronts.Lock()
		delete(fronts.all, f)
		fronts.Unlock()
	}
}

// ServeHTTP runs Caddy's handler chain for one request on a goroutine of
// its own (parkApart), then, if the request is an event stream that Serve
// left in the Parking, waits for the stream's end: here, with the chain's
// frames off the stack and its state free. This goroutine, x/net's for the
// request, stays on the smallest stack Go has, 2 KiB, for the stream's
// life; had it run the chain, its stack would have grown to 16 KiB and
// shrunk to 4 KiB at best (see stream's Wait).
func (f *front) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	fc := r.Context().Value(frontConnKey{}).(*frontConn)
	fc.inFlight.Add(1)
	defer fc.inFlight.Add(-1)
	// A panic in the chain goes on to x/net, which resets the stream and
	// logs it.
	parked := parkApart(r, func(pr *http.Request) { f.srv.ServeHTTP(w, pr) })
	if parked == nil {
		fc.lastDone.Store(time.Now().UnixNano())
		return
	}
	fc.streams.Add(1)
	defer fc.streams.Add(-1)
	parked.Wait(r.Context().Done())
}

// shutdown shuts f down as Caddy's server does: GOAWAY on every
// connection, so each closes once its requests are done. When the process
// exits, a connection that has nothing in flight but event streams is then
// closed, a moment after its GOAWAY, instead: its streams would only end,
// each with a frame to write (about 2 CPU-seconds for 50,000 streams).
func (f *front) shutdown(exiting bool) {
	f.mu.Lock()
	f.stopped = true
	f.forgetIfDone()
	f.mu.Unlock()
	// GOAWAY; base has no listener or connection of its own to wait for.
	_ = f.base.Shutdown(context.Background())
	if !exiting {
		return
	}
	time.Sleep(drainBeforeClose)
	recent := time.Now().Add(-drainBeforeClose).UnixNano()
	f.mu.Lock()
	var idle []*frontConn
	for fc := range f.conns {
		if fc.inFlight.Load() == fc.streams.Load() && fc.lastDone.Load() < recent {
			idle = append(idle, fc)
		}
	}
	f.mu.Unlock()
	// The process is exiting: nothing is waited for on these. A close
	// returns only once the connection's reader has run, which is behind
	// the goroutines of every stream the closes before it ended: waiting
	// for 200 connections of 50,000 streams took seconds.
	for _, fc := range idle {
		go fc.c.Close()
		fc.release.Do(f.served.Done)
	}
}

// wait returns once every connection f served has closed, or ctx is done.
// (Not every handler, and not the serving of a connection the exit closed:
// they only unwind, 50,000 goroutines of them for as many streams, and
// the process need not wait for the CPU behind them.)
func (f *front) wait(ctx context.Context) error {
	f.mu.Lock()
	f.stopped = true // no connection is added from here: Wait may start
	f.mu.Unlock()
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

// liveFronts are the fronts still serving, of srv, or of every server
// when srv is nil.
func liveFronts(srv *caddyhttp.Server) []*front {
	fronts.Lock()
	defer fronts.Unlock()
	var out []*front
	for f := range fronts.all {
		if srv == nil || f.srv == srv {
			out = append(out, f)
		}
	}
	return out
}
