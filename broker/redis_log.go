package broker

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// RedisFunction is the Redis function library that appends an event to its
// channel's stream and announces it in one call (FCALL sse_relay_publish).
// The relay loads it when it connects with history on; `caddy sse-relay
// schema --apply --broker redis://…` loads it too.
//
//go:embed redis_function.lua
var RedisFunction string

const redisLogBatch = 1000

// RedisLogKey is channel's stream, which is also the pub/sub channel its
// appends are announced on. The hash tag puts both in the channel's slot.
func RedisLogKey(channel string) string { return "sse-relay:{" + channel + "}" }

// redisLog is the Redis broker's log: a stream per channel.
type redisLog struct {
	history History
	client  redis.Cmdable // a *redis.ClusterClient on a cluster, which routes by key
	logger  *zap.Logger
	want    *wantSet

	// handover makes "not delivered yet" and the delivery one step: on a
	// cluster the readers of two shards may hold entries of one channel
	// for a moment while it moves, and a later entry handed over first
	// would make the sink drop the earlier one.
	handover sync.Mutex

	// last is, per hub channel, the newest position handed to the sink
	// (or the stream's head when it was subscribed): where a reconnect
	// backfills from. The command goroutine seeds it, the reader raises it.
	mu   sync.Mutex
	last map[string]Position
}

func (l *redisLog) GlobalOrder() bool { return false }

// load puts the function library on the server.
func (l *redisLog) load(ctx context.Context) error {
	if err := l.client.FunctionLoadReplace(ctx, RedisFunction).Err(); err != nil {
		return fmt.Errorf("loading the sse_relay function: %w", err)
	}
	return nil
}

// Check loads the function library: the one thing the log needs.
func (l *redisLog) Check(ctx context.Context) error { return l.load(ctx) }

// publish appends payload to every channel's stream through the function,
// several channels in one MULTI/EXEC.
func (l *redisLog) publish(ctx context.Context, channels []string, payload []byte) error {
	return l.fcall(ctx, "sse_relay_publish", channels, payload)
}

// fcall calls function, sse_relay_publish or (on a cluster, whose
// channels share a slot) sse_relay_spublish, for every channel.
func (l *redisLog) fcall(ctx context.Context, function string, channels []string, payload []byte) error {
	count, age := strconv.Itoa(l.history.Count), strconv.FormatInt(l.history.MaxAge.Milliseconds(), 10)
	if len(channels) == 1 {
		return l.client.FCall(ctx, function, []string{RedisLogKey(channels[0])}, payload, count, age).Err()
	}
	_, err := l.client.TxPipelined(ctx, func(tx redis.Pipeliner) error {
		for _, ch := range channels {
			tx.FCall(ctx, function, []string{RedisLogKey(ch)}, payload, count, age)
		}
		return nil
	})
	return err
}

// seed records the heads of channels about to be subscribed, so that a
// reconnect backfills whatever is appended after.
func (l *redisLog) seed(ctx context.Context, channels []string) error {
	heads, err := l.heads(ctx, channels)
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for ch, pos := range heads {
		if _, ok := l.last[ch]; !ok {
			l.last[ch] = pos
		}
	}
	return nil
}

// forget drops channels no longer subscribed.
func (l *redisLog) forget(channels []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, ch := range channels {
		delete(l.last, ch)
	}
}

// announced hands over an announcement ("<id> <payload>") unless it was
// delivered already (by a backfill).
func (l *redisLog) announced(channel, message string, sink Sink) {
	id, payload, ok := strings.Cut(message, " ")
	pos, err := ParsePosition(id)
	if !ok || err != nil {
		l.logger.Warn("malformed log announcement", zap.String("channel", channel))
		return
	}
	l.deliver(Entry{Channel: channel, Pos: pos, Payload: []byte(payload)}, sink)
}

// deliver hands e to sink unless it was delivered already.
func (l *redisLog) deliver(e Entry, sink Sink) {
	l.handover.Lock()
	defer l.handover.Unlock()
	if l.advance(e.Channel, e.Pos) {
		sink.DeliverEntry(e)
	}
}

// advance raises channel's last position to pos, or reports false when pos
// is not after it.
func (l *redisLog) advance(channel string, pos Position) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if last, ok := l.last[channel]; ok && !last.Less(pos) {
		return false
	}
	l.last[channel] = pos
	return true
}

// backfill delivers what channels' streams got after the last position
// handed over, after a reconnect, in one pipeline per page; a stream
// trimmed past it gets a reset.
func (l *redisLog) backfill(ctx context.Context, channels []string, sink Sink) error {
	from := map[string]Position{}
	l.mu.Lock()
	for _, ch := range channels {
		if pos, ok := l.last[ch]; ok {
			from[ch] = pos
		}
	}
	l.mu.Unlock()
	var expired []string
	for len(from) > 0 {
		entries, trimmed, err := l.Read(ctx, from, redisLogBatch)
		if err != nil {
			return err
		}
		if expired == nil {
			expired = trimmed
			if len(expired) > 0 {
				sink.Reset(expired, "expired")
			}
		}
		count := map[string]int{}
		for _, e := range entries {
			count[e.Channel]++
			l.deliver(e, sink)
			from[e.Channel] = e.Pos
		}
		for ch := range from {
			if count[ch] < redisLogBatch {
				delete(from, ch) // read to its end
			}
		}
	}
	return nil
}

// Read reads each channel's stream after its position; the order across
// channels is not defined (there is none on Redis).
func (l *redisLog) Read(ctx context.Context, after map[string]Position, limit int) ([]Entry, []string, error) {
	type query struct {
		channel string
		pos     Position
		rng     *redis.XMessageSliceCmd
		gone    *redis.StringCmd
	}
	qs := make([]query, 0, len(after))
	_, err := l.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for ch, pos := range after {
			key := RedisLogKey(ch)
			qs = append(qs, query{channel: ch, pos: pos,
				rng:  p.XRangeN(ctx, key, "("+pos.String(), "+", int64(limit)),
				gone: p.Get(ctx, key+":trimmed")})
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, nil, fmt.Errorf("reading the log: %w", err)
	}
	var out []Entry
	var trimmed []string
	for _, q := range qs {
		msgs, err := q.rng.Result()
		if err != nil {
			return nil, nil, fmt.Errorf("reading the log of %q: %w", q.channel, err)
		}
		for _, m := range msgs {
			pos, err := ParsePosition(m.ID)
			if err != nil {
				return nil, nil, err
			}
			d, _ := m.Values["d"].(string)
			out = append(out, Entry{Channel: q.channel, Pos: pos, Payload: []byte(d)})
		}
		// The function keeps the newest id it trimmed: a position before
		// it has lost entries after it.
		if gone, err := ParsePosition(q.gone.Val()); err == nil && q.pos.Less(gone) {
			trimmed = append(trimmed, q.channel)
		}
	}
	return out, trimmed, nil
}

func isNoSuchKey(err error) bool {
	var rerr redis.Error
	return errors.As(err, &rerr) && strings.Contains(rerr.Error(), "no such key")
}

// heads are the last ids channels' streams generated, whether or not the
// entry is still there (a stream trimmed empty by age keeps its last id),
// and the zero position for a stream that never was.
func (l *redisLog) heads(ctx context.Context, channels []string) (map[string]Position, error) {
	cmds := make([]*redis.XInfoStreamCmd, len(channels))
	_, err := l.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, ch := range channels {
			cmds[i] = p.XInfoStream(ctx, RedisLogKey(ch))
		}
		return nil
	})
	if err != nil && !isNoSuchKey(err) {
		return nil, fmt.Errorf("reading the log's head: %w", err)
	}
	out := make(map[string]Position, len(channels))
	for i, ch := range channels {
		var pos Position
		info, err := cmds[i].Result()
		switch {
		case isNoSuchKey(err):
		case err != nil:
			return nil, fmt.Errorf("reading the log's head: %w", err)
		default:
			if pos, err = ParsePosition(info.LastGeneratedID); err != nil {
				return nil, err
			}
		}
		out[ch] = pos
	}
	return out, nil
}

// Head is each channel's last generated id.
func (l *redisLog) Head(ctx context.Context, channels []string) (map[string]Position, error) {
	return l.heads(ctx, channels)
}

// Depth counts the entries of the channels listened to now.
func (l *redisLog) Depth(ctx context.Context) (LogDepth, error) {
	return l.depthOf(ctx, l.want.channels())
}

// depthOf counts the entries of channels.
func (l *redisLog) depthOf(ctx context.Context, channels []string) (LogDepth, error) {
	cmds := make([]*redis.IntCmd, len(channels))
	_, err := l.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, ch := range channels {
			cmds[i] = p.XLen(ctx, RedisLogKey(ch))
		}
		return nil
	})
	var d LogDepth
	if err != nil {
		return d, err
	}
	for _, c := range cmds {
		if n := c.Val(); n > 0 {
			d.Entries += n
			d.Channels++
		}
	}
	return d, nil
}
