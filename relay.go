package sserelay

import (
	"fmt"
	"time"

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

func loadRelay(url string, replay int, linger time.Duration, logger *zap.Logger) (*relay, string, error) {
	key := fmt.Sprintf("%s|replay=%d|linger=%s", url, replay, linger)
	val, _, err := relays.LoadOrNew(key, func() (caddy.Destructor, error) {
		b, err := broker.Open(url, logger.Named("broker").With(zap.String("broker", broker.Redact(url))))
		if err != nil {
			return nil, err
		}
		h := hub.New(b, hub.Options{
			Replay: replay,
			Linger: linger,
			OnRefused: func(channel string, err error) {
				logger.Warn("payload refused", zap.String("channel", channel), zap.Error(err))
			},
		})
		b.Start(h)
		return &relay{broker: b, hub: h}, nil
	})
	if err != nil {
		return nil, "", err
	}
	return val.(*relay), key, nil
}
