package broker

import (
	"context"
	"errors"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// shard is the pub/sub connection to one primary of a Redis Cluster,
// SSUBSCRIBEd to the names placed on it. As the single Redis broker's
// connection, its life is a run of generations, each a reader and a
// goroutine that issues SSUBSCRIBE and SUNSUBSCRIBE; a failed connection
// is closed and replaced, and the cluster broker told, since a failover
// may be under way.
type shard struct {
	addr   string
	c      *clusterBroker
	client *redis.Client // this primary's commands; the pub/sub connection is its own
	logger *zap.Logger
	outage outage
	bo     backoff

	mu sync.Mutex
	// want is the names placed here, each with whether its events of a
	// while may have been missed (a reconnect, a move): once subscribed it
	// is backfilled, or reset.
	want map[string]bool
	// have is the names SSUBSCRIBE was sent for on this connection, and
	// whether Redis confirmed it.
	have    map[string]bool
	lastErr error
	wake    chan struct{}

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
}

func newShard(c *clusterBroker, addr string, client *redis.Client) *shard {
	logger := c.logger.With(zap.String("shard", addr))
	s := &shard{
		addr: addr, c: c, client: client, logger: logger,
		outage: outage{logger: logger},
		bo:     backoff{min: 100 * time.Millisecond, max: 10 * time.Second},
		want:   map[string]bool{}, have: map[string]bool{},
		wake: make(chan struct{}, 1), done: make(chan struct{}),
	}
	s.ctx, s.cancel = context.WithCancel(c.ctx)
	return s
}

func (s *shard) start() {
	go func() {
		defer close(s.done)
		s.run()
	}()
}

func (s *shard) stop() {
	s.cancel()
	<-s.done
}

// add places name here.
func (s *shard) add(name string, lost bool) {
	s.mu.Lock()
	s.want[name] = lost || s.want[name]
	s.mu.Unlock()
	s.signal()
}

// drop takes name off this shard.
func (s *shard) drop(name string) {
	s.mu.Lock()
	delete(s.want, name)
	s.mu.Unlock()
	s.signal()
}

func (s *shard) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// holds reports whether any name is placed here.
func (s *shard) holds() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.want) > 0
}

func (s *shard) lastError() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lastErr == nil {
		return errors.New("not connected yet")
	}
	return s.lastErr
}

// state describes the shard for stats.
func (s *shard) state() ShardState {
	st := s.outage.state()
	s.mu.Lock()
	n := len(s.want)
	s.mu.Unlock()
	return ShardState{Addr: s.addr, Connected: st.Connected, Since: st.Since, Reconnects: st.Reconnects, Subscriptions: n}
}

func (s *shard) run() {
	for s.ctx.Err() == nil {
		err := s.generation()
		if s.ctx.Err() != nil {
			return
		}
		s.outage.lost(err)
		s.mu.Lock()
		s.lastErr = err
		names := make([]string, 0, len(s.want))
		for name := range s.want {
			names = append(names, name)
		}
		s.mu.Unlock()
		for _, name := range names {
			s.c.release(name)
		}
		s.c.changed(true)
		if !sleep(s.ctx, s.bo.delay()) {
			return
		}
	}
}

// generation serves one connection until it fails.
func (s *shard) generation() error {
	ps := s.client.SSubscribe(s.ctx)
	defer ps.Close()
	// A blocked read does not watch the context; closing the connection
	// ends it when the shard is stopped.
	stopClose := context.AfterFunc(s.ctx, func() { _ = ps.Close() })
	defer stopClose()
	if err := ps.Ping(s.ctx); err != nil {
		return err
	}
	if _, err := ps.ReceiveTimeout(s.ctx, 5*time.Second); err != nil {
		return err
	}
	if s.c.log != nil {
		// On every primary, a replica promoted by a failover too.
		if err := s.client.FunctionLoadReplace(s.ctx, RedisFunction).Err(); err != nil {
			s.logger.Error("history: publishing through the log will fail on this shard", zap.Error(err))
		}
	}
	s.bo.reset()
	wasDown := s.outage.connected()
	s.mu.Lock()
	s.have = map[string]bool{}
	if wasDown {
		for name := range s.want {
			s.want[name] = true
		}
	}
	s.mu.Unlock()
	s.c.changed(false)

	genCtx, stop := context.WithCancel(s.ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.command(genCtx, ps)
	}()
	defer func() {
		stop()
		wg.Wait()
	}()
	return s.read(ps)
}

// command issues SSUBSCRIBE and SUNSUBSCRIBE as the names placed here
// change, one command per slot: a cluster refuses names of several slots
// in one.
func (s *shard) command(ctx context.Context, ps *redis.PubSub) {
	for {
		add, remove := s.diff()
		if len(add) > 0 {
			if s.c.log != nil {
				var channels []string
				for _, name := range add {
					if ch, isLog := s.c.channelOf(name); isLog {
						channels = append(channels, ch)
					}
				}
				if err := s.c.log.seed(ctx, channels); err != nil {
					_ = ps.Close() // the reader sees the broken connection
					return
				}
			}
			for _, names := range bySlot(add) {
				if err := ps.SSubscribe(ctx, names...); err != nil {
					return // the reader sees the broken connection
				}
			}
		}
		for _, names := range bySlot(remove) {
			if err := ps.SUnsubscribe(ctx, names...); err != nil {
				return
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		}
	}
}

// diff takes what to subscribe and unsubscribe, and counts it done.
func (s *shard) diff() (add, remove []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for name := range s.want {
		if _, ok := s.have[name]; !ok {
			add = append(add, name)
			s.have[name] = false
		}
	}
	for name := range s.have {
		if _, ok := s.want[name]; !ok {
			remove = append(remove, name)
			delete(s.have, name)
		}
	}
	return add, remove
}

// bySlot groups names by slot, and in each group puts a channel's own
// name before its log's, so that the channel is subscribed by the time
// the log's confirmation makes it ready.
func bySlot(names []string) [][]string {
	groups := map[int][]string{}
	for _, name := range names {
		slot := keySlot(name)
		groups[slot] = append(groups[slot], name)
	}
	out := make([][]string, 0, len(groups))
	for _, g := range groups {
		slices.SortFunc(g, func(a, b string) int {
			_, aLog := logChannel(a)
			_, bLog := logChannel(b)
			switch {
			case aLog == bLog:
				return strings.Compare(a, b)
			case bLog:
				return -1
			default:
				return 1
			}
		})
		out = append(out, g)
	}
	return out
}

func (s *shard) read(ps *redis.PubSub) error {
	pinged := false
	for {
		msg, err := ps.ReceiveTimeout(s.ctx, redisPingEvery)
		if err != nil {
			var rerr redis.Error
			if errors.As(err, &rerr) {
				// An error reply to SSUBSCRIBE or SUNSUBSCRIBE; the
				// connection is fine.
				s.refused(rerr.Error())
				continue
			}
			var nerr net.Error
			if !errors.As(err, &nerr) || !nerr.Timeout() || pinged {
				return err
			}
			// Quiet for a while: a ping tells a dead connection from an idle one.
			if err := ps.Ping(s.ctx); err != nil {
				return err
			}
			pinged = true
			continue
		}
		switch m := msg.(type) {
		case *redis.Message:
			s.c.deliver(m.Channel, m.Payload)
		case *redis.Subscription:
			switch m.Kind {
			case "ssubscribe":
				if err := s.subscribed(m.Channel); err != nil {
					return err
				}
			case "sunsubscribe":
				s.unsubscribed(m.Channel)
			}
		case *redis.Pong:
			pinged = false
		}
	}
}

// subscribed notes Redis's confirmation of name.
func (s *shard) subscribed(name string) error {
	s.mu.Lock()
	lost, placed := s.want[name]
	if placed {
		s.want[name] = false
		if _, sent := s.have[name]; sent {
			s.have[name] = true
		}
	}
	s.mu.Unlock()
	if !placed {
		return nil // taken off meanwhile
	}
	return s.c.subscribed(s.ctx, name, lost)
}

// unsubscribed notes a SUNSUBSCRIBE. For a name still placed here and
// confirmed, Redis sent it unasked: the name's slot migrated to another
// primary, and the cluster broker places it again.
func (s *shard) unsubscribed(name string) {
	s.mu.Lock()
	_, placed := s.want[name]
	confirmed := s.have[name]
	if placed && confirmed {
		delete(s.want, name)
		delete(s.have, name)
	}
	s.mu.Unlock()
	if placed && confirmed {
		s.logger.Debug("redis cluster moved a channel's slot away", zap.String("name", name))
		s.c.bounce(s, name)
	}
}

// refused handles an error reply. MOVED names the slot that is served
// elsewhere now: its names go back to the cluster broker. Any other
// refusal (CLUSTERDOWN while a failover is under way, TRYAGAIN, an ACL's
// NOPERM) answers names not confirmed yet, which go back too, to be
// tried again once the slot map is read.
func (s *shard) refused(reply string) {
	slot := -1
	if rest, ok := strings.CutPrefix(reply, "MOVED "); ok {
		if n, err := strconv.Atoi(strings.SplitN(rest, " ", 2)[0]); err == nil {
			slot = n
		}
		s.logger.Debug("redis cluster answered MOVED: the slot map has changed", zap.String("reply", reply))
	} else {
		s.logger.Warn("redis cluster refused a subscription; trying again", zap.String("reply", reply))
	}
	var names []string
	s.mu.Lock()
	for name, confirmed := range s.have {
		if _, placed := s.want[name]; !placed {
			continue
		}
		if (slot >= 0 && keySlot(name) == slot) || (slot < 0 && !confirmed) {
			names = append(names, name)
			delete(s.want, name)
			delete(s.have, name)
		}
	}
	s.mu.Unlock()
	if len(names) > 0 {
		s.c.bounce(s, names...)
	}
}
