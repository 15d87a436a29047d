package sserelay

import (
	"fmt"

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
	broker broker.Broker
	hub    *hub.Hub
}

func (r *relay) Destruct() error {
	r.hub.Close()
	return r.broker.Close()
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
			logger.Warn("payload refused", zap.String("channel", channel), zap.Error(err))
		}
		h := hub.New(b, opts)
		b.Start(h)
		return &relay{broker: b, hub: h}, nil
	})
	if err != nil {
		return nil, "", err
	}
	return val.(*relay), key, nil
}
