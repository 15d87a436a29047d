package sserelay

import (
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/sse-relay/caddy-sse-relay/broker"
	"github.com/sse-relay/caddy-sse-relay/hub"
)

// relays holds one relay (broker connection + hub) per broker URL and hub
// settings. It is package-level on purpose: a config reload provisions new
// handlers before the old ones are cleaned up, so the connection, the hub
// and its replay rings carry over; the last Cleanup closes them.
var relays = caddy.NewUsagePool()

type relay struct {
	broker   broker.Broker
	hub      *hub.Hub
	url      string // redacted, for stats and metric labels
	replay   int
	received atomic.Uint64

	mu      sync.Mutex
	streams int
	perIP   map[string]int
	// closing is set once no handler uses the relay: the last of its
	// streams (each ending within its handler's reload window) closes it.
	closing   bool
	closeOnce sync.Once
}

func (r *relay) openStreams() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.streams
}

// admit counts a new stream against the node-wide and per-IP limits. It
// returns the status to refuse with, or a release func.
func (r *relay) admit(ip string, max, maxPerIP int) (func(), int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.streams >= max {
		metrics.dropped.WithLabelValues("limit").Inc()
		return nil, http.StatusServiceUnavailable
	}
	if r.perIP[ip] >= maxPerIP {
		metrics.dropped.WithLabelValues("limit").Inc()
		return nil, http.StatusTooManyRequests
	}
	r.streams++
	r.perIP[ip]++
	return func() {
		r.mu.Lock()
		r.streams--
		if r.perIP[ip]--; r.perIP[ip] == 0 {
			delete(r.perIP, ip)
		}
		last := r.closing && r.streams == 0
		r.mu.Unlock()
		if last {
			_ = r.close()
		}
	}, 0
}

// Destruct runs when the last handler using the relay is cleaned up. With
// streams still open, which their handlers end over reload_close_window,
// the relay, and so its broker connection, stays until the last of them
// has ended: a reload that changes the broker URL opens the new
// connection before the old one closes, and the old config's streams
// keep receiving until they end.
func (r *relay) Destruct() error {
	r.mu.Lock()
	r.closing = true
	idle := r.streams == 0
	r.mu.Unlock()
	if idle {
		return r.close()
	}
	return nil
}

func (r *relay) close() error {
	var err error
	r.closeOnce.Do(func() {
		r.hub.Close()
		err = r.broker.Close()
	})
	return err
}

// loadRelay returns the relay for url and hub options, opening it if no
// handler has. Handlers share a relay, and so a connection, when their
// broker URL and hub options match.
func loadRelay(url string, opts hub.Options, logger *zap.Logger) (*relay, string, error) {
	key := fmt.Sprintf("%s|replay=%d|linger=%s|replay_max_bytes=%d", url, opts.Replay, opts.Linger, opts.MaxReplayBytes)
	val, _, err := relays.LoadOrNew(key, func() (caddy.Destructor, error) {
		b, err := broker.Open(url, logger.Named("broker").With(zap.String("broker", broker.Redact(url))))
		if err != nil {
			return nil, err
		}
		opts.OnRefused = func(channel string, err error) {
			metrics.refused.WithLabelValues(refusedReason(err)).Inc()
			logger.Warn("payload refused", zap.String("channel", channel), zap.Error(err))
		}
		opts.OnDropped = func() { metrics.dropped.WithLabelValues("slow").Inc() }
		h := hub.New(b, opts)
		r := &relay{broker: b, hub: h, url: broker.Redact(url), replay: opts.Replay, perIP: map[string]int{}}
		b.Start(counted{hub: h, received: &r.received})
		return r, nil
	})
	if err != nil {
		return nil, "", err
	}
	return val.(*relay), key, nil
}
