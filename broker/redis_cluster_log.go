package broker

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// clusterLog is the Redis Cluster broker's log: the single Redis log's
// streams, reads and positions (its client, the cluster's, routes each
// stream's commands to the shard of its slot), announced with SPUBLISH on
// that shard, and the function library on every primary.
type clusterLog struct {
	*redisLog
	cluster *redis.ClusterClient
	slotUp  func(slot int) bool // whether slot's primary is connected
}

// load puts the function library on every primary. A replica gets it by
// replication; a shard connecting to a primary, a promoted replica too,
// loads it again.
func (l *clusterLog) load(ctx context.Context) error {
	err := l.cluster.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
		if err := node.FunctionLoadReplace(ctx, RedisFunction).Err(); err != nil {
			return fmt.Errorf("%s: %w", node.Options().Addr, err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("loading the sse_relay function: %w", err)
	}
	return nil
}

// Check loads the function library on every primary.
func (l *clusterLog) Check(ctx context.Context) error { return l.load(ctx) }

// publish appends payload to the streams of channels, which share a slot,
// in one MULTI/EXEC on its primary.
func (l *clusterLog) publish(ctx context.Context, channels []string, payload []byte) error {
	return l.fcall(ctx, "sse_relay_spublish", channels, payload)
}

// Depth counts the entries of the channels listened to now on the shards
// that are up, and names the rest in its error: stats and health checks
// answer at once rather than wait for a dead primary.
func (l *clusterLog) Depth(ctx context.Context) (LogDepth, error) {
	var up []string
	down := 0
	for _, ch := range l.want.channels() {
		if l.slotUp(keySlot(RedisLogKey(ch))) {
			up = append(up, ch)
		} else {
			down++
		}
	}
	d, err := l.depthOf(ctx, up)
	if err == nil && down > 0 {
		err = fmt.Errorf("%d channels' shards are down: not counted", down)
	}
	return d, err
}
