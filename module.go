// Package sserelay is a Caddy module that relays PostgreSQL LISTEN/NOTIFY
// and Redis pub/sub messages to browsers as Server-Sent Events.
package sserelay

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/sse-relay/caddy-sse-relay/broker"
	"github.com/sse-relay/caddy-sse-relay/hub"
	"github.com/sse-relay/caddy-sse-relay/internal/stream"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Defaults, also stated in the README's table.
const (
	DefaultBroker            = "memory://"
	DefaultHeartbeat         = 15 * time.Second
	DefaultReplay            = 1000
	DefaultLinger            = 30 * time.Second
	DefaultReplayMaxBytes    = 64 << 20
	DefaultMaxChannels       = 16
	DefaultBuffer            = 256
	DefaultWriteTimeout      = 10 * time.Second
	DefaultReloadCloseWindow = 5 * time.Second
	DefaultMaxConnections    = 10000
	DefaultMaxConnectionsIP  = 1024
	DefaultMaxChannelsTotal  = 50000
	DefaultNewChannelsPerIP  = 1000
	// listenWait bounds how long a new stream waits for the broker to
	// confirm LISTEN/SUBSCRIBE before its headers go out.
	listenWait = 5 * time.Second
	// minKey is the shortest publish_key and jwt_secret accepted.
	minKey = 32
)

// Handler streams broker channels to clients as Server-Sent Events and,
// with a publish key, accepts events by POST.
type Handler struct {
	// Broker URL: postgres://, postgresql://, redis://, rediss://,
	// redis-cluster://host:port?addr=host2:port2… (a Redis Cluster through
	// sharded pub/sub; rediss-cluster:// over TLS) or memory://. Default:
	// the sse_relay app's broker, else memory://. Every handler on the
	// same URL shares one connection (on a cluster, one per primary).
	Broker string `json:"broker,omitempty"`

	// BrokerName names the broker in logs, /sse_relay/stats and metric
	// labels. Default: a label built from the URL (scheme, user, host,
	// port, database; never a password or query string).
	BrokerName string `json:"broker_name,omitempty"`

	// Channels is a placeholder template giving a comma-separated channel
	// list, e.g. {http.request.header.X-Sse-Channels}. Default: every
	// `channel` query value, else the last path segment.
	Channels string `json:"channels,omitempty"`

	// ChannelPrefix puts this route's channels in a namespace of the
	// broker: the route's channel x is the broker's prefix+x, on subscribe
	// and publish (tokens and templates name x). Without it, every route
	// on one broker reads the same channels, other applications' too.
	ChannelPrefix string `json:"channel_prefix,omitempty"`

	// AllowedOrigins lists origins that may open streams or publish from
	// a browser: exact (https://app.example.com), wildcard
	// (https://*.example.com, where * is one DNS label: a.example.com, not
	// a.b.example.com) or *. Default: same origin only. An Origin that is
	// not scheme://host[:port] matches no listed origin. Requests without
	// an Origin header are always allowed.
	AllowedOrigins []string `json:"allowed_origins,omitempty"`

	// Heartbeat is how long a stream may stay silent before a comment
	// line is sent. Default 15s; 0 turns heartbeats off.
	Heartbeat *caddy.Duration `json:"heartbeat,omitempty"`

	// Retry, when set, is sent once at stream start as the client's
	// reconnection delay.
	Retry caddy.Duration `json:"retry,omitempty"`

	// Replay is how many events each channel keeps for Last-Event-ID
	// resumption. Default 1000; 0 turns replay and relay ids off.
	Replay *int `json:"replay,omitempty"`

	// History keeps up to this many events per channel in the broker's
	// own engine (a Redis stream per channel; the sse_relay.events table
	// on Postgres, see `caddy sse-relay schema`), so a client resumes from
	// its Last-Event-ID on any node, after a restart, and across a broker
	// outage. Ids are then positions in that log. Default 0: off.
	History int `json:"history,omitempty"`

	// HistoryMaxAge drops logged events older than this. Default 0: no
	// age limit, only History's count.
	HistoryMaxAge caddy.Duration `json:"history_max_age,omitempty"`

	// Linger is how long a channel stays listened after its last
	// subscriber left, so reconnecting clients miss nothing. Default 30s.
	Linger *caddy.Duration `json:"linger,omitempty"`

	// ReplayMaxBytes caps the memory all replay rings of one broker hold
	// together; past it the oldest events of the largest rings go first.
	// Default 64 MiB.
	ReplayMaxBytes int `json:"replay_max_bytes,omitempty"`

	// MaxChannels caps the channels of one stream. Default 16.
	MaxChannels int `json:"max_channels,omitempty"`

	// Buffer is how many events may wait for one subscriber before it is
	// cut off (it resumes with Last-Event-ID). Default 256.
	Buffer int `json:"buffer,omitempty"`

	// PublishKey enables POST publishing for requests that carry
	// `Authorization: Bearer <key>` (at least 32 bytes). Placeholders such
	// as {env.KEY} work; one that comes out empty leaves publishing off.
	PublishKey string `json:"publish_key,omitempty"`

	// JWTSecret turns on subscriber tokens signed with HS256 and this
	// secret (at least 32 bytes). Placeholders such as {env.KEY} work.
	JWTSecret string `json:"jwt_secret,omitempty"`

	// JWTPublicKey turns on subscriber tokens signed with the private half
	// of this PEM public key file: RS256 for RSA, ES256/384/512 for EC,
	// EdDSA for Ed25519.
	JWTPublicKey string `json:"jwt_public_key,omitempty"`

	// JWTCookie names a cookie to take the token from when the request has
	// no Authorization header.
	JWTCookie string `json:"jwt_cookie,omitempty"`

	// JWTAudience, when set, requires every token's aud claim (a string or
	// a list) to name it, so a token minted for another service sharing
	// the key is refused. Default: aud is not checked. Needs jwt_secret or
	// jwt_public_key.
	JWTAudience string `json:"jwt_audience,omitempty"`

	// JWTIssuer, when set, requires every token's iss claim to be exactly
	// it. Default: iss is not checked. Needs jwt_secret or jwt_public_key.
	JWTIssuer string `json:"jwt_issuer,omitempty"`

	// MaxConnections caps the streams open on this node and broker; over
	// it a new stream gets 503. Default 10000.
	MaxConnections int `json:"max_connections,omitempty"`

	// MaxConnectionsPerIP caps the streams of one client (as Caddy's
	// trusted_proxies resolve its address): one IPv4 address, or one IPv6
	// /64, since a host may use every address of its /64. Over it a new
	// stream gets 429. Default 1024.
	MaxConnectionsPerIP int `json:"max_connections_per_ip,omitempty"`

	// MaxChannelsTotal caps the channels this node holds for this broker
	// and hub options (with streams, or lingering): each is a LISTEN or
	// SUBSCRIBE. Past it a stream that needs a new channel gets 503.
	// Default 50000.
	MaxChannelsTotal int `json:"max_channels_total,omitempty"`

	// MaxNewChannelsPerIP caps the channels one client IP (an IPv6 client
	// by its /64) may add to the node in a minute; past it 429. A client
	// churning channel names cannot grow the listen set. Default 1000.
	MaxNewChannelsPerIP int `json:"max_new_channels_per_ip,omitempty"`

	// WriteTimeout drops a client whose socket does not take a write in
	// time. Default 10s.
	WriteTimeout caddy.Duration `json:"write_timeout,omitempty"`

	// ReloadCloseWindow is the window over which streams of a replaced
	// config end, at random, so clients reconnect to the new one without
	// a thundering herd. Default 5s.
	ReloadCloseWindow *caddy.Duration `json:"reload_close_window,omitempty"`

	relay      *relay
	relayKey   string
	brokerURL  string
	publishKey string
	verifier   *verifier
	origins    originSet
	rules      channelRules
	stream     stream.Config
	logger     *zap.Logger

	endOnce *sync.Once
	ending  chan struct{} // closed when the config is being replaced or Caddy stops
	window  time.Duration // spread of stream endings once ending closes
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.sse_relay", New: func() caddy.Module { return new(Handler) }}
}

// Provision fills defaults, takes its relay from the pool (opening the
// broker connection only if no other handler has) and watches for Caddy's
// stopping event.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	h.ending = make(chan struct{})
	h.endOnce = new(sync.Once)
	repl := caddy.NewReplacer()

	var err error
	if h.brokerURL, err = setting("broker", h.Broker, repl); err != nil {
		return err
	}
	brokerName := h.BrokerName
	if h.brokerURL == "" {
		if app, err := ctx.AppIfConfigured("sse_relay"); err == nil && app != nil {
			if h.brokerURL, err = setting("sse_relay broker", app.(*App).Broker, repl); err != nil {
				return err
			}
			brokerName = app.(*App).BrokerName
		}
	}
	if h.brokerURL == "" {
		h.brokerURL = DefaultBroker
	}
	// An unset publish key leaves POST off: that fails closed, and lets one
	// Caddyfile serve with and without publishing. A short one is refused,
	// as a short jwt_secret is: it would be guessed.
	h.publishKey = repl.ReplaceKnown(h.PublishKey, "")
	if h.publishKey != "" && len(h.publishKey) < minKey {
		return fmt.Errorf("publish_key must be at least %d bytes, got %d", minKey, len(h.publishKey))
	}
	jwtSecret, err := setting("jwt_secret", h.JWTSecret, repl)
	if err != nil {
		return err
	}
	h.fillDefaults()
	if h.origins, err = parseOrigins(h.AllowedOrigins); err != nil {
		return err
	}
	var rules tokenRules
	if rules.audience, err = setting("jwt_audience", h.JWTAudience, repl); err != nil {
		return err
	}
	if rules.issuer, err = setting("jwt_issuer", h.JWTIssuer, repl); err != nil {
		return err
	}
	if err := checkPrefix(h.ChannelPrefix); err != nil {
		return err
	}
	if h.verifier, err = newVerifier(jwtSecret, h.JWTPublicKey, rules); err != nil {
		return err
	}

	history := broker.History{Count: h.History, MaxAge: time.Duration(h.HistoryMaxAge)}
	h.relay, h.relayKey, err = loadRelay(h.brokerURL, brokerName, history, hub.Options{
		Replay:         *h.Replay,
		Linger:         time.Duration(*h.Linger),
		MaxReplayBytes: h.ReplayMaxBytes,
		ChannelCap:     h.MaxChannelsTotal,
	}, h.logger)
	if err != nil {
		return err
	}
	h.rules = channelRules{max: h.MaxChannels, limits: h.relay.broker.Limits(), prefix: h.ChannelPrefix}
	h.stream = stream.Config{
		Heartbeat:    time.Duration(*h.Heartbeat),
		Retry:        time.Duration(h.Retry),
		WriteTimeout: time.Duration(h.WriteTimeout),
		Ending:       h.ending,
		EndDelay:     h.endDelay,
		Logger:       h.logger,
		Observer:     streamMetrics{},
	}

	if err := registerMetrics(ctx.GetMetricsRegistry()); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	h.endOnShutdown(ctx)
	return nil
}

// fillDefaults sets every option left unset to its default.
func (h *Handler) fillDefaults() {
	if h.Heartbeat == nil {
		d := caddy.Duration(DefaultHeartbeat)
		h.Heartbeat = &d
	}
	if h.Replay == nil {
		n := DefaultReplay
		h.Replay = &n
	}
	if h.Linger == nil {
		d := caddy.Duration(DefaultLinger)
		h.Linger = &d
	}
	if h.ReplayMaxBytes == 0 {
		h.ReplayMaxBytes = DefaultReplayMaxBytes
	}
	if h.MaxChannels == 0 {
		h.MaxChannels = DefaultMaxChannels
	}
	if h.Buffer == 0 {
		h.Buffer = DefaultBuffer
	}
	if h.WriteTimeout == 0 {
		h.WriteTimeout = caddy.Duration(DefaultWriteTimeout)
	}
	if h.ReloadCloseWindow == nil {
		d := caddy.Duration(DefaultReloadCloseWindow)
		h.ReloadCloseWindow = &d
	}
	if h.MaxConnections == 0 {
		h.MaxConnections = DefaultMaxConnections
	}
	if h.MaxConnectionsPerIP == 0 {
		h.MaxConnectionsPerIP = DefaultMaxConnectionsIP
	}
	if h.MaxChannelsTotal == 0 {
		h.MaxChannelsTotal = DefaultMaxChannelsTotal
	}
	if h.MaxNewChannelsPerIP == 0 {
		h.MaxNewChannelsPerIP = DefaultNewChannelsPerIP
	}
}

// setting resolves the placeholders of a configured value. A value that
// was set but comes out empty (an unset {env.…}) is an error: quietly
// falling back would turn token checks off, or split nodes onto separate
// memory brokers.
func setting(name, configured string, repl *caddy.Replacer) (string, error) {
	v := repl.ReplaceKnown(configured, "")
	if configured != "" && v == "" {
		return "", fmt.Errorf("%s %q is empty once its placeholders are filled in: is the environment variable set?", name, configured)
	}
	return v, nil
}

// Validate checks the configuration.
func (h *Handler) Validate() error {
	switch {
	case h.MaxChannels < 1:
		return fmt.Errorf("max_channels must be at least 1, got %d", h.MaxChannels)
	case h.Buffer < 1:
		return fmt.Errorf("buffer must be at least 1, got %d", h.Buffer)
	case *h.Heartbeat < 0:
		return errors.New("heartbeat must not be negative")
	case h.Retry < 0:
		return errors.New("retry must not be negative")
	case h.ReplayMaxBytes < 0:
		return errors.New("replay_max_bytes must not be negative")
	case *h.Replay < 0:
		return fmt.Errorf("replay must not be negative, got %d", *h.Replay)
	case *h.Linger < 0:
		return errors.New("linger must not be negative")
	case h.History < 0 || h.HistoryMaxAge < 0:
		return errors.New("history and history_max_age must not be negative")
	case h.HistoryMaxAge > 0 && h.History == 0:
		return errors.New("history_max_age needs history: a count of events to keep per channel")
	case h.MaxConnections < 0 || h.MaxConnectionsPerIP < 0:
		return errors.New("max_connections and max_connections_per_ip must not be negative")
	case h.MaxChannelsTotal < 0 || h.MaxNewChannelsPerIP < 0:
		return errors.New("max_channels_total and max_new_channels_per_ip must not be negative")
	case (h.JWTCookie != "" || h.JWTAudience != "" || h.JWTIssuer != "") && h.verifier == nil:
		return errors.New("jwt_cookie, jwt_audience and jwt_issuer need jwt_secret or jwt_public_key")
	case h.WriteTimeout < 0 || *h.ReloadCloseWindow < 0:
		return errors.New("write_timeout and reload_close_window must not be negative")
	}
	return nil
}

// ServeHTTP streams (GET, HEAD), answers CORS preflight (OPTIONS) and
// publishes (POST). It is terminal: it never calls next.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	origin := r.Header.Get("Origin")
	if origin != "" && !h.origins.corsHeaders(w.Header(), origin, r) {
		refuse(w, http.StatusForbidden, "origin not allowed")
		return nil
	}
	w.Header().Add("Vary", "Origin")

	switch r.Method {
	case http.MethodGet, http.MethodHead:
		return h.serveStream(w, r)
	case http.MethodPost:
		if !h.publishing() {
			w.Header().Set("Allow", h.allowed())
			refuse(w, http.StatusMethodNotAllowed, "publishing is off: set publish_key to enable POST")
			return nil
		}
		return h.servePublish(w, r)
	case http.MethodOptions:
		h.servePreflight(w, r)
		return nil
	default:
		w.Header().Set("Allow", h.allowed())
		refuse(w, http.StatusMethodNotAllowed, "method not allowed")
		return nil
	}
}

// publishing reports whether POST is on: with a publish key, or with
// tokens that may carry a publish claim.
func (h *Handler) publishing() bool { return h.publishKey != "" || h.verifier != nil }

func (h *Handler) allowed() string {
	if h.publishing() {
		return "GET, HEAD, POST, OPTIONS"
	}
	return "GET, HEAD, OPTIONS"
}

// Cleanup gives the relay back to the pool; the last user closes it.
func (h *Handler) Cleanup() error {
	h.end(h.closeWindow())
	if h.relayKey != "" {
		_, err := relays.Delete(h.relayKey)
		return err
	}
	return nil
}

// refuse writes a one-line plain-text reason.
func refuse(w http.ResponseWriter, status int, reason string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(strings.TrimSpace(reason) + "\n"))
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
