package broker

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sse-relay/caddy-sse-relay/internal/testsrv"
)

// TestClusterKeySlot: the relay's slot of a name is the cluster's, with
// and without hash tags, for the edge cases of the hash tag rule.
func TestClusterKeySlot(t *testing.T) {
	cl := servers.Cluster(t)
	names := []string{"", "orders", "sse-relay:{orders}", "{user1000}.following", "foo{}{bar}", "foo{{bar}}zap",
		"foo{bar}{zap}", "{}", "{", "}", "a{b", "ünïcode", "sse-relay:{a{b}c}"}
	for i := range 200 {
		names = append(names, fmt.Sprintf("channel.%d", i))
	}
	for _, name := range names {
		want, err := cl.KeySlot(name)
		if err != nil {
			t.Fatal(err)
		}
		if got := keySlot(name); got != want {
			t.Errorf("keySlot(%q) = %d, the cluster says %d", name, got, want)
		}
	}
}

// TestClusterURL: redis-cluster:// and rediss-cluster:// open the cluster
// broker with every addr= value as a seed, and rediss-cluster:// asks for
// TLS.
func TestClusterURL(t *testing.T) {
	b, err := Open("redis-cluster://u:pw@10.0.0.1:7000?addr=10.0.0.2:7000&addr=10.0.0.3:7000", nil, History{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	c, ok := b.(*clusterBroker)
	if !ok {
		t.Fatalf("redis-cluster:// opened a %T", b)
	}
	if got := strings.Join(c.opt.Addrs, " "); got != "10.0.0.1:7000 10.0.0.2:7000 10.0.0.3:7000" {
		t.Fatalf("seeds %q", got)
	}
	if c.opt.Username != "u" || c.opt.Password != "pw" || c.opt.TLSConfig != nil {
		t.Fatalf("options %+v", c.opt)
	}
	tb, err := Open("rediss-cluster://10.0.0.1:7000", nil, History{})
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Close()
	if tb.(*clusterBroker).opt.TLSConfig == nil {
		t.Fatal("rediss-cluster:// does not ask for TLS")
	}
	if got := Label("redis-cluster://u:s3cret@10.0.0.1:7000?addr=10.0.0.2:7000"); strings.Contains(got, "s3cret") ||
		got != "redis-cluster://u@10.0.0.1:7000,10.0.0.2:7000" {
		t.Fatalf("Label = %q", got)
	}
}

// spreadChannels are n channel names named prefix.<i> whose slots are on
// every primary of the cluster, with the primary of each.
func spreadChannels(t *testing.T, cl *testsrv.RedisCluster, prefix string, n int) ([]string, map[string]*testsrv.Redis) {
	t.Helper()
	slots, err := cl.Slots()
	if err != nil {
		t.Fatal(err)
	}
	owner := map[string]*testsrv.Redis{}
	per := map[*testsrv.Redis]int{}
	var out []string
	for i := range n {
		ch := fmt.Sprintf("%s.%d", prefix, i)
		out = append(out, ch)
		owner[ch] = slots[keySlot(ch)]
		per[owner[ch]]++
	}
	if len(per) != 3 {
		t.Fatalf("the %d channels are on %d primaries, want all 3", n, len(per))
	}
	return out, owner
}

// TestClusterSpreadOneConnectionPerShard: 30 channels spread over the
// three primaries each get every one of 50 events, published by the
// broker (SPUBLISH) and by another client; each primary holds one
// pub/sub connection of the relay, and the state lists the three shards,
// connected.
func TestClusterSpreadOneConnectionPerShard(t *testing.T) {
	cl := servers.Cluster(t)
	b, rec := open(t, cl.URL())
	channels, _ := spreadChannels(t, cl, fresh("spread"), 30)
	for _, ch := range channels {
		waitReady(t, b.Listen(ch))
	}
	rc := cl.Client()
	defer rc.Close()
	ctx := context.Background()
	for i := range 50 {
		for _, ch := range channels {
			var err error
			if i%2 == 0 {
				err = b.Publish(ctx, []string{ch}, []byte(fmt.Sprint(i)))
			} else {
				err = rc.SPublish(ctx, ch, fmt.Sprint(i)).Err()
			}
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	rec.waitFor(t, "1,500 events", func() bool { return len(rec.got) >= 1500 })
	time.Sleep(100 * time.Millisecond)
	rec.mu.Lock()
	got := map[string]int{}
	for _, g := range rec.got {
		got[g]++
	}
	rec.mu.Unlock()
	for _, ch := range channels {
		for i := range 50 {
			if n := got[fmt.Sprintf("%s %d", ch, i)]; n != 1 {
				t.Fatalf("%s got event %d %d times", ch, i, n)
			}
		}
	}
	primaries, err := cl.Primaries()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range primaries {
		if n, err := testsrv.RelayPubSubOn(p.Addr()); err != nil || n != 1 {
			t.Errorf("primary %s holds %d pub/sub connections of the relay, want 1 (%v)", p.Addr(), n, err)
		}
	}
	st := b.State()
	if !st.Connected || len(st.Shards) != 3 {
		t.Fatalf("state %+v", st)
	}
	total := 0
	for _, s := range st.Shards {
		if !s.Connected || s.Subscriptions == 0 {
			t.Fatalf("shard %+v", s)
		}
		total += s.Subscriptions
	}
	if total != 30 {
		t.Fatalf("%d subscriptions over the shards, want 30", total)
	}
}

// watchConnected records whether b was seen disconnected, until stop.
func watchConnected(b Broker) (sawDown func() bool, stop func()) {
	done := make(chan struct{})
	var mu sync.Mutex
	down := false
	go func() {
		for {
			select {
			case <-done:
				return
			case <-time.After(5 * time.Millisecond):
			}
			if !b.Connected() {
				mu.Lock()
				down = true
				mu.Unlock()
			}
		}
	}()
	return func() bool { mu.Lock(); defer mu.Unlock(); return down }, func() { close(done) }
}

// TestClusterFailover: six channels, two on each primary, with events
// published at 100/s by an application while one primary is killed
// (SIGKILL) and its replica takes over. The broker is told it is down
// while the dead primary holds listened channels (health), and moves
// them to the promoted replica. With history, each channel gets every
// entry its stream holds, once, in order, and no reset; without, the
// dead primary's channels get a reset and then live events, and the other
// channels every event and no reset.
func TestClusterFailover(t *testing.T) {
	testsrv.WithAndWithoutHistory(t, func(t *testing.T, history bool) {
		cl := servers.Cluster(t)
		b, rec := openCluster(t, cl, history)
		all, owner := spreadChannels(t, cl, fresh("fo"), 60)
		// Two channels per primary.
		var channels []string
		per := map[*testsrv.Redis]int{}
		for _, ch := range all {
			if per[owner[ch]] < 2 {
				per[owner[ch]]++
				channels = append(channels, ch)
			}
		}
		for _, ch := range channels {
			waitReady(t, b.Listen(ch))
		}
		victim := owner[channels[0]]
		slot := keySlot(channels[0])
		rc := cl.Client()
		defer rc.Close()
		sawDown, stopWatch := watchConnected(b)
		defer stopWatch()

		const events = 400
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		var promoted *testsrv.Redis
		var afterFailover int // the first event published once the replica took over
		var relayBack int     // the first event published once the relay was connected again
		for i := range events {
			<-tick.C
			if i == 100 {
				if err := victim.Kill(); err != nil {
					t.Fatal(err)
				}
			}
			ch := channels[i%len(channels)]
			data := fmt.Sprint(i)
			testsrv.PublishUntil(t, rc, func(ctx context.Context) error {
				if history {
					return rc.FCall(ctx, "sse_relay_spublish", []string{RedisLogKey(ch)}, data, 1000, 0).Err()
				}
				return rc.SPublish(ctx, ch, data).Err()
			})
			if i >= 100 && promoted == nil {
				if o, err := cl.Owner(slot); err == nil && o != victim {
					promoted, afterFailover = o, i+1
				}
			}
			if i >= 100 && relayBack == 0 && sawDown() && b.Connected() {
				relayBack = i + 1
			}
		}
		if promoted == nil {
			var err error
			if promoted, err = cl.WaitOwner(slot, victim, 10*time.Second); err != nil {
				t.Fatal(err)
			}
			afterFailover = events
		}
		t.Logf("primary %s killed at event 100; %s serves its slots from event %d; the relay is connected again from event %d", victim.Addr(), promoted.Addr(), afterFailover, relayBack)
		// Put the killed node back (it rejoins as a replica) for the
		// tests that follow.
		defer func() {
			if err := victim.Start(); err != nil {
				t.Fatal(err)
			}
		}()

		if history {
			// Every entry the streams hold, once, in order.
			want := map[string][]string{}
			total := 0
			for _, ch := range channels {
				msgs, err := rc.XRange(context.Background(), RedisLogKey(ch), "-", "+").Result()
				if err != nil {
					t.Fatal(err)
				}
				for _, m := range msgs {
					want[ch] = append(want[ch], m.ID+" "+m.Values["d"].(string))
				}
				total += len(msgs)
			}
			if total < events {
				// An append the dead primary acknowledged but had not
				// passed to its replica yet is gone: Redis replicates
				// asynchronously. The relay cannot deliver it.
				t.Logf("the streams hold %d of the %d events published", total, events)
			}
			rec.waitFor(t, "every entry", func() bool { return len(rec.got) >= total })
			time.Sleep(200 * time.Millisecond) // room for a duplicate to show
			rec.mu.Lock()
			got := map[string][]string{}
			for i, g := range rec.got {
				ch, data, _ := strings.Cut(g, " ")
				got[ch] = append(got[ch], rec.pos[i].String()+" "+data)
			}
			resets := rec.resets
			rec.mu.Unlock()
			for _, ch := range channels {
				if strings.Join(got[ch], ",") != strings.Join(want[ch], ",") {
					t.Fatalf("%s: got %d entries, the stream holds %d; got\n%v\nwant\n%v", ch, len(got[ch]), len(want[ch]), got[ch], want[ch])
				}
			}
			if len(resets) > 0 {
				t.Fatalf("resets %v", resets)
			}
		} else {
			rec.waitFor(t, "the last event", func() bool { return rec.has(fmt.Sprintf("%s %d", channels[(events-1)%len(channels)], events-1)) })
			time.Sleep(200 * time.Millisecond)
			rec.mu.Lock()
			got := map[string]int{}
			for _, g := range rec.got {
				got[g]++
			}
			resets := map[string]int{}
			for _, ch := range rec.resets {
				resets[ch]++
			}
			rec.mu.Unlock()
			for i := range events {
				ch := channels[i%len(channels)]
				n := got[fmt.Sprintf("%s %d", ch, i)]
				switch {
				case n > 1:
					t.Fatalf("%s got event %d %d times", ch, i, n)
				// Without history, the dead primary's channels may miss
				// what was published until the relay listened on the
				// promoted replica (at least half a second after the
				// takeover, more while the machine is busy); nothing
				// after that.
				case n == 0 && (owner[ch] != victim || i >= max(afterFailover+50, relayBack)):
					t.Fatalf("%s (on %s) missed event %d", ch, owner[ch].Addr(), i)
				}
			}
			for _, ch := range channels {
				if owner[ch] == victim && resets[ch] == 0 {
					t.Fatalf("%s, on the dead primary, got no reset", ch)
				}
				if owner[ch] != victim && resets[ch] > 0 {
					t.Fatalf("%s, on a live primary, got a reset", ch)
				}
			}
		}
		if !sawDown() {
			t.Fatal("the broker never said it was down while a shard holding listened channels was")
		}
		st := b.State()
		if !st.Connected || len(st.Shards) != 3 {
			t.Fatalf("state after the failover: %+v", st)
		}
		for _, s := range st.Shards {
			if s.Addr == victim.Addr() || !s.Connected {
				t.Fatalf("shard %+v after the failover", s)
			}
		}
	})
}

// openCluster opens a broker on cl, with history (1,000 entries a
// channel) or without.
func openCluster(t *testing.T, cl *testsrv.RedisCluster, history bool) (Broker, *recorder) {
	t.Helper()
	if history {
		return openHistory(t, cl.URL(), History{Count: 1000})
	}
	return open(t, cl.URL())
}

// channelInSlot is a fresh channel name whose slot is slot.
func channelInSlot(prefix string, slot int) string {
	base := fresh(prefix)
	for i := 0; ; i++ {
		if ch := fmt.Sprintf("%s.%d", base, i); keySlot(ch) == slot {
			return ch
		}
	}
}

// TestClusterReshard: `redis-cli --cluster reshard` moves the slot of a
// channel with a live subscription to another primary while an
// application publishes on it at 100/s. Redis pushes SUNSUBSCRIBE to the
// old primary's subscribers; the broker subscribes on the new one. With
// history the channel gets every entry its stream holds, once, in order,
// and no reset (the stream moves with its slot); without, a reset, then
// live events.
func TestClusterReshard(t *testing.T) {
	testsrv.WithAndWithoutHistory(t, func(t *testing.T, history bool) {
		cl := servers.Cluster(t)
		b, rec := openCluster(t, cl, history)
		shards, err := cl.Shards()
		if err != nil {
			t.Fatal(err)
		}
		from, to := shards[0].Primary, shards[1].Primary
		slot := shards[0].Lowest
		ch := channelInSlot("resh", slot)
		other := channelInSlot("stay", shards[1].Lowest)
		waitReady(t, b.Listen(ch))
		waitReady(t, b.Listen(other))
		rc := cl.Client()
		defer rc.Close()

		const events = 300
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		var moved int
		for i := range events {
			<-tick.C
			if i == 100 {
				start := time.Now()
				if err := cl.Reshard(slot, to); err != nil {
					t.Fatal(err)
				}
				moved = i
				t.Logf("slot %d of %s moved from %s to %s in %v", slot, ch, from.Addr(), to.Addr(), time.Since(start).Round(time.Millisecond))
			}
			target, data := ch, fmt.Sprint(i)
			if i%10 == 9 {
				target = other
			}
			testsrv.PublishUntil(t, rc, func(ctx context.Context) error {
				if history {
					return rc.FCall(ctx, "sse_relay_spublish", []string{RedisLogKey(target)}, data, 1000, 0).Err()
				}
				return rc.SPublish(ctx, target, data).Err()
			})
		}
		if history {
			want := map[string][]string{}
			total := 0
			for _, c := range []string{ch, other} {
				msgs, err := rc.XRange(context.Background(), RedisLogKey(c), "-", "+").Result()
				if err != nil {
					t.Fatal(err)
				}
				for _, m := range msgs {
					want[c] = append(want[c], m.ID+" "+m.Values["d"].(string))
				}
				total += len(msgs)
			}
			if total != events {
				t.Fatalf("the streams hold %d of the %d events published", total, events)
			}
			rec.waitFor(t, "every entry", func() bool { return len(rec.got) >= total })
			time.Sleep(200 * time.Millisecond)
			rec.mu.Lock()
			got := map[string][]string{}
			for i, g := range rec.got {
				c, data, _ := strings.Cut(g, " ")
				got[c] = append(got[c], rec.pos[i].String()+" "+data)
			}
			resets := rec.resets
			rec.mu.Unlock()
			for _, c := range []string{ch, other} {
				if strings.Join(got[c], ",") != strings.Join(want[c], ",") {
					t.Fatalf("%s: got %d entries, the stream holds %d", c, len(got[c]), len(want[c]))
				}
			}
			if len(resets) > 0 {
				t.Fatalf("resets %v", resets)
			}
		} else {
			last := fmt.Sprintf("%s %d", ch, events-2)
			rec.waitFor(t, "the last event", func() bool { return rec.has(last) })
			time.Sleep(200 * time.Millisecond)
			rec.mu.Lock()
			got := map[string]int{}
			for _, g := range rec.got {
				got[g]++
			}
			resets := slices.Clone(rec.resets)
			rec.mu.Unlock()
			if len(resets) != 1 || resets[0] != ch {
				t.Fatalf("resets %v, want one for %s", resets, ch)
			}
			for i := range events {
				c := ch
				if i%10 == 9 {
					c = other
				}
				n := got[fmt.Sprintf("%s %d", c, i)]
				if n > 1 || (n == 0 && (c == other || i > moved+50)) {
					t.Fatalf("%s got event %d %d times", c, i, n)
				}
			}
		}
		// The channel is subscribed on its new primary, and on it alone.
		for _, p := range []*testsrv.Redis{from, to} {
			n := redis.NewClient(&redis.Options{Addr: p.Addr()})
			subs, err := n.PubSubShardNumSub(context.Background(), ch).Result()
			n.Close()
			if err != nil {
				t.Fatal(err)
			}
			if want := map[bool]int64{true: 1, false: 0}[p == to]; subs[ch] != want {
				t.Fatalf("%s has %d subscribers of %s, want %d", p.Addr(), subs[ch], ch, want)
			}
		}
	})
}

// TestClusterMoved: a channel listened to right after its slot moved,
// before the broker read the slot map again, is SSUBSCRIBEd on the old
// primary, which answers MOVED; the broker reads the map and subscribes
// on the new primary, well before its periodic read of the map.
func TestClusterMoved(t *testing.T) {
	cl := servers.Cluster(t)
	b, rec, logs := openLogged(t, cl.URL())
	waitReady(t, b.Listen(fresh("moved-first")))
	shards, err := cl.Shards()
	if err != nil {
		t.Fatal(err)
	}
	from, to := shards[2], shards[0]
	if err := cl.Reshard(from.Lowest, to.Primary); err != nil {
		t.Fatal(err)
	}
	ch := channelInSlot("moved", from.Lowest)
	start := time.Now()
	ready := b.Listen(ch)
	select {
	case <-ready:
	case <-time.After(clusterRefreshEvery / 2):
		t.Fatalf("not subscribed within %v: MOVED was not followed", clusterRefreshEvery/2)
	}
	rc := cl.Client()
	defer rc.Close()
	if err := rc.SPublish(context.Background(), ch, "here").Err(); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "an event on the moved slot", func() bool { return rec.has(ch + " here") })
	if logs.FilterMessageSnippet("MOVED").Len() == 0 {
		t.Fatal("no MOVED answer: the test proves nothing")
	}
	t.Logf("subscribed on the new primary %v after Listen", time.Since(start).Round(time.Millisecond))
}

// TestClusterLeastPrivilege: the ACL the README gives a relay on a Redis
// Cluster, set on every node, is enough for live channels and history
// (+command lets go-redis read the command table it routes by; without it
// the relay works but go-redis logs each refusal).
func TestClusterLeastPrivilege(t *testing.T) {
	cl := servers.Cluster(t)
	ctx := context.Background()
	acl := []any{"ACL", "SETUSER", "relaycluster", "reset", "on", ">cl-pw", "&*", "~sse-relay:*",
		"+ssubscribe", "+sunsubscribe", "+spublish", "+ping", "+multi", "+exec", "+client|setname", "+cluster|slots", "+command",
		"+function|load", "+fcall", "+xadd", "+xtrim", "+time", "+xrange", "+xrevrange", "+xinfo|stream", "+xlen", "+get", "+set"}
	for _, addr := range cl.Addrs() {
		n := redis.NewClient(&redis.Options{Addr: addr})
		err := n.Do(ctx, acl...).Err()
		n.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, addr := range cl.Addrs() {
			n := redis.NewClient(&redis.Options{Addr: addr})
			n.Do(ctx, "ACL", "DELUSER", "relaycluster")
			n.Close()
		}
	})
	u := strings.Replace(cl.URL(), "redis-cluster://", "redis-cluster://relaycluster:cl-pw@", 1)
	channels, _ := spreadChannels(t, cl, fresh("least"), 30)
	t.Run("live", func(t *testing.T) {
		b, rec := open(t, u)
		for _, ch := range channels[:3] {
			waitReady(t, b.Listen(ch))
			if err := b.Publish(ctx, []string{ch}, []byte("live")); err != nil {
				t.Fatal(err)
			}
		}
		rec.waitFor(t, "three events", func() bool { return len(rec.got) >= 3 })
	})
	t.Run("history", func(t *testing.T) {
		b, rec := openHistory(t, u, History{Count: 3, MaxAge: time.Hour})
		for _, ch := range channels[3:6] {
			waitReady(t, b.Listen(ch))
			if err := b.Publish(ctx, []string{ch}, []byte("logged")); err != nil {
				t.Fatal(err)
			}
		}
		rec.waitFor(t, "three entries", func() bool { return len(rec.pos) >= 3 })
		if got, _, err := b.Log().Read(ctx, map[string]Position{channels[3]: {}}, 10); err != nil || len(got) != 1 {
			t.Fatalf("read as the minimal user: %d entries, %v", len(got), err)
		}
		if _, err := b.Log().Head(ctx, channels[3:6]); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Log().Depth(ctx); err != nil {
			t.Fatal(err)
		}
	})
}
