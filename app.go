package sserelay

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/sse-relay/caddy-sse-relay/broker"
	"github.com/sse-relay/caddy-sse-relay/hub"
)

func init() {
	caddy.RegisterModule(App{})
}

// App is the `sse_relay` app. It holds settings shared by every handler;
// the connections themselves live in a pool that survives reloads.
type App struct {
	// Broker is the default broker URL for handlers that set none.
	Broker string `json:"broker,omitempty"`
	// BrokerName names that broker in logs, stats and metric labels.
	BrokerName string `json:"broker_name,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "sse_relay", New: func() caddy.Module { return new(App) }}
}

// Start does nothing: relays open when handlers provision.
func (*App) Start() error { return nil }

// Stop does nothing: handlers close their streams on Caddy's stopping event.
func (*App) Stop() error { return nil }

// relays holds one relay (broker connection + hub) per broker URL and hub
// settings. It is package-level on purpose: a config reload provisions new
// handlers before the old ones are cleaned up, so the connection, the hub
// and its replay rings carry over; the last Cleanup closes them
// (lifecycle.go).
var relays = caddy.NewUsagePool()

// relay is a broker connection and the hub it feeds, shared by every
// handler on the same broker URL and hub options.
type relay struct {
	broker   broker.Broker
	hub      *hub.Hub
	pump     *pump  // the broker's Sink
	label    string // the broker's name, or its URL's label: for logs, stats and metrics
	replay   int
	history  broker.History
	received atomic.Uint64 // events the broker handed to the hub

	newChannels channelRate // channels new to the hub, per client address and minute

	mu      sync.Mutex
	streams int
	perIP   map[string]int
	// closing is set once no handler uses the relay: the last of its
	// streams (each ending within its handler's reload window) closes it.
	closing   bool
	closeOnce sync.Once
}

// loadRelay returns the relay for url and hub options, opening it if no
// handler has. Handlers share a relay, and so a connection, when their
// broker URL, name and hub options match.
func loadRelay(url, name string, history broker.History, opts hub.Options, logger *zap.Logger) (*relay, string, error) {
	key := fmt.Sprintf("%s|name=%s|replay=%d|linger=%s|replay_max_bytes=%d|channels=%d|history=%d,%s",
		url, name, opts.Replay, opts.Linger, opts.MaxReplayBytes, opts.ChannelCap, history.Count, history.MaxAge)
	label := name
	if label == "" {
		label = broker.Label(url)
	}
	val, _, err := relays.LoadOrNew(key, func() (caddy.Destructor, error) {
		b, err := broker.Open(url, logger.Named("broker").With(zap.String("broker", label)), history)
		if err != nil {
			return nil, err
		}
		if err := checkLog(b); err != nil {
			return nil, err
		}
		opts.Log = b.Log()
		opts.OnRefused = func(channel string, err error) {
			metrics.refused.WithLabelValues(refusedReason(err)).Inc()
			logger.Warn("payload refused", zap.String("channel", channel), zap.Error(err))
		}
		opts.OnDropped = func() { metrics.dropped.WithLabelValues("slow").Inc() }
		h := hub.New(b, opts)
		r := &relay{broker: b, hub: h, label: label, replay: opts.Replay, history: history, perIP: map[string]int{}}
		r.pump = newPump(h, &r.received)
		b.Start(r.pump)
		return r, nil
	})
	if err != nil {
		return nil, "", err
	}
	return val.(*relay), key, nil
}

// checkLog refuses a config whose history has nowhere to go: on Postgres
// the sse_relay schema must exist. A broker that cannot be reached now is
// not refused; it may come up after Caddy.
func checkLog(b broker.Broker) error {
	log := b.Log()
	if log == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := log.Check(ctx); errors.Is(err, broker.ErrNoSchema) {
		_ = b.Close()
		return fmt.Errorf("history: %w", err)
	}
	return nil
}

// Refusals of admit.
var (
	errNodeFull = errors.New("too many streams on this node")
	errIPFull   = errors.New("too many streams from this address")
)

// admit counts a new stream against the node-wide and per-IP limits. It
// returns a release func, or errNodeFull or errIPFull.
func (r *relay) admit(ip string, max, maxPerIP int) (release func(), err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.streams >= max {
		metrics.dropped.WithLabelValues("limit").Inc()
		return nil, errNodeFull
	}
	if r.perIP[ip] >= maxPerIP {
		metrics.dropped.WithLabelValues("limit").Inc()
		return nil, errIPFull
	}
	r.streams++
	r.perIP[ip]++
	return func() { r.release(ip) }, nil
}

// channelRate counts, per client address, the channels its streams added
// to the hub in the current minute.
type channelRate struct {
	mu     sync.Mutex
	minute time.Time
	counts map[string]int
}

// allow counts n new channels for ip and reports whether that stays
// within limit for this minute.
func (c *channelRate) allow(ip string, n, limit int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now := time.Now().Truncate(time.Minute); !now.Equal(c.minute) {
		c.minute, c.counts = now, map[string]int{}
	}
	if c.counts[ip]+n > limit {
		return false
	}
	c.counts[ip] += n
	return true
}

func (r *relay) openStreams() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.streams
}

var _ caddy.App = (*App)(nil)
