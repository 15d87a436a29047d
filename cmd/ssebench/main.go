// Command ssebench loads an SSE relay (or the built-in floor server) with
// subscribers on loopback and publishes events that carry their send
// time. It prints one JSON line per run. -suite runs the table of
// docs/PERFORMANCE.md: relay and floor side by side, several times.
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/sse-relay/caddy-sse-relay/broker"

	"github.com/sse-relay/caddy-sse-relay/internal/sseclient"
	"github.com/sse-relay/caddy-sse-relay/internal/testsrv"
)

// config is one load run.
type config struct {
	Target     string // stream URL, e.g. http://127.0.0.1:8080/events/bench
	Publish    string // http, postgres, redis, redis-cluster
	PublishURL string // POST URL for http publishing
	Key        string // publish key
	PG, Redis  string // broker URLs when publishing through them
	Cluster    string // redis-cluster:// URL for -publish redis-cluster
	Channel    string
	// Channels spreads the load: with more than one, subscriber i reads
	// <Channel>.<i mod Channels> (the target's last path segment is the
	// channel) and event n goes to <Channel>.<n mod Channels>.
	Channels   int
	Subs       int
	Events     int
	Rate       float64 // events/s; 0 is flat out
	Sources    int     // loopback source addresses 127.0.0.2 …
	PID        int     // relay process, for RSS
	BrokerPIDs []int   // broker server processes, for the CPU they use
	Timeout    time.Duration
	Publishers int           // concurrent publishers when flat out
	Hold       time.Duration // keep the streams open this long after the run (for profiling)
	History    int           // publish through the relay's event log (count for Redis's trim)
	AppTx      bool          // Postgres: publish in a transaction that also writes an application row
	ResumeFrom string        // resume every stream from this Last-Event-ID (history benchmarks)
	// Proto is how streams are read: h1 (HTTP/1.1 in clear text, the
	// default), h2 (HTTP/2 over TLS) or h3 (HTTP/3 over QUIC); the target
	// is https:// for h2 and h3.
	Proto string
	// Stop, when set, stops the server with the streams still open, at the
	// end of the run, and reports how long that took.
	Stop func() (time.Duration, error)
	// Admin, when set, is the relay's admin address: once the streams
	// are open, two GCs are forced through it and RSS is read again once
	// the runtime has returned what it freed (RSSSettledPerSubKiB).
	Admin string
}

// result is the JSON line a run prints.
type result struct {
	Mode           string  `json:"mode"`
	Subscribers    int     `json:"subscribers"`
	Connected      int     `json:"connected"`
	Events         int     `json:"events"`
	Delivered      uint64  `json:"delivered"`
	Expected       uint64  `json:"expected"`
	Duplicates     uint64  `json:"duplicates"`
	DeliveriesPerS float64 `json:"deliveries_per_s"`
	P50ms          float64 `json:"p50_ms"`
	P90ms          float64 `json:"p90_ms"`
	P99ms          float64 `json:"p99_ms"`
	Maxms          float64 `json:"max_ms"`
	RSSPerSubKiB   float64 `json:"rss_per_sub_kib,omitempty"`
	// RSSSettledPerSubKiB is RSSPerSubKiB after two forced GCs and the
	// runtime returning the memory they freed: what an idle stream costs
	// once the garbage of connecting is gone and the goroutines' stacks
	// have shrunk (Go shrinks them during GC only).
	RSSSettledPerSubKiB float64 `json:"rss_settled_per_sub_kib,omitempty"`
	RSSSettledMiB       float64 `json:"rss_settled_mib,omitempty"`
	RSSIdleMiB          float64 `json:"rss_idle_mib,omitempty"`
	RSSLoadedMiB        float64 `json:"rss_loaded_mib,omitempty"`
	BrokerConns         int     `json:"broker_connections,omitempty"`
	ConnectSeconds      float64 `json:"connect_s"`
	PublishSeconds      float64 `json:"publish_s"`
	DeliverySeconds     float64 `json:"delivery_s"`
	Channels            int     `json:"channels,omitempty"`
	EventsPerS          float64 `json:"events_per_s,omitempty"` // events published and delivered per second, with -channels
	// CPU used from the first publish to the last delivery, in cores (CPU
	// seconds per second): the relay, the broker servers, this tool.
	RelayCores  float64 `json:"relay_cores,omitempty"`
	BrokerCores float64 `json:"broker_cores,omitempty"`
	ClientCores float64 `json:"client_cores,omitempty"`
	Proto       string  `json:"proto,omitempty"`
	StopSeconds float64 `json:"stop_s,omitempty"` // caddy stop with the streams open
}

func main() {
	var c config
	var floorAddr, referenceAddr string
	var suite bool
	var caddyBin, only string
	var rounds int
	flag.StringVar(&c.Target, "target", "http://127.0.0.1:8080/events/bench", "stream URL")
	flag.StringVar(&c.Publish, "publish", "http", "http, postgres, redis or redis-cluster")
	flag.StringVar(&c.PublishURL, "publish-url", "", "POST URL for -publish http (default: -target)")
	flag.StringVar(&c.Key, "key", os.Getenv("SSE_RELAY_PUBLISH_KEY"), "publish key")
	flag.StringVar(&c.PG, "pg", "", "Postgres URL for -publish postgres")
	flag.StringVar(&c.Redis, "redis", "", "Redis URL for -publish redis")
	flag.StringVar(&c.Cluster, "cluster", "", "redis-cluster:// URL for -publish redis-cluster (SPUBLISH)")
	flag.StringVar(&c.Channel, "channel", "bench", "channel")
	flag.IntVar(&c.Channels, "channels", 1, "spread subscribers and events over this many channels, <channel>.<i>")
	flag.StringVar(&c.Proto, "proto", "h1", "h1 (clear text), h2 or h3 (an https:// target)")
	flag.IntVar(&c.Subs, "subs", 1000, "subscribers")
	flag.IntVar(&c.Events, "events", 100, "events to publish")
	flag.Float64Var(&c.Rate, "rate", 0, "events per second; 0 publishes flat out")
	flag.IntVar(&c.Sources, "sources", 8, "loopback source addresses to spread connections over")
	flag.IntVar(&c.PID, "pid", 0, "relay process id, to report its RSS")
	flag.DurationVar(&c.Timeout, "timeout", 60*time.Second, "give up waiting for deliveries after this")
	flag.IntVar(&c.Publishers, "publishers", 4, "concurrent publishers when flat out")
	flag.DurationVar(&c.Hold, "hold", 0, "keep the streams open this long after the run, e.g. to take a profile")
	flag.StringVar(&floorAddr, "serve-floor", "", "run the floor server on this address instead")
	flag.StringVar(&referenceAddr, "serve-reference", "", "run the plain net/http HTTP/2 and HTTP/3 server on this address instead (relaying -channel from -redis, if given)")
	flag.BoolVar(&suite, "suite", false, "run the PERFORMANCE.md table (starts Caddy, Postgres, the floor)")
	flag.StringVar(&caddyBin, "caddy", "bin/caddy", "Caddy binary for -suite")
	flag.StringVar(&only, "only", "", "with -suite, run only the rows whose name contains this")
	flag.IntVar(&rounds, "rounds", 3, "with -suite, runs of each row (relay and the other alternating); the table gives medians")
	flag.Parse()
	raiseFileLimit()

	var err error
	switch {
	case floorAddr != "":
		err = serveFloor(floorAddr)
	case referenceAddr != "":
		err = serveReference(referenceAddr, c.Redis, c.Channel)
	case suite:
		err = runSuite(caddyBin, only, rounds)
	default:
		var r result
		r, err = run(context.Background(), c)
		if err == nil {
			json.NewEncoder(os.Stdout).Encode(r)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "ssebench:", err)
		os.Exit(1)
	}
}

func raiseFileLimit() {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) == nil {
		l.Cur = l.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
}

// subscriber counts what one stream received.
type subscriber struct {
	seen []uint64 // bitmap of event numbers
}

type load struct {
	c          config
	lat        hist
	delivered  atomic.Uint64
	duplicates atomic.Uint64
	lastAt     atomic.Int64
	connected  atomic.Int64
	lanes      *lanes // the clients of an h2 or h3 run
}

func run(ctx context.Context, c config) (result, error) {
	if c.PublishURL == "" {
		c.PublishURL = c.Target
	}
	l := &load{c: c}
	if c.Proto != "" && c.Proto != "h1" {
		var err error
		if l.lanes, err = newLanes(c.Proto, c.Subs, c.Sources); err != nil {
			return result{}, err
		}
		defer l.lanes.close()
	}
	rssIdle := rss(c.PID)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	ready := make(chan error, c.Subs)
	sem := make(chan struct{}, 256)
	for i := 0; i < c.Subs; i++ {
		sem <- struct{}{}
		go func() {
			err := l.subscribe(ctx, i, ready)
			<-sem
			if err != nil {
				ready <- err
			}
		}()
	}
	var firstErr error
	for i := 0; i < c.Subs; i++ {
		if err := <-ready; err != nil && firstErr == nil {
			firstErr = err
		}
	}
	connectTime := time.Since(start)
	if firstErr != nil {
		return result{}, fmt.Errorf("%d of %d subscribers connected; first error: %w", l.connected.Load(), c.Subs, firstErr)
	}
	time.Sleep(500 * time.Millisecond) // let the relay settle before measuring memory
	rssLoaded := rss(c.PID)
	var rssSettled int64
	if c.Admin != "" && c.PID > 0 {
		rssSettled = settledRSS(c.Admin, c.PID)
	}

	cpuStart := l.cpu()
	pubStart := time.Now()
	if err := l.publish(ctx); err != nil {
		return result{}, err
	}
	pubTime := time.Since(pubStart)
	expected := l.expected()
	deadline := time.Now().Add(c.Timeout)
	for l.delivered.Load() < expected && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cpuEnd, wall := l.cpu(), time.Since(pubStart)
	span := time.Duration(l.lastAt.Load() - pubStart.UnixNano())
	r := result{
		Subscribers: c.Subs, Connected: int(l.connected.Load()), Events: c.Events,
		Delivered: l.delivered.Load(), Expected: expected, Duplicates: l.duplicates.Load(),
		P50ms: ms(l.lat.quantile(0.5)), P90ms: ms(l.lat.quantile(0.9)), P99ms: ms(l.lat.quantile(0.99)),
		Maxms:          ms(time.Duration(l.lat.max.Load())),
		ConnectSeconds: connectTime.Seconds(), PublishSeconds: pubTime.Seconds(), DeliverySeconds: span.Seconds(),
	}
	if span > 0 {
		r.DeliveriesPerS = float64(r.Delivered) / span.Seconds()
	}
	if c.Channels > 1 {
		r.Channels = c.Channels
		if span > 0 && r.Delivered == expected {
			r.EventsPerS = float64(c.Events) / span.Seconds()
		}
	}
	r.RelayCores = (cpuEnd.relay - cpuStart.relay) / wall.Seconds()
	r.BrokerCores = (cpuEnd.broker - cpuStart.broker) / wall.Seconds()
	r.ClientCores = (cpuEnd.client - cpuStart.client) / wall.Seconds()
	if rssIdle > 0 && rssLoaded > 0 {
		r.RSSIdleMiB = float64(rssIdle) / (1 << 20)
		r.RSSLoadedMiB = float64(rssLoaded) / (1 << 20)
		r.RSSPerSubKiB = float64(rssLoaded-rssIdle) / float64(c.Subs) / 1024
	}
	if rssIdle > 0 && rssSettled > 0 {
		r.RSSSettledMiB = float64(rssSettled) / (1 << 20)
		r.RSSSettledPerSubKiB = float64(rssSettled-rssIdle) / float64(c.Subs) / 1024
	}
	r.BrokerConns = brokerConns(c)
	r.Proto = c.Proto
	time.Sleep(c.Hold)
	if c.Stop != nil {
		took, err := c.Stop()
		if err != nil {
			return r, err
		}
		r.StopSeconds = took.Seconds()
	}
	return r, nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// channel is the channel of subscriber or event i.
func (l *load) channel(i int) string {
	if l.c.Channels <= 1 {
		return l.c.Channel
	}
	return l.c.Channel + "." + strconv.Itoa(i%l.c.Channels)
}

// onChannel is url with its last path segment, the channel, set to ch.
func onChannel(url, ch string) string {
	return url[:strings.LastIndexByte(url, '/')+1] + ch
}

// expected is the deliveries the run should make: each subscriber gets
// the events of its channel.
func (l *load) expected() uint64 {
	if l.c.Channels <= 1 {
		return uint64(l.c.Subs) * uint64(l.c.Events)
	}
	var n uint64
	for i := range l.c.Subs {
		k := i % l.c.Channels
		n += uint64(l.c.Events / l.c.Channels)
		if k < l.c.Events%l.c.Channels {
			n++
		}
	}
	return n
}

// cpuUse is CPU seconds used so far.
type cpuUse struct{ relay, broker, client float64 }

func (l *load) cpu() cpuUse {
	u := cpuUse{relay: cpuSeconds(l.c.PID), client: cpuSeconds(os.Getpid())}
	for _, pid := range l.c.BrokerPIDs {
		u.broker += cpuSeconds(pid)
	}
	return u
}

// cpuSeconds is the user and system time a process has used, or 0.
func cpuSeconds(pid int) float64 {
	if pid <= 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses: utime and
	// stime are the 12th and 13th, in clock ticks (100 a second on Linux).
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100
}

// subscribe opens stream i and reads it until ctx ends: over HTTP/1.1 by
// hand from a rotating loopback source address, over HTTP/2 or HTTP/3
// through the run's lanes.
func (l *load) subscribe(ctx context.Context, i int, ready chan<- error) error {
	if l.lanes != nil {
		return l.subscribeHTTP(ctx, i, ready)
	}
	u, err := urlParts(l.c.Target)
	if err != nil {
		return err
	}
	d := net.Dialer{Timeout: 10 * time.Second}
	if l.c.Sources > 0 {
		d.LocalAddr = &net.TCPAddr{IP: source(i % l.c.Sources)}
	}
	conn, err := d.DialContext(ctx, "tcp", u.host)
	if err != nil {
		return err
	}
	context.AfterFunc(ctx, func() { conn.Close() })
	path := u.path
	if l.c.Channels > 1 {
		path = onChannel(path, l.channel(i))
	}
	resume := ""
	if l.c.ResumeFrom != "" {
		resume = "Last-Event-ID: " + l.c.ResumeFrom + "\r\n"
	}
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n%s\r\n", path, u.host, resume)
	br := bufio.NewReaderSize(conn, 4096)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		conn.Close()
		return err
	}
	return l.read(resp, conn, ready)
}

// subscribeHTTP opens stream i through its lane's client.
func (l *load) subscribeHTTP(ctx context.Context, i int, ready chan<- error) error {
	url := l.c.Target
	if l.c.Channels > 1 {
		url = onChannel(url, l.channel(i))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "text/event-stream")
	if l.c.ResumeFrom != "" {
		req.Header.Set("Last-Event-ID", l.c.ResumeFrom)
	}
	resp, err := l.lanes.client(i).Do(req)
	if err != nil {
		return err
	}
	if want := map[string]int{"h2": 2, "h3": 3}[l.c.Proto]; resp.ProtoMajor != want {
		resp.Body.Close()
		return fmt.Errorf("GET %s: answered over %s, not %s", url, resp.Proto, l.c.Proto)
	}
	return l.read(resp, resp.Body, ready)
}

// read checks resp, reads the stream's first line, reports it ready and
// counts its events from a goroutine of its own until the stream ends;
// closer closes the stream.
func (l *load) read(resp *http.Response, closer io.Closer, ready chan<- error) error {
	if resp.StatusCode != 200 {
		closer.Close()
		return fmt.Errorf("GET %s: %s", l.c.Target, resp.Status)
	}
	// Chunked and HTTP/2 and /3 framing are undone by the clients; the
	// first line is the relay's ": ok".
	events := sseclient.NewReader(bufio.NewReaderSize(resp.Body, 2048))
	if _, err := events.Line(); err != nil {
		closer.Close()
		return err
	}
	l.connected.Add(1)
	ready <- nil
	s := subscriber{seen: make([]uint64, (l.c.Events+63)/64)}
	go func() {
		defer closer.Close()
		for {
			data, err := events.NextData()
			if err != nil {
				return
			}
			l.record(&s, data)
		}
	}()
	return nil
}

// record takes "<n> <unix-nanos>".
func (l *load) record(s *subscriber, data []byte) {
	now := time.Now().UnixNano()
	sp := strings.IndexByte(string(data), ' ')
	if sp < 0 {
		return
	}
	n, err1 := strconv.Atoi(string(data[:sp]))
	sent, err2 := strconv.ParseInt(string(data[sp+1:]), 10, 64)
	if err1 != nil || err2 != nil || n < 0 || n >= l.c.Events {
		return
	}
	if s.seen[n/64]&(1<<(n%64)) != 0 {
		l.duplicates.Add(1)
		return
	}
	s.seen[n/64] |= 1 << (n % 64)
	l.lat.record(time.Duration(now - sent))
	l.delivered.Add(1)
	l.lastAt.Store(now)
}

type parts struct{ host, path string }

func urlParts(raw string) (parts, error) {
	rest, ok := strings.CutPrefix(raw, "http://")
	if !ok {
		return parts{}, fmt.Errorf("target %q: only http:// is supported", raw)
	}
	host, path, _ := strings.Cut(rest, "/")
	return parts{host: host, path: "/" + path}, nil
}

// publish sends the events at the configured rate, or flat out.
func (l *load) publish(ctx context.Context) error {
	send, closeFn, err := l.publisher(ctx)
	if err != nil {
		return err
	}
	defer closeFn()
	payload := func(n int) string {
		return fmt.Sprintf(`{"data":"%d %d"}`, n, time.Now().UnixNano())
	}
	if l.c.Rate > 0 {
		tick := time.NewTicker(time.Duration(float64(time.Second) / l.c.Rate))
		defer tick.Stop()
		for n := 0; n < l.c.Events; n++ {
			<-tick.C
			if err := send(l.channel(n), payload(n)); err != nil {
				return err
			}
		}
		return nil
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, l.c.Publishers)
	for p := 0; p < max(1, l.c.Publishers); p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				n := int(next.Add(1) - 1)
				if n >= l.c.Events {
					return
				}
				if err := send(l.channel(n), payload(n)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

func (l *load) publisher(ctx context.Context) (func(ch, payload string) error, func(), error) {
	switch l.c.Publish {
	case "http":
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64,
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} // tls internal
		return func(ch, p string) error {
			url := l.c.PublishURL
			if l.c.Channels > 1 {
				url = onChannel(url, ch)
			}
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(p))
			req.Header.Set("Authorization", "Bearer "+l.c.Key)
			resp, err := client.Do(req)
			if err != nil {
				return err
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusAccepted {
				return fmt.Errorf("publish: %s", resp.Status)
			}
			return nil
		}, func() {}, nil
	case "postgres":
		cfg, err := pgxpool.ParseConfig(l.c.PG)
		if err != nil {
			return nil, nil, err
		}
		cfg.MaxConns = int32(max(1, l.c.Publishers))
		pool, err := pgxpool.NewWithConfig(ctx, cfg)
		if err != nil {
			return nil, nil, err
		}
		publish := "SELECT pg_notify($1, $2)"
		if l.c.History > 0 {
			publish = "SELECT sse_relay.publish($1, $2)"
		}
		if !l.c.AppTx {
			return func(ch, p string) error {
				_, err := pool.Exec(ctx, publish, ch, p)
				return err
			}, pool.Close, nil
		}
		// As an application publishes: in the transaction that writes the
		// change the event announces, here one row of bench_app.
		if _, err := pool.Exec(ctx, "CREATE TABLE IF NOT EXISTS bench_app (id bigserial PRIMARY KEY, note text)"); err != nil {
			pool.Close()
			return nil, nil, err
		}
		return func(ch, p string) error {
			return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
				if _, err := tx.Exec(ctx, "INSERT INTO bench_app (note) VALUES ($1)", p); err != nil {
					return err
				}
				_, err := tx.Exec(ctx, publish, ch, p)
				return err
			})
		}, pool.Close, nil
	case "redis":
		opt, err := redis.ParseURL(l.c.Redis)
		if err != nil {
			return nil, nil, err
		}
		opt.PoolSize = max(opt.PoolSize, l.c.Publishers)
		rc := redis.NewClient(opt)
		if l.c.History > 0 {
			return func(ch, p string) error {
				return rc.FCall(ctx, "sse_relay_publish", []string{broker.RedisLogKey(ch)}, p, l.c.History, 0).Err()
			}, func() { rc.Close() }, nil
		}

		return func(ch, p string) error { return rc.Publish(ctx, ch, p).Err() }, func() { rc.Close() }, nil
	case "redis-cluster":
		rc, err := clusterClient(l.c.Cluster)
		if err != nil {
			return nil, nil, err
		}
		// Each channel's primary, looked up once: SPUBLISH then costs the
		// tool what PUBLISH to one Redis does, rather than the cluster
		// client's routing of every command.
		var mu sync.Mutex
		primaries := map[string]*redis.Client{}
		return func(ch, p string) error {
			mu.Lock()
			node := primaries[ch]
			mu.Unlock()
			if node == nil {
				var err error
				if node, err = rc.MasterForKey(ctx, ch); err != nil {
					return err
				}
				mu.Lock()
				primaries[ch] = node
				mu.Unlock()
			}
			return node.SPublish(ctx, ch, p).Err()
		}, func() { rc.Close() }, nil
	}
	return nil, nil, fmt.Errorf("-publish %q: want http, postgres, redis or redis-cluster", l.c.Publish)
}

// settledRSS forces two GCs in the relay through its admin endpoint (a
// goroutine's stack shrinks by half at most once a GC), then reads its RSS
// every half second for 12 s and returns the least: the runtime returns
// freed memory to the system gradually, over seconds.
func settledRSS(admin string, pid int) int64 {
	if err := testsrv.ForceGC("http://"+admin, 2); err != nil {
		return 0
	}
	least := rss(pid)
	for range 24 {
		time.Sleep(500 * time.Millisecond)
		least = min(least, rss(pid))
	}
	return least
}

// rss is a process's resident set size in bytes, or 0.
func rss(pid int) int64 {
	if pid <= 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// clusterClient is a go-redis cluster client for a redis-cluster:// URL.
func clusterClient(url string) (*redis.ClusterClient, error) {
	scheme, rest, _ := strings.Cut(url, "://")
	opt, err := redis.ParseClusterURL(strings.TrimSuffix(scheme, "-cluster") + "://" + rest)
	if err != nil {
		return nil, err
	}
	return redis.NewClusterClient(opt), nil
}

// brokerConns counts the relay's broker connections, where it can.
func brokerConns(c config) int {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	switch {
	case c.PG != "":
		conn, err := pgx.Connect(ctx, c.PG)
		if err != nil {
			return -1
		}
		defer conn.Close(ctx)
		var n int
		if conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE application_name = 'caddy-sse-relay'`).Scan(&n) != nil {
			return -1
		}
		return n
	case c.Redis != "":
		opt, _ := redis.ParseURL(c.Redis)
		rc := redis.NewClient(opt)
		defer rc.Close()
		list, err := rc.ClientList(ctx).Result()
		if err != nil {
			return -1
		}
		n := 0
		for _, l := range strings.Split(list, "\n") {
			if strings.Contains(l, "name=caddy-sse-relay") && !strings.Contains(l, " sub=0 ") {
				n++
			}
		}
		return n
	case c.Cluster != "":
		rc, err := clusterClient(c.Cluster)
		if err != nil {
			return -1
		}
		defer rc.Close()
		var mu sync.Mutex
		n := 0
		err = rc.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
			list, err := node.ClientList(ctx).Result()
			mu.Lock()
			n += testsrv.RelayPubSub(list)
			mu.Unlock()
			return err
		})
		if err != nil {
			return -1
		}
		return n
	}
	return 0
}
