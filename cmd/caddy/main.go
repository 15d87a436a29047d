// Command caddy is Caddy with its standard modules and sse_relay: what
// `xcaddy build --with github.com/sse-relay/caddy-sse-relay` produces.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/sse-relay/caddy-sse-relay"
)

func main() {
	caddycmd.Main()
}
