package broker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// Redis limits: Redis itself takes far more, but a relay has no business
// carrying huge payloads or names; these are the documented caps.
const (
	RedisMaxPayload = 64 << 10
	RedisMaxChannel = 255
)

const (
	redisPingEvery   = 15 * time.Second
	redisSyncTimeout = 10 * time.Second
)

// redisBroker keeps one pub/sub connection. Each connection's life is a
// generation: a reader (run) and one goroutine that issues SUBSCRIBE and
// UNSUBSCRIBE. A failed connection is closed and replaced, never repaired
// behind our back, so every outage is seen, logged and reported.
type redisBroker struct {
	core
	client *redis.Client
	log    *redisLog // nil without history
}

func newRedis(rawURL string, logger *zap.Logger, history History) (*redisBroker, error) {
	opt, err := redis.ParseURL(rawURL)
	if err != nil {
		// go-redis's error quotes the URL, password and all.
		return nil, fmt.Errorf("redis broker URL %s is not valid: percent-encode a password with ?, #, @ or / in it", Label(rawURL))
	}
	opt.ClientName = "caddy-sse-relay"
	// RESP2: pub/sub replies are plain arrays, read only by our reader.
	opt.Protocol = 2
	opt.PoolSize = 4
	r := &redisBroker{client: redis.NewClient(opt)}
	r.core.init(logger)
	if history.On() {
		r.log = &redisLog{history: history, client: r.client, logger: logger, want: r.want, last: map[string]Position{}}
	}
	return r, nil
}

// Log is the per-channel streams' log, or nil without history.
func (r *redisBroker) Log() Log {
	if r.log == nil {
		return nil
	}
	return r.log
}

func (r *redisBroker) Start(sink Sink) { r.launch(func() { r.run(sink) }) }

func (r *redisBroker) Limits() Limits {
	return Limits{MaxPayload: RedisMaxPayload, MaxChannel: RedisMaxChannel}
}

// Publish uses the client's small command pool: a subscribed connection
// cannot publish. Several channels go in one MULTI/EXEC: every PUBLISH
// runs, or none.
func (r *redisBroker) Publish(ctx context.Context, channels []string, payload []byte) error {
	if !r.outage.isUp() {
		return ErrUnavailable
	}
	var err error
	switch {
	case r.log != nil:
		err = r.log.publish(ctx, channels, payload)
	case len(channels) == 1:
		err = r.client.Publish(ctx, channels[0], payload).Err()
	default:
		_, err = r.client.TxPipelined(ctx, func(tx redis.Pipeliner) error {
			for _, ch := range channels {
				tx.Publish(ctx, ch, payload)
			}
			return nil
		})
	}
	return redisPublishError(err)
}

// redisPublishError is what a publisher is told of err: ErrRejected when
// Redis refused the command itself, else ErrUnavailable.
func redisPublishError(err error) error {
	if err == nil {
		return nil
	}
	var rerr redis.Error
	if errors.As(err, &rerr) && refusedByRedis(rerr.Error()) {
		return fmt.Errorf("%w: %s", ErrRejected, rerr.Error())
	}
	return fmt.Errorf("%w: %v", ErrUnavailable, err)
}

// refusedByRedis tells a reply that refuses the command itself (a channel
// the ACL forbids, a malformed command) from the server's passing trouble
// (LOADING, BUSY, MASTERDOWN, TRYAGAIN, OOM, …), which a retry may pass.
func refusedByRedis(reply string) bool {
	for _, prefix := range []string{"NOPERM", "ERR ", "EXECABORT", "WRONGTYPE"} {
		if strings.HasPrefix(reply, prefix) {
			return true
		}
	}
	return false
}

func (r *redisBroker) Close() error {
	r.stop()
	return r.client.Close()
}

func (r *redisBroker) run(sink Sink) {
	for r.ctx.Err() == nil {
		err := r.generation(sink)
		if r.ctx.Err() != nil {
			return
		}
		r.outage.lost(err)
		r.want.releaseAll()
		if !sleep(r.ctx, r.bo.delay()) {
			return
		}
	}
}

// generation serves one connection until it fails.
func (r *redisBroker) generation(sink Sink) error {
	ps := r.client.Subscribe(r.ctx)
	defer ps.Close()
	// A blocked read does not watch the context; closing the connection
	// ends it when the broker is closed.
	stopClose := context.AfterFunc(r.ctx, func() { _ = ps.Close() })
	defer stopClose()
	if err := ps.Ping(r.ctx); err != nil {
		return err
	}
	if _, err := ps.ReceiveTimeout(r.ctx, 5*time.Second); err != nil {
		return err
	}
	if r.log != nil {
		if err := r.log.load(r.ctx); err != nil {
			r.logger.Error("history: publishing through the log will fail", zap.Error(err))
		}
	}
	have, err := r.resubscribe(ps, sink, r.outage.knownDown())
	if err != nil {
		return err
	}
	r.outage.connected()
	r.bo.reset()
	for ch := range have {
		r.want.markActive(ch) // once the connection counts as up
	}

	genCtx, stop := context.WithCancel(r.ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.command(genCtx, ps, have)
	}()
	defer func() {
		stop()
		wg.Wait()
	}()
	return r.read(ps, sink)
}

// redisSyncBatch is how many channels one SUBSCRIBE of a resync carries.
const redisSyncBatch = 1000

// resubscribe subscribes the connection to every wanted channel before it
// counts as up (for health, the outage log and the backoff), a batch at a
// time. After an outage, pub/sub having kept nothing for absent
// subscribers, each channel gets what its stream got meanwhile (history)
// or a reset, before any live message of it.
func (r *redisBroker) resubscribe(ps *redis.PubSub, sink Sink, wasDown bool) (map[string]bool, error) {
	have := map[string]bool{}
	add, _, _ := r.want.diff(have)
	if r.log != nil && len(add) > 0 {
		if err := r.log.seed(r.ctx, add); err != nil {
			return nil, err
		}
	}
	for len(add) > 0 {
		batch := add[:min(len(add), redisSyncBatch)]
		add = add[len(batch):]
		held, err := r.subscribeBatch(ps, batch)
		if err != nil {
			return nil, err
		}
		if wasDown {
			if r.log != nil {
				if err := r.log.backfill(r.ctx, batch, sink); err != nil {
					return nil, err
				}
			} else {
				sink.Reset(batch, "broker-reconnect")
			}
		}
		for _, m := range held {
			r.handle(m, sink)
		}
		for _, ch := range batch {
			have[ch] = true
		}
	}
	return have, nil
}

// subscribeBatch subscribes channels and waits for every confirmation,
// holding the messages that come meanwhile.
func (r *redisBroker) subscribeBatch(ps *redis.PubSub, channels []string) ([]*redis.Message, error) {
	names := r.names(channels)
	if err := ps.Subscribe(r.ctx, names...); err != nil {
		return nil, err
	}
	pending := len(names)
	var held []*redis.Message
	for pending > 0 {
		msg, err := ps.ReceiveTimeout(r.ctx, redisSyncTimeout)
		if err != nil {
			return nil, err
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" {
				pending--
			}
		case *redis.Message:
			held = append(held, m)
		}
	}
	return held, nil
}

// command issues SUBSCRIBE and UNSUBSCRIBE as the wanted set changes
// after the resync; have is what the connection is subscribed to.
func (r *redisBroker) command(ctx context.Context, ps *redis.PubSub, have map[string]bool) {
	for {
		if add, remove, ok := r.want.diff(have); ok {
			if len(add) > 0 {
				if r.log != nil {
					if err := r.log.seed(ctx, add); err != nil {
						_ = ps.Close() // the reader sees the broken connection
						return
					}
				}
				if err := ps.Subscribe(ctx, r.names(add)...); err != nil {
					return // the reader sees the broken connection
				}
				for _, ch := range add {
					have[ch] = true
				}
			}
			if len(remove) > 0 {
				if err := ps.Unsubscribe(ctx, r.names(remove)...); err != nil {
					return
				}
				for _, ch := range remove {
					delete(have, ch)
				}
				if r.log != nil {
					r.log.forget(remove)
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-r.want.wake:
		}
	}
}

// names are the pub/sub channels of hub channels: each itself, and with
// history its stream's announcements too.
func (r *redisBroker) names(channels []string) []string {
	if r.log == nil {
		return channels
	}
	out := make([]string, 0, 2*len(channels))
	for _, ch := range channels {
		out = append(out, ch, RedisLogKey(ch))
	}
	return out
}

// logChannel is the hub channel whose announcements name carries.
func logChannel(name string) (string, bool) {
	rest, ok := strings.CutPrefix(name, "sse-relay:{")
	if !ok || !strings.HasSuffix(rest, "}") {
		return "", false
	}
	return rest[:len(rest)-1], true
}

func (r *redisBroker) read(ps *redis.PubSub, sink Sink) error {
	pinged := false
	for {
		msg, err := ps.ReceiveTimeout(r.ctx, redisPingEvery)
		if err != nil {
			var nerr net.Error
			if !errors.As(err, &nerr) || !nerr.Timeout() || pinged {
				return err
			}
			// Quiet for a while: a ping tells a dead connection from an idle one.
			if err := ps.Ping(r.ctx); err != nil {
				return err
			}
			pinged = true
			continue
		}
		switch m := msg.(type) {
		case *redis.Message:
			r.handle(m, sink)
		case *redis.Subscription:
			if m.Kind == "subscribe" {
				r.subscribed(m.Channel)
			}
		case *redis.Pong:
			pinged = false
		}
	}
}

// handle hands a message to the sink: an announcement of the log, or a
// payload published straight on the channel.
func (r *redisBroker) handle(m *redis.Message, sink Sink) {
	if ch, ok := logChannel(m.Channel); ok && r.log != nil {
		r.log.announced(ch, m.Payload, sink)
		return
	}
	sink.Deliver(m.Channel, []byte(m.Payload))
}

// subscribed marks a hub channel active once its last pub/sub channel is
// subscribed: with history its announcements, else itself.
func (r *redisBroker) subscribed(name string) {
	if r.log == nil {
		r.want.markActive(name)
		return
	}
	if ch, ok := logChannel(name); ok {
		r.want.markActive(ch)
	}
}
