package sserelay

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(Listener{})
}

// Listener is the `sse_relay` listener wrapper. In a server's
// listener_wrappers (after TLS, where Caddy puts wrappers by default) it
// serves the server's HTTP/2 connections itself (http2.go): each request
// still goes through the server's routes, but an event stream then goes on
// beneath a handler of the relay's, above Caddy's, so that it keeps a
// shallow stack and none of the chain's per-request state (about 17 KiB a
// stream instead of 28), and a process that exits can close the
// connections that carry nothing but event streams instead of ending
// each stream with a frame (http2.go's shutdown). Connections that
// negotiate HTTP/1.1 go to Caddy's server as before; HTTP/3 does not pass
// through listener wrappers.
type Listener struct {
	servers map[string]*caddyhttp.Server
	logger  *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (Listener) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "caddy.listeners.sse_relay", New: func() caddy.Module { return new(Listener) }}
}

// Provision finds the HTTP servers and hooks their shutdown: it must be
// registered before they start, when the listeners are not yet wrapped.
// When the process exits, every front still serving is shut down and
// waited for, those a reload left behind included, as Caddy waits for the
// servers of earlier configs.
func (l *Listener) Provision(ctx caddy.Context) error {
	l.logger = ctx.Logger()
	if err := registerMetrics(ctx.GetMetricsRegistry()); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	app, err := ctx.App("http")
	if err != nil {
		return err
	}
	l.servers = app.(*caddyhttp.App).Servers
	for _, srv := range l.servers {
		srv.RegisterOnShutdown(func() {
			exiting := caddy.Exiting()
			of := srv
			if exiting {
				of = nil
			}
			for _, f := range liveFronts(of) {
				go f.shutdown(exiting)
			}
		})
		srv.RegisterOnStop(func(ctx context.Context) error {
			if !caddy.Exiting() {
				return nil // a reload does not wait for old connections
			}
			for _, f := range liveFronts(nil) {
				if err := f.wait(ctx); err != nil {
					return err
				}
			}
			return nil
		})
	}
	return nil
}

// UnmarshalCaddyfile sets up the listener wrapper from Caddyfile tokens:
//
//	servers {
//		listener_wrappers {
//			sse_relay
//		}
//	}
func (*Listener) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the wrapper's name
	if d.NextArg() {
		return d.ArgErr()
	}
	if d.NextBlock(0) {
		return d.Errf("the sse_relay listener wrapper takes no options, got %q", d.Val())
	}
	return nil
}

// WrapListener serves the HTTP/2 connections of ln and passes the others
// on. A listener of no HTTP server is returned as it is.
func (l *Listener) WrapListener(ln net.Listener) net.Listener {
	srv := serverOf(l.servers, ln.Addr())
	if srv == nil {
		l.logger.Warn("no HTTP server listens here; connections pass through", zap.Stringer("address", ln.Addr()))
		return ln
	}
	return newFront(srv, l.logger).listen(ln)
}

// serverOf is the server among servers that listens on addr: its port,
// and its host when the listen address names one. (A listener on port 0
// matches none: its port is the system's choice.)
func serverOf(servers map[string]*caddyhttp.Server, addr net.Addr) *caddyhttp.Server {
	tcp, ok := addr.(*net.TCPAddr)
	if !ok {
		return nil
	}
	for _, srv := range servers {
		for _, listen := range srv.Listen {
			na, err := caddy.ParseNetworkAddress(listen)
			if err != nil || na.IsUnixNetwork() || na.IsFdNetwork() {
				continue
			}
			if uint(tcp.Port) < na.StartPort || uint(tcp.Port) > na.EndPort {
				continue
			}
			if ip := net.ParseIP(na.Host); na.Host == "" || ip != nil && ip.Equal(tcp.IP) {
				return srv
			}
		}
	}
	return nil
}

// sortingListener hands Caddy's server the connections that are not
// HTTP/2, once their TLS handshake is done; f serves the rest.
type sortingListener struct {
	net.Listener
	f       *front
	timeout time.Duration // for a handshake
	conns   chan net.Conn
	failed  chan error // the inner listener's Accept failed
	closed  chan struct{}
	once    sync.Once
}

func (s *sortingListener) acceptLoop() {
	var backoff time.Duration
	for {
		c, err := s.Listener.Accept()
		if err != nil {
			// A temporary error passes, as net/http's Serve lets it pass:
			// out of file descriptors, or the deadline Caddy sets on a
			// listener it shares across a reload to wake the old
			// config's Accept (which this one shares). Wait a little,
			// then accept on.
			if te, ok := err.(interface{ Temporary() bool }); ok && te.Temporary() {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.f.logger.Debug("accept", zap.Error(err), zap.Duration("retrying_in", backoff))
				time.Sleep(backoff)
				continue
			}
			s.failed <- err
			return
		}
		backoff = 0
		go s.sort(c)
	}
}

// sort completes c's handshake and serves it if it negotiated HTTP/2.
func (s *sortingListener) sort(c net.Conn) {
	tc, ok := c.(*tls.Conn)
	if !ok {
		s.pass(c) // cleartext: Caddy's server (and its h2c) as before
		return
	}
	_ = tc.SetDeadline(time.Now().Add(s.timeout))
	if err := tc.HandshakeContext(context.Background()); err != nil {
		s.f.logger.Debug("TLS handshake", zap.Stringer("remote", c.RemoteAddr()), zap.Error(err))
		var plain tls.RecordHeaderError
		if errors.As(err, &plain) && plain.Conn != nil && looksLikeHTTP(plain.RecordHeader) {
			_, _ = io.WriteString(plain.Conn, "HTTP/1.0 400 Bad Request\r\n\r\nThis port speaks HTTPS.\n")
		}
		_ = c.Close()
		return
	}
	_ = tc.SetDeadline(time.Time{})
	if tc.ConnectionState().NegotiatedProtocol != "h2" {
		s.pass(c)
		return
	}
	s.f.serve(tc)
}

// looksLikeHTTP reports whether a TLS record header is the start of a
// clear-text HTTP/1 request instead.
func looksLikeHTTP(hdr [5]byte) bool {
	switch string(hdr[:]) {
	case "GET /", "HEAD ", "POST ", "PUT /", "OPTIO":
		return true
	}
	return false
}

func (s *sortingListener) pass(c net.Conn) {
	select {
	case s.conns <- c:
	case <-s.closed:
		_ = c.Close()
	}
}

func (s *sortingListener) Accept() (net.Conn, error) {
	select {
	case <-s.closed:
		return nil, net.ErrClosed
	default:
	}
	select {
	case c := <-s.conns:
		return c, nil
	case err := <-s.failed:
		s.failed <- err // for the next Accept
		return nil, err
	case <-s.closed:
		return nil, net.ErrClosed
	}
}

func (s *sortingListener) Close() error {
	s.once.Do(func() { close(s.closed) })
	err := s.Listener.Close()
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// Interface guards
var (
	_ caddy.Provisioner     = (*Listener)(nil)
	_ caddy.ListenerWrapper = (*Listener)(nil)
	_ caddyfile.Unmarshaler = (*Listener)(nil)
)
