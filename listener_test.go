package sserelay

import (
	"net"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// TestListenerCaddyfile: the listener wrapper takes no argument and no
// option, and says so.
func TestListenerCaddyfile(t *testing.T) {
	for _, c := range []struct {
		in, err string
	}{
		{"sse_relay", ""},
		{"sse_relay h2", "wrong argument count"},
		{"sse_relay {\n\tstreams 10\n}", `takes no options, got "streams"`},
	} {
		err := new(Listener).UnmarshalCaddyfile(caddyfile.NewTestDispenser(c.in))
		if c.err == "" && err != nil || c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)) {
			t.Errorf("%q: %v, want %q", c.in, err, c.err)
		}
	}
}

// TestServerOf: a listener belongs to the server whose listen addresses
// hold its port, and its address where they name one.
func TestServerOf(t *testing.T) {
	a := &caddyhttp.Server{Listen: []string{":443"}}
	b := &caddyhttp.Server{Listen: []string{"127.0.0.1:9000-9010", "unix//run/caddy.sock"}}
	c2 := &caddyhttp.Server{Listen: []string{"127.0.0.2:8443"}}
	d := &caddyhttp.Server{Listen: []string{"127.0.0.3:8443"}}
	servers := map[string]*caddyhttp.Server{"a": a, "b": b, "c": c2, "d": d}
	for _, c := range []struct {
		addr net.Addr
		want *caddyhttp.Server
	}{
		{&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 443}, a},
		{&net.TCPAddr{IP: net.IPv6loopback, Port: 443}, a},
		{&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9005}, b},
		{&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9011}, nil},
		{&net.TCPAddr{IP: net.IPv4(127, 0, 0, 3), Port: 8443}, d},
		{&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8443}, nil},
		{&net.UnixAddr{Name: "/run/caddy.sock", Net: "unix"}, nil},
	} {
		if got := serverOf(servers, c.addr); got != c.want {
			t.Errorf("%v: %p, want %p", c.addr, got, c.want)
		}
	}
}
