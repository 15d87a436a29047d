package stream

import (
	"crypto/tls"
	"net"
	"testing"
	"time"
)

func tcpPair(t *testing.T) (server, client net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	client, err = net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close(); client.Close() })
	return server, client
}

func closedWithin(gone <-chan struct{}, d time.Duration) bool {
	select {
	case <-gone:
		return true
	case <-time.After(d):
		return false
	}
}

// closer is a hang-up's func that closes ch.
func closer(ch chan struct{}) func() { return func() { close(ch) } }

// TestWatchHangup: the shared watcher (TCP, and TCP under TLS) and the
// per-stream reader (a connection with no socket) each notice the client
// leaving, and a stopped watch notices nothing.
func TestWatchHangup(t *testing.T) {
	server, client := tcpPair(t)
	if socketOf(server) == nil || socketOf(tls.Server(server, &tls.Config{})) == nil {
		t.Fatal("no socket found under a TCP or TLS connection")
	}
	gone := make(chan struct{})
	stop := watchHangup(server, closer(gone))
	defer stop()
	if closedWithin(gone, 100*time.Millisecond) {
		t.Fatal("gone before the client left")
	}
	client.Close()
	if !closedWithin(gone, 5*time.Second) {
		t.Fatal("TCP: the client left unnoticed")
	}

	server, client = tcpPair(t)
	gone = make(chan struct{})
	watchHangup(server, closer(gone))()
	client.Close()
	if closedWithin(gone, 200*time.Millisecond) {
		t.Fatal("a stopped watch still reported")
	}

	p1, p2 := net.Pipe()
	defer p1.Close()
	gone = make(chan struct{})
	defer watchHangup(p1, closer(gone))()
	p2.Close()
	if !closedWithin(gone, 5*time.Second) {
		t.Fatal("pipe: the client left unnoticed")
	}
}
