package testsrv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// ClusterNodeTimeout is the test cluster's cluster-node-timeout: a primary
// that stops answering is failed over to its replica in about three times
// this.
const ClusterNodeTimeout = 500 * time.Millisecond

// RedisCluster is a private Redis Cluster: primaries with their replicas,
// each node a redis-server in cluster mode on free ports, put together
// with `redis-cli --cluster create` as an operator would. Nodes can be
// killed and started again; a killed primary's replica takes over.
type RedisCluster struct {
	Nodes []*Redis
}

// StartRedisCluster starts primaries×(1+replicas) nodes and creates the
// cluster, and returns once every node serves every slot.
func StartRedisCluster(primaries, replicas int) (*RedisCluster, error) {
	for _, bin := range []string{"redis-server", "redis-cli"} {
		if _, err := exec.LookPath(bin); err != nil {
			return nil, fmt.Errorf("%s not found: install the redis-server and redis-tools packages (make test does)", bin)
		}
	}
	c := &RedisCluster{}
	for range primaries * (1 + replicas) {
		dir, err := os.MkdirTemp("", "sserelay-cluster-")
		if err != nil {
			c.Stop()
			return nil, err
		}
		port, err1 := FreePort()
		bus, err2 := FreePort()
		if err := errors.Join(err1, err2); err != nil {
			c.Stop()
			return nil, err
		}
		r := &Redis{Port: port, dir: dir, fsync: "always", args: []string{
			"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-port", strconv.Itoa(bus),
			"--cluster-node-timeout", strconv.Itoa(int(ClusterNodeTimeout.Milliseconds())),
			// A replica takes over however long it was cut off from its
			// primary: the tests kill primaries at will.
			"--cluster-replica-validity-factor", "0",
			// Replicas sync at once, not after the 5 s a diskless sync waits
			// for more replicas by default.
			"--repl-diskless-sync-delay", "0",
		}}
		c.Nodes = append(c.Nodes, r)
		if err := r.Start(); err != nil {
			c.Stop()
			return nil, err
		}
	}
	args := []string{"--cluster", "create"}
	args = append(args, c.Addrs()...)
	args = append(args, "--cluster-replicas", strconv.Itoa(replicas), "--cluster-yes")
	if out, err := exec.Command("redis-cli", args...).CombinedOutput(); err != nil {
		c.Stop()
		return nil, fmt.Errorf("redis-cli --cluster create: %v\n%s", err, out)
	}
	if err := c.WaitHealthy(30 * time.Second); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

// Addrs are every node's host:port.
func (c *RedisCluster) Addrs() []string {
	out := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		out[i] = n.Addr()
	}
	return out
}

// Addr is the node's host:port.
func (r *Redis) Addr() string { return "127.0.0.1:" + strconv.Itoa(r.Port) }

// URL is the relay's broker URL for the cluster: the first node, and the
// others as more seeds.
func (c *RedisCluster) URL() string {
	addrs := c.Addrs()
	return "redis-cluster://" + addrs[0] + "?addr=" + strings.Join(addrs[1:], "&addr=")
}

// Client is a go-redis cluster client on every node, for the tests'
// publishers and checks; the caller closes it.
func (c *RedisCluster) Client() *redis.ClusterClient {
	return redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
}

// Stop ends every node and removes its files.
func (c *RedisCluster) Stop() {
	for _, n := range c.Nodes {
		n.Stop()
	}
}

// Node is the node listening on addr, or nil.
func (c *RedisCluster) Node(addr string) *Redis {
	for _, n := range c.Nodes {
		if n.Addr() == addr {
			return n
		}
	}
	return nil
}

// nodeClient talks to one node alone.
func nodeClient(addr string) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: addr, DialTimeout: time.Second, ReadTimeout: 2 * time.Second, MaxRetries: -1})
}

// running are the nodes whose process is up.
func (c *RedisCluster) running() []*Redis {
	var out []*Redis
	for _, n := range c.Nodes {
		n.mu.Lock()
		up := n.cmd != nil
		n.mu.Unlock()
		if up {
			out = append(out, n)
		}
	}
	return out
}

// Slots is the slot map as a running node sees it: the primary serving
// each slot.
func (c *RedisCluster) Slots() (map[int]*Redis, error) {
	var errs []error
	for _, n := range c.running() {
		rc := nodeClient(n.Addr())
		slots, err := rc.ClusterSlots(context.Background()).Result()
		rc.Close()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out := map[int]*Redis{}
		for _, s := range slots {
			owner := c.Node(s.Nodes[0].Addr)
			for slot := s.Start; slot <= s.End; slot++ {
				out[slot] = owner
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("no node answered CLUSTER SLOTS: %w", errors.Join(errs...))
}

// Owner is the primary serving slot.
func (c *RedisCluster) Owner(slot int) (*Redis, error) {
	slots, err := c.Slots()
	if err != nil {
		return nil, err
	}
	if slots[slot] == nil {
		return nil, fmt.Errorf("slot %d has no primary", slot)
	}
	return slots[slot], nil
}

// Primaries are the nodes serving slots, in port order.
func (c *RedisCluster) Primaries() ([]*Redis, error) {
	slots, err := c.Slots()
	if err != nil {
		return nil, err
	}
	var out []*Redis
	for _, n := range slots {
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	slices.SortFunc(out, func(a, b *Redis) int { return a.Port - b.Port })
	return out, nil
}

// KeySlot is the slot of key, as the cluster computes it.
func (c *RedisCluster) KeySlot(key string) (int, error) {
	for _, n := range c.running() {
		rc := nodeClient(n.Addr())
		slot, err := rc.ClusterKeySlot(context.Background(), key).Result()
		rc.Close()
		if err == nil {
			return int(slot), nil
		}
	}
	return 0, errors.New("no node answered CLUSTER KEYSLOT")
}

// WaitHealthy waits until every running node says the cluster is ok,
// every running node agrees on who serves each slot, and each primary has
// as many replicas online as it had at the start.
func (c *RedisCluster) WaitHealthy(limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		err := c.healthy()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cluster not healthy within %v: %w", limit, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (c *RedisCluster) healthy() error {
	ctx := context.Background()
	var view string
	var primaries []string
	for _, n := range c.running() {
		rc := nodeClient(n.Addr())
		info, err := rc.ClusterInfo(ctx).Result()
		var slots []redis.ClusterSlot
		if err == nil {
			slots, err = rc.ClusterSlots(ctx).Result()
		}
		rc.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", n.Addr(), err)
		}
		if !strings.Contains(info, "cluster_state:ok") {
			return fmt.Errorf("%s: cluster_state not ok", n.Addr())
		}
		var owners []string
		primaries = primaries[:0]
		for _, s := range slots {
			owners = append(owners, fmt.Sprintf("%d-%d:%s", s.Start, s.End, s.Nodes[0].Addr))
			if !slices.Contains(primaries, s.Nodes[0].Addr) {
				primaries = append(primaries, s.Nodes[0].Addr)
			}
		}
		slices.Sort(owners)
		v := strings.Join(owners, ",")
		if view != "" && v != view {
			return errors.New("nodes disagree on the slot map")
		}
		view = v
	}
	if len(c.running()) < len(c.Nodes) || len(primaries) == 0 {
		return nil
	}
	// CLUSTER SLOTS may list a replica late: ask each primary.
	want := len(c.Nodes)/len(primaries) - 1
	for _, p := range primaries {
		rc := nodeClient(p)
		info, err := rc.Info(ctx, "replication").Result()
		rc.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		if strings.Count(info, ",state=online,") < want {
			return fmt.Errorf("%s: replicas not all online yet", p)
		}
	}
	return nil
}

// WaitOwner waits until a running node other than old serves slot, and
// returns it: the failover of a killed primary.
func (c *RedisCluster) WaitOwner(slot int, old *Redis, limit time.Duration) (*Redis, error) {
	deadline := time.Now().Add(limit)
	for {
		owner, err := c.Owner(slot)
		if err == nil && owner != old {
			return owner, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("slot %d still on %s after %v (%v)", slot, old.Addr(), limit, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ID is the node's cluster node id.
func (r *Redis) ID() (string, error) {
	rc := nodeClient(r.Addr())
	defer rc.Close()
	return rc.ClusterMyID(context.Background()).Result()
}

// Reshard moves slot from its primary to the primary to with `redis-cli
// --cluster reshard`, keys and all, as an operator would. That command
// moves a primary's lowest slots, so slot must be its primary's lowest.
func (c *RedisCluster) Reshard(slot int, to *Redis) error {
	slots, err := c.Slots()
	if err != nil {
		return err
	}
	from := slots[slot]
	for s := range slot {
		if slots[s] == from {
			return fmt.Errorf("slot %d is not the lowest of %s (%d is)", slot, from.Addr(), s)
		}
	}
	fromID, err1 := from.ID()
	toID, err2 := to.ID()
	if err := errors.Join(err1, err2); err != nil {
		return err
	}
	out, err := exec.Command("redis-cli", "--cluster", "reshard", from.Addr(),
		"--cluster-from", fromID, "--cluster-to", toID, "--cluster-slots", "1", "--cluster-yes").CombinedOutput()
	if err != nil {
		return fmt.Errorf("redis-cli --cluster reshard: %v\n%s", err, out)
	}
	// Every node learns the new owner by gossip: wait until each has.
	deadline := time.Now().Add(10 * time.Second)
	for _, n := range c.running() {
		for {
			rc := nodeClient(n.Addr())
			slots, err := rc.ClusterSlots(context.Background()).Result()
			rc.Close()
			owner := ""
			for _, s := range slots {
				if s.Start <= slot && slot <= s.End {
					owner = s.Nodes[0].Addr
				}
			}
			if err == nil && owner == to.Addr() {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("after the reshard %s says slot %d is on %q (%v)", n.Addr(), slot, owner, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return nil
}

// PublishUntil publishes until Redis takes it, as an application retries
// while a failover is under way (a cluster that has lost a primary
// refuses writes for a moment: CLUSTERDOWN), reading the slot map again
// after each failure.
func PublishUntil(t testing.TB, rc *redis.ClusterClient, publish func(ctx context.Context) error) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := publish(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("publishing: %v", err)
		}
		rc.ReloadState(context.Background())
		time.Sleep(20 * time.Millisecond)
	}
}

// RelayPubSub counts the relay's pub/sub connections (client name
// caddy-sse-relay, flag P) in a node's CLIENT LIST.
func RelayPubSub(clientList string) int {
	n := 0
	for _, l := range strings.Split(clientList, "\n") {
		if strings.Contains(l, "name=caddy-sse-relay ") && strings.Contains(l, " flags=P ") {
			n++
		}
	}
	return n
}

// RelayPubSubOn counts the relay's pub/sub connections on the node at addr.
func RelayPubSubOn(addr string) (int, error) {
	rc := redis.NewClient(&redis.Options{Addr: addr})
	defer rc.Close()
	list, err := rc.ClientList(context.Background()).Result()
	return RelayPubSub(list), err
}

// Shard is a primary and the lowest slot it serves, the slot tests move.
type Shard struct {
	Primary *Redis
	Lowest  int
}

// Shards are the primaries, in the order of Primaries, each with its
// lowest slot.
func (c *RedisCluster) Shards() ([]Shard, error) {
	primaries, err := c.Primaries()
	if err != nil {
		return nil, err
	}
	slots, err := c.Slots()
	if err != nil {
		return nil, err
	}
	lowest := map[*Redis]int{}
	for s := 16383; s >= 0; s-- {
		if n := slots[s]; n != nil {
			lowest[n] = s
		}
	}
	out := make([]Shard, len(primaries))
	for i, p := range primaries {
		out[i] = Shard{Primary: p, Lowest: lowest[p]}
	}
	return out, nil
}

// clusterServers is the cluster a test binary shares; see Servers.Cluster.
type clusterServers struct {
	once    sync.Once
	cluster *RedisCluster
	err     error
}

// Cluster is the shared Redis Cluster (three primaries, one replica each),
// started on first use; as PG. It is returned healthy: a test that killed
// or moved nodes before may have left it settling.
func (s *Servers) Cluster(t testing.TB) *RedisCluster {
	t.Helper()
	s.cluster.once.Do(func() { s.cluster.cluster, s.cluster.err = StartRedisCluster(3, 1) })
	if s.cluster.err != nil {
		t.Fatalf("test Redis Cluster: %v", s.cluster.err)
	}
	if err := s.cluster.cluster.WaitHealthy(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	return s.cluster.cluster
}

// WithAndWithoutHistory runs test as two subtests, "history" and "live".
func WithAndWithoutHistory(t *testing.T, test func(t *testing.T, history bool)) {
	for _, history := range []bool{true, false} {
		name := "live"
		if history {
			name = "history"
		}
		t.Run(name, func(t *testing.T) { test(t, history) })
	}
}
