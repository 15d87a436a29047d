package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/quic-go/quic-go/http3"
	"github.com/redis/go-redis/v9"
)

// reference is the server the relay is measured against over TLS: plain
// net/http, one goroutine a stream, a channel per stream, Write and Flush
// for every event — what a Go programmer writes first. It serves HTTP/2
// (and HTTP/1.1) on a TCP port and HTTP/3 on the same UDP port, with an
// ECDSA P-256 certificate as Caddy's tls internal issues.
type reference struct {
	mu      sync.Mutex
	streams map[chan []byte]struct{}
}

// serveReference serves on addr. With a Redis URL it also relays what
// is published on Redis channel ch, as the relay does on that broker;
// POST /publish works either way.
func serveReference(addr, redisURL, ch string) error {
	cert, err := selfSigned()
	if err != nil {
		return err
	}
	ref := &reference{streams: map[chan []byte]struct{}{}}
	if redisURL != "" {
		if err := ref.relay(redisURL, ch); err != nil {
			return err
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /events/", ref.subscribe)
	mux.HandleFunc("POST /publish", ref.publish)
	tlsConf := &tls.Config{Certificates: []tls.Certificate{cert}}
	srv := &http.Server{Addr: addr, Handler: mux, TLSConfig: tlsConf}
	h3 := &http3.Server{Addr: addr, Handler: mux, TLSConfig: http3.ConfigureTLSConfig(tlsConf)}
	errs := make(chan error, 2)
	go func() { errs <- h3.ListenAndServe() }()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	fmt.Println("reference listening on", ln.Addr())
	go func() { errs <- srv.ServeTLS(ln, "", "") }()
	return <-errs
}

func (ref *reference) subscribe(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	if _, err := io.WriteString(w, ": ok\n\n"); err != nil {
		return
	}
	rc := http.NewResponseController(w)
	if rc.Flush() != nil {
		return
	}
	events := make(chan []byte, 64)
	ref.mu.Lock()
	ref.streams[events] = struct{}{}
	ref.mu.Unlock()
	defer func() {
		ref.mu.Lock()
		delete(ref.streams, events)
		ref.mu.Unlock()
	}()
	for {
		select {
		case <-r.Context().Done():
			return
		case frame := <-events:
			if _, err := w.Write(frame); err != nil {
				return
			}
			if rc.Flush() != nil {
				return
			}
		}
	}
}

// publish relays a POST's body.
func (ref *reference) publish(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	ref.fanOut(body)
	w.WriteHeader(http.StatusAccepted)
}

// relay subscribes to ch on Redis and relays each message.
func (ref *reference) relay(url, ch string) error {
	opt, err := redis.ParseURL(url)
	if err != nil {
		return err
	}
	ps := redis.NewClient(opt).Subscribe(context.Background(), ch)
	if _, err := ps.Receive(context.Background()); err != nil {
		return err
	}
	go func() {
		for msg := range ps.Channel(redis.WithChannelSize(1000)) {
			ref.fanOut([]byte(msg.Payload))
		}
	}()
	return nil
}

// fanOut frames a payload's data once and queues it for every stream; a
// stream whose queue is full misses it, which the load tool counts.
func (ref *reference) fanOut(payload []byte) {
	frame := []byte("data: " + string(payloadData(payload)) + "\n\n")
	ref.mu.Lock()
	for s := range ref.streams {
		select {
		case s <- frame:
		default:
		}
	}
	ref.mu.Unlock()
}

// selfSigned is a certificate for 127.0.0.1 made now.
func selfSigned() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "ssebench reference"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
