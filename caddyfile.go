package sserelay

import (
	"math"
	"strconv"

	"github.com/dustin/go-humanize"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("sse_relay", parseCaddyfile)
	// Just before respond (so before reverse_proxy and file_server, and
	// after forward_auth and encode), so `sse_relay /events/*` beside
	// `reverse_proxy django:8000` needs no order line.
	httpcaddyfile.RegisterDirectiveOrder("sse_relay", httpcaddyfile.Before, "respond")
	httpcaddyfile.RegisterGlobalOption("sse_relay", parseGlobalOption)
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	var handler Handler
	err := handler.UnmarshalCaddyfile(h.Dispenser)
	return &handler, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	sse_relay [<matcher>] {
//		broker              <url> [<name>]
//		channels            <template>
//		channel_prefix      <prefix>
//		allowed_origins     <origin...>
//		heartbeat           <duration>
//		retry               <duration>
//		replay              <count>
//		history             <count> [<max-age>]
//		replay_max_bytes    <size>
//		linger              <duration>
//		max_channels        <count>
//		buffer              <count>
//		publish_key         <key>
//		jwt_secret          <key>
//		jwt_public_key      <pem-file>
//		jwt_cookie          <name>
//		jwt_audience        <aud>
//		jwt_issuer          <iss>
//		max_connections     <count>
//		max_connections_per_ip <count>
//		max_channels_total  <count>
//		max_new_channels_per_ip <count>
//		write_timeout       <duration>
//		reload_close_window <duration>
//	}
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		name := d.Val()
		var err error
		switch name {
		case "broker":
			h.Broker, h.BrokerName, err = brokerArgs(d)
		case "channels":
			h.Channels, err = oneArg(d)
		case "channel_prefix":
			h.ChannelPrefix, err = oneArg(d)
		case "publish_key":
			h.PublishKey, err = oneArg(d)
		case "jwt_secret":
			h.JWTSecret, err = oneArg(d)
		case "jwt_public_key":
			h.JWTPublicKey, err = oneArg(d)
		case "jwt_cookie":
			h.JWTCookie, err = oneArg(d)
		case "jwt_audience":
			h.JWTAudience, err = oneArg(d)
		case "jwt_issuer":
			h.JWTIssuer, err = oneArg(d)
		case "max_connections":
			h.MaxConnections, err = countArg(d, 1)
		case "max_connections_per_ip":
			h.MaxConnectionsPerIP, err = countArg(d, 1)
		case "max_channels_total":
			h.MaxChannelsTotal, err = countArg(d, 1)
		case "max_new_channels_per_ip":
			h.MaxNewChannelsPerIP, err = countArg(d, 1)
		case "allowed_origins":
			origins := d.RemainingArgs()
			if len(origins) == 0 {
				return d.ArgErr()
			}
			if _, err := parseOrigins(origins); err != nil {
				return d.Err(err.Error())
			}
			// Several lines add up.
			h.AllowedOrigins = append(h.AllowedOrigins, origins...)
		case "heartbeat":
			var v caddy.Duration
			v, err = durationArg(d)
			h.Heartbeat = &v
		case "linger":
			var v caddy.Duration
			v, err = durationArg(d)
			h.Linger = &v
		case "retry":
			h.Retry, err = durationArg(d)
		case "write_timeout":
			if h.WriteTimeout, err = durationArg(d); err == nil && h.WriteTimeout == 0 {
				err = d.Err("write_timeout: must be more than 0: a write without a deadline could hang forever")
			}
		case "reload_close_window":
			var v caddy.Duration
			v, err = durationArg(d)
			h.ReloadCloseWindow = &v // 0: streams of a replaced config end at once
		case "replay":
			var n int
			n, err = countArg(d, 0)
			h.Replay = &n
		case "history":
			h.History, h.HistoryMaxAge, err = historyArgs(d)
		case "replay_max_bytes":
			h.ReplayMaxBytes, err = sizeArg(d)
		case "max_channels":
			h.MaxChannels, err = countArg(d, 1)
		case "buffer":
			h.Buffer, err = countArg(d, 1)
		default:
			return d.Errf("unknown sse_relay subdirective %q", name)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// brokerArgs reads `broker <url> [<name>]`.
func brokerArgs(d *caddyfile.Dispenser) (string, string, error) {
	args := d.RemainingArgs()
	switch len(args) {
	case 1:
		return args[0], "", nil
	case 2:
		return args[0], args[1], nil
	}
	return "", "", d.ArgErr()
}

func oneArg(d *caddyfile.Dispenser) (string, error) {
	if !d.NextArg() {
		return "", d.ArgErr()
	}
	v := d.Val()
	if d.NextArg() {
		return "", d.ArgErr()
	}
	return v, nil
}

func durationArg(d *caddyfile.Dispenser) (caddy.Duration, error) {
	name := d.Val()
	s, err := oneArg(d)
	if err != nil {
		return 0, err
	}
	v, err := caddy.ParseDuration(s)
	if err != nil {
		return 0, d.Errf("%s: bad duration %q: %v", name, s, err)
	}
	if v < 0 {
		return 0, d.Errf("%s: must not be negative", name)
	}
	return caddy.Duration(v), nil
}

func countArg(d *caddyfile.Dispenser, least int) (int, error) {
	name := d.Val()
	s, err := oneArg(d)
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < least {
		return 0, d.Errf("%s: want a whole number of at least %d, got %q", name, least, s)
	}
	return n, nil
}

// historyArgs reads `history <count> [<max-age>]`.
func historyArgs(d *caddyfile.Dispenser) (int, caddy.Duration, error) {
	args := d.RemainingArgs()
	if len(args) < 1 || len(args) > 2 {
		return 0, 0, d.ArgErr()
	}
	n, err := strconv.Atoi(args[0])
	if err != nil || n < 1 {
		return 0, 0, d.Errf("history: want a whole number of events per channel of at least 1, got %q", args[0])
	}
	if len(args) == 1 {
		return n, 0, nil
	}
	age, err := caddy.ParseDuration(args[1])
	if err != nil || age <= 0 {
		return 0, 0, d.Errf("history: want a positive max age such as 24h, got %q", args[1])
	}
	return n, caddy.Duration(age), nil
}

// sizeArg reads a byte size such as 64MiB or 1000000.
func sizeArg(d *caddyfile.Dispenser) (int, error) {
	name := d.Val()
	s, err := oneArg(d)
	if err != nil {
		return 0, err
	}
	n, err := humanize.ParseBytes(s)
	if err != nil || n < 1 || n > math.MaxInt32 {
		return 0, d.Errf("%s: want a size such as 64MiB, got %q", name, s)
	}
	return int(n), nil
}

// parseGlobalOption reads the global option:
//
//	{
//		sse_relay {
//			broker <url> [<name>]
//		}
//	}
func parseGlobalOption(d *caddyfile.Dispenser, _ any) (any, error) {
	var app App
	d.Next()
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "broker":
			var err error
			if app.Broker, app.BrokerName, err = brokerArgs(d); err != nil {
				return nil, err
			}
		default:
			return nil, d.Errf("unknown sse_relay global option %q", d.Val())
		}
	}
	return httpcaddyfile.App{Name: "sse_relay", Value: caddyconfig.JSON(app, nil)}, nil
}

// Interface guard
var _ caddyfile.Unmarshaler = (*Handler)(nil)
