// Package broker holds the one long-lived connection per broker URL that
// listens to a changing set of channels and publishes. Open picks the kind
// by URL scheme: postgres://, postgresql://, redis://, rediss://,
// redis-cluster://, rediss-cluster:// or memory://.
package broker

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// Sink receives what the broker reads; it must not block. The broker's
// reader calls it from one goroutine, except on a Redis Cluster, where the
// reader of each shard does: calls then overlap for channels of different
// shards, and, for a moment while a channel moves between shards, for its
// plain payloads (Deliver). The entries of one channel's log never overlap
// and come in position order.
type Sink interface {
	// Deliver hands over a payload published straight on channel, which
	// no log keeps.
	Deliver(channel string, payload []byte)
	// DeliverEntry hands over an entry of the log, with history on.
	DeliverEntry(e Entry)
	Reset(channels []string, reason string)
}

// Limits are what a broker can carry.
type Limits struct {
	MaxPayload int // bytes
	MaxChannel int // bytes of a channel name
	// FoldsCase: a listened channel also receives what is sent on its
	// ASCII-lowercased name (Postgres folds an unquoted NOTIFY Orders).
	FoldsCase bool
}

// Broker is one connection that listens and publishes.
type Broker interface {
	// Start begins the connection's life; events go to sink.
	Start(sink Sink)
	// Listen and Unlisten return at once: the broker's own goroutine does
	// the I/O. Listen's channel closes once the channel is listened to, or
	// once the broker knows it cannot be soon (it is down).
	Listen(channel string) <-chan struct{}
	Unlisten(channel string)
	// Publish sends payload on every one of channels to every node, all
	// or none: Postgres runs one statement, Redis one MULTI/EXEC.
	Publish(ctx context.Context, channels []string, payload []byte) error
	Limits() Limits
	// Log is the durable event log, or nil without history.
	Log() Log
	// Connected reports whether the connection is up now.
	Connected() bool
	// State describes the connection for stats and health checks.
	State() State
	Close() error
}

// State is a broker connection's condition.
type State struct {
	Connected  bool      `json:"connected"`
	Since      time.Time `json:"since"`      // when it connected, or lost the connection
	Reconnects int       `json:"reconnects"` // connections re-established after a loss
	// Shards are a Redis Cluster's pub/sub connections, one per primary.
	// The cluster is connected while every shard that holds a listened
	// channel is.
	Shards []ShardState `json:"shards,omitempty"`
}

// ShardState is the pub/sub connection to one primary of a Redis Cluster.
type ShardState struct {
	Addr          string    `json:"addr"`
	Connected     bool      `json:"connected"`
	Since         time.Time `json:"since"`
	Reconnects    int       `json:"reconnects"`
	Subscriptions int       `json:"subscriptions"` // pub/sub channels placed on it
}

// Errors a publisher can act on.
var (
	// ErrUnavailable means the broker is not connected now; try later.
	ErrUnavailable = errors.New("broker unavailable")
	// ErrRejected means the broker refused this channel or payload.
	ErrRejected = errors.New("broker rejected the message")
	// ErrClosed means the broker was closed.
	ErrClosed = errors.New("broker closed")
)

// Open returns a broker for rawURL, not yet started, keeping a log when
// history is on.
func Open(rawURL string, logger *zap.Logger, history History) (Broker, error) {
	if logger == nil {
		logger = zap.NewNop()
	}
	// Not url.Parse: its errors quote the whole URL, password and all.
	scheme, _, _ := strings.Cut(rawURL, "://")
	switch strings.ToLower(scheme) {
	case "postgres", "postgresql":
		return newPostgres(rawURL, logger, history)
	case "redis", "rediss":
		return newRedis(rawURL, logger, history)
	case "redis-cluster", "rediss-cluster":
		return newRedisCluster(rawURL, logger, history)
	case "memory":
		if history.On() {
			return nil, errors.New("history needs a broker that can keep it: postgres:// or redis://, not memory://")
		}
		return newMemory(), nil
	default:
		return nil, fmt.Errorf("broker URL %s: scheme must be postgres, postgresql, redis, rediss, redis-cluster, rediss-cluster or memory", Label(rawURL))
	}
}

// Label names the broker at rawURL in logs, errors, stats and metric
// labels. It is built from the parsed configuration (scheme, user, host,
// port, database) and never from the URL's text, so no password reaches
// it, whether in the user info, a query value (password=, sslpassword=)
// or an unencoded character that makes the URL parse oddly.
func Label(rawURL string) string {
	scheme, _, _ := strings.Cut(rawURL, "://")
	switch scheme = strings.ToLower(scheme); scheme {
	case "postgres", "postgresql":
		cfg, err := pgconn.ParseConfig(rawURL)
		if err != nil {
			return scheme + "://(unparsable)"
		}
		user := ""
		if cfg.User != "" {
			user = cfg.User + "@"
		}
		return fmt.Sprintf("%s://%s%s/%s", scheme, user, net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port))), cfg.Database)
	case "redis", "rediss":
		opt, err := redis.ParseURL(rawURL)
		if err != nil {
			return scheme + "://(unparsable)"
		}
		user := ""
		if opt.Username != "" {
			user = opt.Username + "@"
		}
		return fmt.Sprintf("%s://%s%s/%d", scheme, user, opt.Addr, opt.DB)
	case "redis-cluster", "rediss-cluster":
		opt, err := redis.ParseClusterURL(strings.Replace(rawURL, "-cluster://", "://", 1))
		if err != nil {
			return scheme + "://(unparsable)"
		}
		user := ""
		if opt.Username != "" {
			user = opt.Username + "@"
		}
		return fmt.Sprintf("%s://%s%s", scheme, user, strings.Join(opt.Addrs, ","))
	case "memory":
		return "memory://"
	}
	return "(unknown broker)"
}

// wantSet is the set of channels that should be listened to, kept by
// Listen/Unlisten callers and read by the goroutine that owns the connection.
type wantSet struct {
	mu    sync.Mutex
	want  map[string]chan struct{} // channel -> closed once active
	dirty bool
	wake  chan struct{}
}

func newWantSet() *wantSet {
	return &wantSet{want: make(map[string]chan struct{}), wake: make(chan struct{}, 1)}
}

func (w *wantSet) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *wantSet) listen(ch string, down bool) <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	ready, ok := w.want[ch]
	if ok {
		return ready
	}
	ready = make(chan struct{})
	if down {
		// Nobody should wait for a connection that is down.
		close(ready)
	}
	w.want[ch] = ready
	w.dirty = true
	w.signal()
	return ready
}

func (w *wantSet) unlisten(ch string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if ready, ok := w.want[ch]; ok {
		// Whoever still waits for it waits for nothing now.
		closeOnce(ready)
		delete(w.want, ch)
		w.dirty = true
		w.signal()
	}
}

// diff returns what to listen to and what to stop listening to, given what
// the connection listens to now. ok is false when nothing changed.
func (w *wantSet) diff(have map[string]bool) (add, remove []string, ok bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.dirty {
		return nil, nil, false
	}
	w.dirty = false
	for ch, ready := range w.want {
		if have[ch] {
			// Unlistened and listened again since the last diff: the
			// connection never stopped listening, so it is ready now.
			closeOnce(ready)
		} else {
			add = append(add, ch)
		}
	}
	for ch := range have {
		if _, ok := w.want[ch]; !ok {
			remove = append(remove, ch)
		}
	}
	return add, remove, true
}

// markActive closes the ready channel of ch.
func (w *wantSet) markActive(ch string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if ready, ok := w.want[ch]; ok {
		closeOnce(ready)
	}
}

// releaseAll closes every ready channel (the broker is down and waiting
// helps nobody) and marks the set dirty so a new connection listens again.
func (w *wantSet) releaseAll() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, ready := range w.want {
		closeOnce(ready)
	}
	w.dirty = true
}

func (w *wantSet) channels() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]string, 0, len(w.want))
	for ch := range w.want {
		out = append(out, ch)
	}
	return out
}

func closeOnce(c chan struct{}) {
	select {
	case <-c:
	default:
		close(c)
	}
}

// backoff is capped exponential backoff with full jitter.
type backoff struct {
	min, max time.Duration
	next     time.Duration
}

func (b *backoff) reset() { b.next = 0 }

func (b *backoff) delay() time.Duration {
	if b.next == 0 {
		b.next = b.min
	}
	d := b.next/2 + rand.N(b.next/2+1)
	b.next = min(b.next*2, b.max)
	return d
}

// sleep waits d or until ctx ends; it reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// core is what the Postgres and Redis brokers share: the channels to
// listen to, the connection's outage record and backoff, and the goroutine
// that owns the connection, which Start launches and Close cancels and
// waits for (a broker never started has nothing to wait for).
type core struct {
	logger *zap.Logger
	want   *wantSet
	outage outage
	bo     backoff

	ctx     context.Context
	cancel  context.CancelFunc
	done    chan struct{}
	started atomic.Bool
}

func (c *core) init(logger *zap.Logger) {
	c.logger = logger
	c.want = newWantSet()
	c.outage = outage{logger: logger}
	c.bo = backoff{min: 100 * time.Millisecond, max: 10 * time.Second}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.done = make(chan struct{})
}

func (c *core) launch(run func()) {
	c.started.Store(true)
	go func() {
		defer close(c.done)
		run()
	}()
}

func (c *core) stop() {
	c.cancel()
	if c.started.Load() {
		<-c.done
	}
}

func (c *core) Listen(ch string) <-chan struct{} { return c.want.listen(ch, c.outage.knownDown()) }

func (c *core) Unlisten(ch string) { c.want.unlisten(ch) }

func (c *core) Connected() bool { return c.outage.isUp() }

func (c *core) State() State { return c.outage.state() }

// outage logs a connection's loss once and its recovery with its length.
type outage struct {
	logger     *zap.Logger
	mu         sync.Mutex
	since      time.Time // last change; zero before the first attempt
	up         bool
	reconnects int
}

// connected records and logs that the connection is up, and reports
// whether it was lost before (a reconnect, not the first connection).
func (o *outage) connected() (wasDown bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.up {
		return false
	}
	o.up = true
	lost := o.since
	o.since = time.Now()
	if lost.IsZero() {
		o.logger.Info("broker connected")
		return false
	}
	o.reconnects++
	o.logger.Warn("broker connection restored", zap.Duration("outage", o.since.Sub(lost)))
	return true
}

func (o *outage) state() State {
	o.mu.Lock()
	defer o.mu.Unlock()
	return State{Connected: o.up, Since: o.since, Reconnects: o.reconnects}
}

func (o *outage) lost(err error) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.up && !o.since.IsZero() {
		return false
	}
	o.up = false
	o.since = time.Now()
	o.logger.Warn("broker connection lost; reconnecting", zap.Error(err))
	return true
}

// knownDown reports whether the connection was lost or failed to open,
// as opposed to up or still opening for the first time.
func (o *outage) knownDown() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return !o.up && !o.since.IsZero()
}

func (o *outage) isUp() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.up
}
