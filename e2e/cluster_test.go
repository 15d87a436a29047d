package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sse-relay/caddy-sse-relay/broker"
	"github.com/sse-relay/caddy-sse-relay/hub"
	"github.com/sse-relay/caddy-sse-relay/internal/sseclient"
	"github.com/sse-relay/caddy-sse-relay/internal/testsrv"
)

// clusterChannels are channel names, perPrimary on each primary of the
// cluster, with the primary of each.
func clusterChannels(t *testing.T, cl *testsrv.RedisCluster, prefix string, perPrimary int) ([]string, map[string]*testsrv.Redis) {
	t.Helper()
	slots, err := cl.Slots()
	if err != nil {
		t.Fatal(err)
	}
	primaries, err := cl.Primaries()
	if err != nil {
		t.Fatal(err)
	}
	base := prefix + strconv.FormatInt(time.Now().UnixNano(), 36)
	owner := map[string]*testsrv.Redis{}
	per := map[*testsrv.Redis]int{}
	var out []string
	for i := 0; len(out) < perPrimary*len(primaries); i++ {
		ch := fmt.Sprintf("%s.%d", base, i)
		slot, err := cl.KeySlot(ch)
		if err != nil {
			t.Fatal(err)
		}
		if p := slots[slot]; per[p] < perPrimary {
			per[p]++
			owner[ch] = p
			out = append(out, ch)
		}
	}
	return out, owner
}

// clusterShards reads the shards of the node's one broker from the admin
// API.
func clusterShards(t *testing.T, n *node) []broker.ShardState {
	t.Helper()
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(n.admin + "/sse_relay/stats")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var stats struct {
		Brokers []struct {
			Shards []broker.ShardState `json:"shards"`
		} `json:"brokers"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&stats); err != nil || len(stats.Brokers) != 1 {
		t.Fatalf("stats: %v, %d brokers", err, len(stats.Brokers))
	}
	return stats.Brokers[0].Shards
}

// TestClusterFanOut: a node on a Redis Cluster of three primaries and
// three replicas. 300 streams over 30 channels, spread over the three
// shards, each get every one of 50 events an application publishes on
// their channel with SPUBLISH, in order; each primary holds one pub/sub
// connection of the relay, and /sse_relay/stats lists the three shards,
// connected, with the 30 channels between them.
func TestClusterFanOut(t *testing.T) {
	cl := servers.Cluster(t)
	n := startNode(t, "broker "+cl.URL()+"\nheartbeat 0\nmax_connections_per_ip 5000")
	channels, _ := clusterChannels(t, cl, "fan", 10)
	streams := openStreams(t, n, channels, 300)
	rc := cl.Client()
	defer rc.Close()
	ctx := context.Background()
	for i := range 50 {
		for _, ch := range channels {
			if err := rc.SPublish(ctx, ch, strconv.Itoa(i)).Err(); err != nil {
				t.Fatal(err)
			}
		}
	}
	for si, s := range streams {
		for i := range 50 {
			ev, err := s.Next(10 * time.Second)
			if err != nil || ev.Data != strconv.Itoa(i) {
				t.Fatalf("stream %d (%s): event %d: %+v, %v", si, channels[si%len(channels)], i, ev, err)
			}
		}
		if err := s.Nothing(0); err != nil {
			t.Fatalf("stream %d: %v", si, err)
		}
	}
	primaries, err := cl.Primaries()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range primaries {
		if got, err := testsrv.RelayPubSubOn(p.Addr()); err != nil || got != 1 {
			t.Errorf("primary %s: %d relay pub/sub connections, want 1 (%v)", p.Addr(), got, err)
		}
	}
	shards := clusterShards(t, n)
	subs := 0
	for _, s := range shards {
		if !s.Connected {
			t.Errorf("shard %+v not connected", s)
		}
		subs += s.Subscriptions
	}
	if len(shards) != 3 || subs != 30 {
		t.Fatalf("stats list %d shards with %d subscriptions, want 3 with 30: %+v", len(shards), subs, shards)
	}
}

// openStreams opens count streams on n, spread over channels in turn,
// closed when the test ends.
func openStreams(t *testing.T, n *node, channels []string, count int) []*sseclient.Stream {
	t.Helper()
	streams := make([]*sseclient.Stream, count)
	for i := range streams {
		s, err := open(n.base+"/events/"+channels[i%len(channels)], nil)
		if err != nil {
			t.Fatal(err)
		}
		streams[i] = s
		t.Cleanup(s.Close)
	}
	return streams
}

// clusterPublish publishes data on channel, through the log with history,
// retrying as an application does during a failover (testsrv.PublishUntil).
func clusterPublish(t *testing.T, rc *redis.ClusterClient, history bool, channel, data string) {
	t.Helper()
	testsrv.PublishUntil(t, rc, func(ctx context.Context) error {
		if history {
			return rc.FCall(ctx, "sse_relay_spublish", []string{broker.RedisLogKey(channel)}, data, 1000, 0).Err()
		}
		return rc.SPublish(ctx, channel, data).Err()
	})
}

// watchHealth polls n's /sse_relay/health and records the statuses seen.
func watchHealth(n *node) (seen func() map[int]bool, stop func()) {
	var mu sync.Mutex
	statuses := map[int]bool{}
	done := make(chan struct{})
	finished := make(chan struct{})
	client := &http.Client{Timeout: 2 * time.Second}
	go func() {
		defer close(finished)
		for {
			select {
			case <-done:
				return
			case <-time.After(20 * time.Millisecond):
			}
			resp, err := client.Get(n.admin + "/sse_relay/health")
			if err != nil {
				continue
			}
			resp.Body.Close()
			mu.Lock()
			statuses[resp.StatusCode] = true
			mu.Unlock()
		}
	}()
	return func() map[int]bool {
			mu.Lock()
			defer mu.Unlock()
			return statuses
		}, func() {
			close(done)
			<-finished
		}
}

// streamEntries are the "id data" of every entry of channel's stream.
func streamEntries(t *testing.T, rc *redis.ClusterClient, channel string) []string {
	t.Helper()
	msgs, err := rc.XRange(context.Background(), broker.RedisLogKey(channel), "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range msgs {
		out = append(out, m.ID+" "+m.Values["d"].(string))
	}
	return out
}

// readUntil reads s until it has want events (resets included), or until
// nothing comes for 10 s, and fails if the stream ended.
func readUntil(t *testing.T, s *sseclient.Stream, want int) []sseclient.Event {
	t.Helper()
	return readThrough(t, s, func(evs []sseclient.Event) bool { return len(evs) >= want })
}

// stillOpen fails unless every stream is open and quiet.
func stillOpen(t *testing.T, streams []*sseclient.Stream) {
	t.Helper()
	time.Sleep(100 * time.Millisecond)
	for i, s := range streams {
		if ev, err := s.Next(time.Millisecond); !errors.Is(err, sseclient.ErrTimeout) {
			t.Fatalf("stream %d is not open and quiet: %+v, %v", i, ev, err)
		}
	}
}

// readThrough reads s until done says it has read enough, or until
// nothing comes for 10 s, and fails if the stream ended.
func readThrough(t *testing.T, s *sseclient.Stream, done func([]sseclient.Event) bool) []sseclient.Event {
	t.Helper()
	var out []sseclient.Event
	for !done(out) {
		ev, err := s.Next(10 * time.Second)
		if errors.Is(err, sseclient.ErrTimeout) {
			break
		}
		if err != nil {
			t.Fatalf("the stream ended: %v", err)
		}
		out = append(out, ev)
	}
	return out
}

// publishThroughFault publishes events 0 to events-1 at 100/s, event i on
// channels[i mod len], as an application would, and brings about fault
// (a primary killed, a slot moved) just before event 100.
func publishThroughFault(t *testing.T, rc *redis.ClusterClient, history bool, channels []string, events int, fault func() error) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for i := range events {
		<-tick.C
		if i == 100 {
			if err := fault(); err != nil {
				t.Fatal(err)
			}
		}
		clusterPublish(t, rc, history, channels[i%len(channels)], strconv.Itoa(i))
	}
}

// TestClusterFailover: a node on a Redis Cluster; 60 streams over six
// channels, two on each primary; an application publishes 400 events at
// 100/s, and after the 100th one primary is killed (SIGKILL) and its
// replica takes over. /sse_relay/health answers 503 while the dead
// primary holds listened channels, and 200 again once the relay has
// moved them to the promoted replica. The streams stay open. With
// history, each stream gets every event its channel's stream holds, once,
// in order, and no reset; without, the streams of the dead primary's
// channels get a reset and then live events, the others every event and
// no reset.
func TestClusterFailover(t *testing.T) {
	testsrv.WithAndWithoutHistory(t, func(t *testing.T, history bool) {
		cl := servers.Cluster(t)
		lines := "broker " + cl.URL() + "\nheartbeat 1s\nmax_connections_per_ip 5000"
		if history {
			lines += "\nhistory 1000"
		}
		n := startNode(t, lines)
		channels, owner := clusterChannels(t, cl, "failover", 2)
		streams := openStreams(t, n, channels, 60)
		victim := owner[channels[0]]
		slot, err := cl.KeySlot(channels[0])
		if err != nil {
			t.Fatal(err)
		}
		rc := cl.Client()
		defer rc.Close()
		health, stopHealth := watchHealth(n)

		const events = 400
		publishThroughFault(t, rc, history, channels, events, victim.Kill)
		promoted, err := cl.WaitOwner(slot, victim, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer func() {
			// The killed node rejoins as a replica, for the tests
			// that follow.
			if err := victim.Start(); err != nil {
				t.Fatal(err)
			}
		}()

		resets := 0
		for si, s := range streams {
			ch := channels[si%len(channels)]
			if history {
				want := streamEntries(t, rc, ch)
				var got []string
				for _, ev := range readUntil(t, s, len(want)) {
					if ev.Name == hub.ResetEvent {
						t.Fatalf("stream %d (%s): a reset: %+v", si, ch, ev)
					}
					got = append(got, ev.ID+" "+ev.Data)
				}
				if strings.Join(got, ",") != strings.Join(want, ",") {
					t.Fatalf("stream %d (%s): got %d events, the log holds %d", si, ch, len(got), len(want))
				}
				continue
			}
			var want []string
			for i := si % len(channels); i < events; i += len(channels) {
				want = append(want, strconv.Itoa(i))
			}
			final := want[len(want)-1]
			got := readThrough(t, s, func(evs []sseclient.Event) bool {
				return len(evs) > 0 && evs[len(evs)-1].Data == final
			})
			if owner[ch] != victim {
				var data []string
				for _, ev := range got {
					data = append(data, ev.Data)
				}
				if strings.Join(data, ",") != strings.Join(want, ",") {
					t.Fatalf("stream %d (%s, on a live primary): got %v", si, ch, data)
				}
				continue
			}
			// The dead primary's channels: a reset, then live events
			// in order up to the last.
			at := -1
			last := -1
			for j, ev := range got {
				if ev.Name == hub.ResetEvent {
					at = j
					continue
				}
				v, err := strconv.Atoi(ev.Data)
				if err != nil || v <= last {
					t.Fatalf("stream %d (%s): event %+v after %d", si, ch, ev, last)
				}
				last = v
			}
			if at < 0 || strconv.Itoa(last) != final {
				t.Fatalf("stream %d (%s): reset at %d, last event %d, of %d events", si, ch, at, last, len(got))
			}
			resets++
		}
		stillOpen(t, streams)
		stopHealth()
		if seen := health(); !seen[http.StatusServiceUnavailable] || !seen[http.StatusOK] {
			t.Fatalf("health answered %v, want 503 during the failover and 200", seen)
		}
		resp, err := http.Get(n.admin + "/sse_relay/health")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("health after the failover: %d", resp.StatusCode)
		}
		for _, s := range clusterShards(t, n) {
			if s.Addr == victim.Addr() || !s.Connected {
				t.Fatalf("shard %+v after the failover", s)
			}
		}
		t.Logf("primary %s killed, %s took over; 60 streams open throughout; %d reset", victim.Addr(), promoted.Addr(), resets)
	})
}

// TestClusterReshard: `redis-cli --cluster reshard` moves the slot of a
// channel that 20 streams of a node with history read to another primary
// while an application publishes on it at 100/s. The streams stay open
// and each gets every event of the channel's stream, once, in order, and
// no reset.
func TestClusterReshard(t *testing.T) {
	cl := servers.Cluster(t)
	n := startNode(t, historyNode(cl.URL()))
	shards, err := cl.Shards()
	if err != nil {
		t.Fatal(err)
	}
	from, to := shards[1].Primary, shards[2].Primary
	slot := shards[1].Lowest
	base := "reshard" + strconv.FormatInt(time.Now().UnixNano(), 36)
	var ch string
	for i := 0; ch == ""; i++ {
		name := fmt.Sprintf("%s.%d", base, i)
		if s, err := cl.KeySlot(name); err != nil {
			t.Fatal(err)
		} else if s == slot {
			ch = name
		}
	}
	streams := openStreams(t, n, []string{ch}, 20)
	rc := cl.Client()
	defer rc.Close()
	const events = 300
	publishThroughFault(t, rc, true, []string{ch}, events, func() error { return cl.Reshard(slot, to) })
	want := streamEntries(t, rc, ch)
	if len(want) != events {
		t.Fatalf("the stream holds %d of %d events", len(want), events)
	}
	for si, s := range streams {
		var got []string
		for _, ev := range readUntil(t, s, len(want)) {
			if ev.Name == hub.ResetEvent {
				t.Fatalf("stream %d: a reset: %+v", si, ev)
			}
			got = append(got, ev.ID+" "+ev.Data)
		}
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Fatalf("stream %d: got %d events, the log holds %d", si, len(got), len(want))
		}
	}
	stillOpen(t, streams)
	t.Logf("slot %d of %s moved from %s to %s under 20 streams: every event once, in order", slot, ch, from.Addr(), to.Addr())
}

// TestClusterCLI: `caddy sse-relay schema --broker redis-cluster://…`
// prints the function library with sse_relay_spublish, `--apply` loads it
// on every primary, and `notify` publishes to a node on the cluster, live
// and through the log.
func TestClusterCLI(t *testing.T) {
	cl := servers.Cluster(t)
	url := cl.URL()
	out, err := exec.Command(caddyBin, "sse-relay", "schema", "--broker", url).Output()
	if err != nil || !strings.Contains(string(out), "sse_relay_spublish") {
		t.Fatalf("schema --broker %s: %v\n%s", url, err, out)
	}
	primaries, err := cl.Primaries()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range primaries {
		rc := redis.NewClient(&redis.Options{Addr: p.Addr()})
		err := rc.FunctionDelete(context.Background(), "sse_relay").Err()
		rc.Close()
		if err != nil && !strings.Contains(err.Error(), "Library not found") {
			t.Fatal(err)
		}
	}
	out, err = exec.Command(caddyBin, "sse-relay", "schema", "--apply", "--broker", url).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "event log ready") {
		t.Fatalf("schema --apply: %v\n%s", err, out)
	}
	for _, p := range primaries {
		rc := redis.NewClient(&redis.Options{Addr: p.Addr()})
		libs, err := rc.FunctionList(context.Background(), redis.FunctionListQuery{LibraryNamePattern: "sse_relay"}).Result()
		rc.Close()
		if err != nil || len(libs) != 1 || len(libs[0].Functions) != 2 {
			t.Fatalf("%s: libraries %+v, %v", p.Addr(), libs, err)
		}
	}

	channels, _ := clusterChannels(t, cl, "cli", 1)
	live := startNode(t, "broker "+url)
	logged := startNode(t, "broker "+url+"\nhistory 10")
	for _, ch := range channels {
		s := openMany(t, live.base+"/events/"+ch, 1)[0]
		if out, err := exec.Command(caddyBin, "sse-relay", "notify", "--broker", url, "--channel", ch, "--data", "live").CombinedOutput(); err != nil {
			t.Fatalf("notify: %v\n%s", err, out)
		}
		if ev, err := s.Next(10 * time.Second); err != nil || ev.Data != "live" {
			t.Fatalf("%s: got %+v, %v", ch, ev, err)
		}
		s = openMany(t, logged.base+"/events/"+ch, 1)[0]
		if out, err := exec.Command(caddyBin, "sse-relay", "notify", "--broker", url, "--history", "10", "--channel", ch, "--data", "logged").CombinedOutput(); err != nil {
			t.Fatalf("notify --history: %v\n%s", err, out)
		}
		ev, err := s.Next(10 * time.Second)
		if err != nil || ev.Data != "logged" || !regexp.MustCompile(`^\d+-\d+$`).MatchString(ev.ID) {
			t.Fatalf("%s: got %+v, %v; want the event with its log position as id", ch, ev, err)
		}
	}
}
