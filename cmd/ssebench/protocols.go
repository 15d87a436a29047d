package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// The protocols a browser reaches the relay with, and how the load tool
// speaks each:
//
//   - h1: HTTP/1.1 in clear text, one connection a stream, written by hand
//     (subscribe's raw path).
//   - h2: HTTP/2 over TLS through net/http's client, many streams a
//     connection: the client opens another connection when the server's
//     SETTINGS_MAX_CONCURRENT_STREAMS is reached (250 for Caddy and
//     net/http), so 50,000 streams take about 200 connections.
//   - h3: HTTP/3 over QUIC through quic-go's client. A QUIC connection
//     carries 100 streams at a time (quic-go's default, which Caddy keeps),
//     and a client waits for a free one rather than opening a connection,
//     so each group of h3PerConn streams gets a transport, a connection, of
//     its own.
const h3PerConn = 100

// lanes are the HTTP clients the streams of an h2 or h3 run go through.
type lanes struct {
	proto   string
	clients []*http.Client
}

// newLanes makes the clients for subs streams: for h2 one per loopback
// source address, for h3 one per h3PerConn streams, bound to a source
// address in turn.
func newLanes(proto string, subs, sources int) (*lanes, error) {
	sources = max(1, sources)
	tlsConf := &tls.Config{InsecureSkipVerify: true} // tls internal: the test CA is not trusted
	l := &lanes{proto: proto}
	switch proto {
	case "h2":
		for s := range sources {
			l.clients = append(l.clients, &http.Client{Transport: h2Transport(tlsConf, source(s))})
		}
	case "h3":
		for g := range (subs + h3PerConn - 1) / h3PerConn {
			l.clients = append(l.clients, &http.Client{Transport: h3Transport(tlsConf, source(g%sources))})
		}
	default:
		return nil, fmt.Errorf("-proto %q: want h1, h2 or h3", proto)
	}
	return l, nil
}

// source is the i-th loopback source address: 127.0.0.2, 127.0.0.3, …
func source(i int) net.IP { return net.IPv4(127, 0, 0, byte(2+i)) }

// client is the client stream i goes through.
func (l *lanes) client(i int) *http.Client {
	if l.proto == "h3" {
		return l.clients[i/h3PerConn]
	}
	return l.clients[i%len(l.clients)]
}

func (l *lanes) close() {
	for _, c := range l.clients {
		c.CloseIdleConnections()
		if t, ok := c.Transport.(*http3.Transport); ok {
			_ = t.Close()
		}
	}
}

func h2Transport(tlsConf *tls.Config, from net.IP) *http.Transport {
	d := &net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: from}}
	t := &http.Transport{
		DialContext:         d.DialContext,
		TLSClientConfig:     tlsConf.Clone(),
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 1024,
		TLSHandshakeTimeout: 10 * time.Second,
	}
	t.Protocols = new(http.Protocols)
	t.Protocols.SetHTTP2(true)
	return t
}

func h3Transport(tlsConf *tls.Config, from net.IP) *http3.Transport {
	return &http3.Transport{
		TLSClientConfig: tlsConf.Clone(),
		QUICConfig:      &quic.Config{KeepAlivePeriod: 10 * time.Second, MaxIdleTimeout: time.Minute},
		Dial: func(ctx context.Context, addr string, tlsCfg *tls.Config, cfg *quic.Config) (*quic.Conn, error) {
			raddr, err := net.ResolveUDPAddr("udp", addr)
			if err != nil {
				return nil, err
			}
			pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: from})
			if err != nil {
				return nil, err
			}
			conn, err := quic.Dial(ctx, pc, raddr, tlsCfg, cfg)
			if err != nil {
				pc.Close()
			}
			return conn, err
		},
	}
}
