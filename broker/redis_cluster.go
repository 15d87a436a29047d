package broker

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// A Redis Cluster (redis-cluster://, rediss-cluster://) relays sharded
// pub/sub (SSUBSCRIBE, SPUBLISH; Redis 7): a channel lives on the shard
// that owns its slot, so capacity grows with shards, where a classic
// PUBLISH is copied to every node. The broker keeps one pub/sub connection
// per shard primary (a shard, redis_shard.go), SSUBSCRIBEd to the wanted
// channels whose slots that primary serves, and one goroutine (run) that
// reads the slot map and places channels on shards. When the map changes
// (a primary fails and its replica takes over, a slot migrates and Redis
// pushes SUNSUBSCRIBE, a shard answers MOVED) the channels move to their
// new owner, where, once subscribed, they are backfilled from the log with
// history, or get a reset without. go-redis's ClusterClient carries the
// commands (publishes and the log's reads), routing each by its key; its
// own SSubscribe is not used: it puts every channel on the connection of
// the first one's node.

const (
	clusterSlots = 16384
	// clusterRefreshEvery is how often the slot map is read when nothing
	// prompts it: a manual failover or a new primary tells no subscriber.
	clusterRefreshEvery = 5 * time.Second
)

// clusterBroker is the Redis Cluster broker.
type clusterBroker struct {
	core
	client *redis.ClusterClient
	opt    *redis.ClusterOptions // the seeds, and how to reach any node
	log    *clusterLog           // nil without history
	sink   Sink

	// Owned by run.
	listened map[string]bool   // hub channels placed: the want set's have
	placed   map[string]*shard // pub/sub channel name -> the shard it is on
	homeless map[string]bool   // names waiting for a shard -> lost
	disco    backoff           // between reads of the slot map while something is amiss

	mu       sync.Mutex
	topo     *topology                // nil until the slot map is first read
	discoErr error                    // the last read of the slot map failed
	shards   map[string]*shard        // by primary address
	nodes    map[string]*redis.Client // a command connection per node address
	bounced  []bounce                 // names shards gave back
	stale    bool                     // read the slot map again
	kick     chan struct{}
}

// bounce is a name a shard no longer serves: its slot moved.
type bounce struct {
	name string
	from *shard
}

func newRedisCluster(rawURL string, logger *zap.Logger, history History) (*clusterBroker, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		// url's error quotes the URL, password and all.
		return nil, fmt.Errorf("redis cluster broker URL %s is not valid: percent-encode a password with ?, #, @ or / in it", Label(rawURL))
	}
	// go-redis reads the cluster form of its own URLs: redis:// or
	// rediss:// with more seeds as addr= values.
	u.Scheme = strings.TrimSuffix(strings.ToLower(u.Scheme), "-cluster")
	opt, err := redis.ParseClusterURL(u.String())
	if err != nil {
		return nil, fmt.Errorf("redis cluster broker URL %s is not valid", Label(rawURL))
	}
	opt.ClientName = "caddy-sse-relay"
	opt.Protocol = 2
	opt.PoolSize = 4
	if opt.DialTimeout == 0 {
		// Reading the slot map tries node after node: a dead one must
		// not hold that up for long.
		opt.DialTimeout = 2 * time.Second
	}
	c := &clusterBroker{
		client:   redis.NewClusterClient(opt),
		opt:      opt,
		listened: map[string]bool{},
		placed:   map[string]*shard{},
		homeless: map[string]bool{},
		disco:    backoff{min: 100 * time.Millisecond, max: time.Second},
		shards:   map[string]*shard{},
		nodes:    map[string]*redis.Client{},
		stale:    true,
		kick:     make(chan struct{}, 1),
	}
	c.core.init(logger)
	if history.On() {
		c.log = &clusterLog{
			redisLog: &redisLog{history: history, client: c.client, logger: logger, want: c.want, last: map[string]Position{}},
			cluster:  c.client,
			slotUp:   c.slotUp,
		}
	}
	return c, nil
}

// Log is the per-channel streams' log, or nil without history.
func (c *clusterBroker) Log() Log {
	if c.log == nil {
		return nil
	}
	return c.log
}

func (c *clusterBroker) Limits() Limits {
	return Limits{MaxPayload: RedisMaxPayload, MaxChannel: RedisMaxChannel}
}

func (c *clusterBroker) Start(sink Sink) {
	c.sink = sink
	c.launch(c.run)
}

func (c *clusterBroker) Close() error {
	c.stop()
	c.mu.Lock()
	for addr, n := range c.nodes {
		_ = n.Close()
		delete(c.nodes, addr)
	}
	c.mu.Unlock()
	return c.client.Close()
}

// Listen returns a channel that closes once the channel is subscribed on
// its shard, or at once while no node can tell the slot map. A channel
// whose shard is down is let go by run.
func (c *clusterBroker) Listen(ch string) <-chan struct{} {
	c.mu.Lock()
	down := c.discoErr != nil
	c.mu.Unlock()
	return c.want.listen(ch, down)
}

// State is the cluster's: connected while the slot map is known and every
// shard that holds a listened channel is connected; and each shard's.
func (c *clusterBroker) State() State {
	st := c.outage.state()
	c.mu.Lock()
	for _, s := range c.shards {
		st.Shards = append(st.Shards, s.state())
	}
	c.mu.Unlock()
	slices.SortFunc(st.Shards, func(a, b ShardState) int { return strings.Compare(a.Addr, b.Addr) })
	return st
}

// Publish sends payload on channels with SPUBLISH (through the log's
// function with history). The channels of one slot go in one MULTI/EXEC
// on its primary, all or none; a cluster runs no transaction across
// slots, so channels of several slots are published slot by slot, and a
// failure stops the rest. Channel names with a common hash tag
// ({tenant7}.orders, {tenant7}.invoices) share a slot.
func (c *clusterBroker) Publish(ctx context.Context, channels []string, payload []byte) error {
	groups := slotGroups(channels, c.log != nil)
	for _, g := range groups {
		if !c.slotUp(g.slot) {
			return ErrUnavailable
		}
	}
	for _, g := range groups {
		var err error
		switch {
		case c.log != nil:
			err = c.log.publish(ctx, g.channels, payload)
		case len(g.channels) == 1:
			err = c.client.SPublish(ctx, g.channels[0], payload).Err()
		default:
			_, err = c.client.TxPipelined(ctx, func(tx redis.Pipeliner) error {
				for _, ch := range g.channels {
					tx.SPublish(ctx, ch, payload)
				}
				return nil
			})
		}
		if err != nil {
			return redisPublishError(err)
		}
	}
	return nil
}

// slotGroup is channels whose pub/sub names share slot.
type slotGroup struct {
	slot     int
	channels []string
}

// slotGroups groups channels by the slot they are published in: their own,
// or with history their stream's.
func slotGroups(channels []string, history bool) []slotGroup {
	var out []slotGroup
	for _, ch := range channels {
		name := ch
		if history {
			name = RedisLogKey(ch)
		}
		slot := keySlot(name)
		i := slices.IndexFunc(out, func(g slotGroup) bool { return g.slot == slot })
		if i < 0 {
			out = append(out, slotGroup{slot: slot})
			i = len(out) - 1
		}
		out[i].channels = append(out[i].channels, ch)
	}
	return out
}

// slotUp reports whether slot's primary is known and connected.
func (c *clusterBroker) slotUp(slot int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.topo == nil {
		return false
	}
	s := c.shards[c.topo.ownerOf(slot)]
	return s != nil && s.outage.isUp()
}

// names are the pub/sub channels of a hub channel: itself, and with
// history its stream's announcements too.
func (c *clusterBroker) names(ch string) []string {
	if c.log == nil {
		return []string{ch}
	}
	return []string{ch, RedisLogKey(ch)}
}

// channelOf is the hub channel of a pub/sub name, and whether the name
// carries its log's announcements.
func (c *clusterBroker) channelOf(name string) (string, bool) {
	if c.log != nil {
		if ch, ok := logChannel(name); ok {
			return ch, true
		}
	}
	return name, false
}

// deliver hands over what a shard's reader got on name.
func (c *clusterBroker) deliver(name, payload string) {
	if ch, isLog := c.channelOf(name); isLog {
		c.log.announced(ch, payload, c.sink)
		return
	}
	c.sink.Deliver(name, []byte(payload))
}

// subscribed is told by a shard's reader that name is subscribed; lost
// when events on it may have been missed (a reconnect, a move): with
// history its channel is backfilled from the last position handed over,
// else it gets a reset. A channel is ready once subscribed: with history,
// once its log's announcements are, and its own name carries plain
// publishes, which are live only.
func (c *clusterBroker) subscribed(ctx context.Context, name string, lost bool) error {
	ch, isLog := c.channelOf(name)
	switch {
	case isLog:
		if lost {
			if err := c.log.backfill(ctx, []string{ch}, c.sink); err != nil {
				return err
			}
		}
		c.want.markActive(ch)
	case c.log == nil:
		c.want.markActive(ch)
		if lost {
			c.sink.Reset([]string{ch}, "broker-reconnect")
		}
	}
	return nil
}

// release lets go whoever waits for name's channel to be listened to: its
// shard is down, and waiting helps nobody.
func (c *clusterBroker) release(name string) {
	ch, _ := c.channelOf(name)
	c.want.markActive(ch)
}

// changed is a shard's word that its connection came or went (stale: read
// the slot map again, a failover may be under way).
func (c *clusterBroker) changed(stale bool) {
	c.mu.Lock()
	c.stale = c.stale || stale
	c.mu.Unlock()
	c.signal()
}

// bounce is a shard's word that names are no longer on it: Redis pushed
// SUNSUBSCRIBE (their slot migrated) or answered MOVED. run places them
// again after reading the slot map.
func (c *clusterBroker) bounce(from *shard, names ...string) {
	c.mu.Lock()
	for _, n := range names {
		c.bounced = append(c.bounced, bounce{name: n, from: from})
	}
	c.mu.Unlock()
	c.signal()
}

func (c *clusterBroker) signal() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// run owns the slot map and the placing of channels on shards.
func (c *clusterBroker) run() {
	defer c.stopShards()
	refresh := time.NewTicker(clusterRefreshEvery)
	defer refresh.Stop()
	var retry <-chan time.Time
	for {
		c.mu.Lock()
		read := c.stale
		c.stale = false
		c.mu.Unlock()
		moved := false
		if read {
			topo, err := c.discover()
			c.mu.Lock()
			c.discoErr = err
			c.mu.Unlock()
			if err != nil {
				c.outage.lost(err)
				c.want.releaseAll()
			} else {
				moved = c.adopt(topo)
			}
		}
		c.place(read, moved)
		if ok := c.report(); ok && len(c.homeless) == 0 {
			c.disco.reset()
			retry = nil
		} else if retry == nil {
			retry = time.After(c.disco.delay())
		}
		select {
		case <-c.ctx.Done():
			return
		case <-c.want.wake:
		case <-c.kick:
		case <-refresh.C:
			c.changed(true)
		case <-retry:
			retry = nil
			c.changed(true)
		}
	}
}

// adopt makes topo the slot map: a shard for every primary, and the
// go-redis client told when the map changed. It reports whether it did.
func (c *clusterBroker) adopt(topo *topology) bool {
	c.mu.Lock()
	old := c.topo
	c.topo = topo
	for _, addr := range topo.primaries {
		if c.shards[addr] == nil {
			s := newShard(c, addr, c.nodeLocked(addr))
			c.shards[addr] = s
			s.start()
		}
	}
	c.mu.Unlock()
	if old != nil && old.equal(topo) {
		return false
	}
	if old != nil {
		c.client.ReloadState(c.ctx)
		c.logger.Info("redis cluster slot map changed", zap.Strings("primaries", topo.primaries))
	}
	return true
}

// place brings the shards' channels in line with the wanted set: new
// channels on the shard of their slot, channels no longer wanted off
// theirs, and, after the slot map was read (read) or changed (moved),
// every channel whose slot moved, or that a shard gave back, on its
// owner now.
func (c *clusterBroker) place(read, moved bool) {
	add, remove, _ := c.want.diff(c.listened)
	for _, ch := range remove {
		delete(c.listened, ch)
		for _, name := range c.names(ch) {
			if s := c.placed[name]; s != nil {
				s.drop(name)
			}
			delete(c.placed, name)
			delete(c.homeless, name)
		}
		if c.log != nil {
			c.log.forget([]string{ch})
		}
	}
	c.mu.Lock()
	lost := c.discoErr != nil // listened while the cluster could not be reached
	c.mu.Unlock()
	for _, ch := range add {
		c.listened[ch] = true
		for _, name := range c.names(ch) {
			c.put(name, lost)
		}
	}
	c.mu.Lock()
	bounced := c.bounced
	c.bounced = nil
	c.mu.Unlock()
	for _, b := range bounced {
		if c.placed[b.name] == b.from {
			delete(c.placed, b.name)
			c.homeless[b.name] = true
		}
	}
	if moved {
		for name, s := range c.placed {
			if c.shardFor(name) != s {
				s.drop(name)
				delete(c.placed, name)
				c.homeless[name] = true
			}
		}
		c.retireShards()
	}
	if read || moved {
		for name, lost := range c.homeless {
			c.put(name, lost)
		}
	}
}

// put places name on the shard of its slot, or keeps it homeless. Placed
// on a shard that is down, it is lost: what is published meanwhile does
// not reach it.
func (c *clusterBroker) put(name string, lost bool) {
	s := c.shardFor(name)
	if s == nil {
		c.homeless[name] = lost || c.homeless[name]
		c.release(name)
		return
	}
	delete(c.homeless, name)
	c.placed[name] = s
	s.add(name, lost || s.outage.knownDown())
	if !s.outage.isUp() {
		c.release(name)
	}
}

// shardFor is the shard of name's slot, or nil.
func (c *clusterBroker) shardFor(name string) *shard {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.topo == nil {
		return nil
	}
	return c.shards[c.topo.ownerOf(keySlot(name))]
}

// retireShards stops the shards of nodes that are no longer primaries
// (their channels have moved), and forgets nodes the slot map no longer
// names.
func (c *clusterBroker) retireShards() {
	c.mu.Lock()
	var gone []*shard
	for addr, s := range c.shards {
		if !slices.Contains(c.topo.primaries, addr) {
			gone = append(gone, s)
			delete(c.shards, addr)
		}
	}
	c.mu.Unlock()
	for _, s := range gone {
		s.stop()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for addr, n := range c.nodes {
		if c.shards[addr] == nil && !slices.Contains(c.topo.nodes, addr) && !slices.Contains(c.opt.Addrs, addr) {
			_ = n.Close()
			delete(c.nodes, addr)
		}
	}
}

func (c *clusterBroker) stopShards() {
	c.mu.Lock()
	shards := c.shards
	c.shards = map[string]*shard{}
	c.mu.Unlock()
	for _, s := range shards {
		s.stop()
	}
}

// report records whether the cluster is usable: the slot map known, every
// listened channel on a shard, every shard holding one connected, and at
// least one shard connected. Shards still opening their first connection
// are not an outage, nor connected yet.
func (c *clusterBroker) report() bool {
	opening, err := c.health()
	switch {
	case err != nil:
		c.outage.lost(err)
		return false
	case opening:
		return false
	}
	c.outage.connected()
	return true
}

func (c *clusterBroker) health() (opening bool, err error) {
	c.mu.Lock()
	if c.discoErr != nil {
		c.mu.Unlock()
		return false, c.discoErr
	}
	if c.topo == nil {
		c.mu.Unlock()
		return true, nil
	}
	anyUp, allDown := false, true
	for _, s := range c.shards {
		up, down := s.outage.isUp(), s.outage.knownDown()
		anyUp = anyUp || up
		allDown = allDown && down
		// A shard still opening its first connection holds back the
		// word "connected" (a publisher waiting for it publishes on any
		// shard next), but is no outage.
		opening = opening || (!up && !down)
		if down && s.holds() && err == nil {
			err = fmt.Errorf("shard %s: %w", s.addr, s.lastError())
		}
	}
	c.mu.Unlock()
	if err == nil && !anyUp && allDown {
		err = errors.New("no shard connected")
	}
	if err == nil && c.homelessForGood() {
		err = errors.New("a listened channel's slot has no primary")
	}
	return opening || !anyUp, err
}

// homelessForGood reports whether a name waits for a shard although the
// slot map was just read: its slot has no primary.
func (c *clusterBroker) homelessForGood() bool {
	for name := range c.homeless {
		if c.shardFor(name) == nil {
			return true
		}
	}
	return false
}

// discover reads the slot map from the first node that answers: the
// connected primaries first, then every other node the map named, then
// the seeds of the URL.
func (c *clusterBroker) discover() (*topology, error) {
	var errs []error
	for _, addr := range c.candidates() {
		c.mu.Lock()
		n := c.nodeLocked(addr)
		c.mu.Unlock()
		ctx, cancel := context.WithTimeout(c.ctx, 2*time.Second)
		slots, err := n.ClusterSlots(ctx).Result()
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", addr, err))
			continue
		}
		if len(slots) == 0 {
			errs = append(errs, fmt.Errorf("%s: serves no slot yet", addr))
			continue
		}
		return newTopology(slots), nil
	}
	return nil, fmt.Errorf("reading the cluster's slot map (CLUSTER SLOTS): %w", errors.Join(errs...))
}

func (c *clusterBroker) candidates() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var up, rest []string
	for addr, s := range c.shards {
		if s.outage.isUp() {
			up = append(up, addr)
		}
	}
	slices.Sort(up)
	if c.topo != nil {
		rest = append(rest, c.topo.nodes...)
	}
	rest = append(rest, c.opt.Addrs...)
	out := up
	for _, addr := range rest {
		if !slices.Contains(out, addr) {
			out = append(out, addr)
		}
	}
	return out
}

// nodeLocked is the command connection pool of the node at addr, made on
// first use; c.mu is held.
func (c *clusterBroker) nodeLocked(addr string) *redis.Client {
	if n := c.nodes[addr]; n != nil {
		return n
	}
	o := c.opt
	n := redis.NewClient(&redis.Options{
		Addr: addr, ClientName: o.ClientName, Protocol: 2,
		Username: o.Username, Password: o.Password,
		CredentialsProvider: o.CredentialsProvider, CredentialsProviderContext: o.CredentialsProviderContext,
		Dialer: o.Dialer, OnConnect: o.OnConnect, TLSConfig: o.TLSConfig,
		DialTimeout: o.DialTimeout, ReadTimeout: o.ReadTimeout, WriteTimeout: o.WriteTimeout,
		// A dead node is told at once, not after retries: the next
		// node may answer.
		MaxRetries: -1,
		PoolSize:   2,
	})
	c.nodes[addr] = n
	return n
}

// topology is a slot map: the primary serving each slot.
type topology struct {
	owner     [clusterSlots]int16 // index in primaries; -1: no primary
	primaries []string            // sorted
	nodes     []string            // every node named, primaries first
}

func newTopology(slots []redis.ClusterSlot) *topology {
	t := &topology{}
	for i := range t.owner {
		t.owner[i] = -1
	}
	var replicas []string
	for _, s := range slots {
		if len(s.Nodes) == 0 {
			continue
		}
		if !slices.Contains(t.primaries, s.Nodes[0].Addr) {
			t.primaries = append(t.primaries, s.Nodes[0].Addr)
		}
		for _, n := range s.Nodes[1:] {
			if !slices.Contains(replicas, n.Addr) {
				replicas = append(replicas, n.Addr)
			}
		}
	}
	slices.Sort(t.primaries)
	slices.Sort(replicas)
	for _, s := range slots {
		if len(s.Nodes) == 0 {
			continue
		}
		i := int16(slices.Index(t.primaries, s.Nodes[0].Addr))
		for slot := max(s.Start, 0); slot <= min(s.End, clusterSlots-1); slot++ {
			t.owner[slot] = i
		}
	}
	t.nodes = append(slices.Clone(t.primaries), replicas...)
	return t
}

// ownerOf is the address of slot's primary, or "".
func (t *topology) ownerOf(slot int) string {
	if i := t.owner[slot]; i >= 0 {
		return t.primaries[i]
	}
	return ""
}

func (t *topology) equal(u *topology) bool {
	return t.owner == u.owner && slices.Equal(t.primaries, u.primaries)
}

// keySlot is the cluster slot of a key or shard channel: the CRC16
// (XMODEM) of its hash tag, the part between the first { and the next }
// when that is not empty, else of all of it, modulo 16384.
func keySlot(key string) int {
	if open := strings.IndexByte(key, '{'); open >= 0 {
		if n := strings.IndexByte(key[open+1:], '}'); n > 0 {
			key = key[open+1 : open+1+n]
		}
	}
	var crc uint16
	for i := 0; i < len(key); i++ {
		crc ^= uint16(key[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return int(crc) % clusterSlots
}
