package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/sse-relay/caddy-sse-relay/internal/testsrv"
)

// scenario is one row of the table: the same load against the relay and
// against the floor, or the row's other mode.
type scenario struct {
	name     string
	subs     int
	events   int
	rate     float64
	channels int // spread over this many channels (default 1)
	pubs     int // concurrent publishers when flat out (default 4)
	replicas int // with publish redis-cluster: replicas per primary
	// publish is the relay side's broker: http (memory broker, publishing
	// with POST), postgres, redis-cluster, or redis, which the h2 and h3
	// rows' reference relays from too, so that 20 events published at
	// once reach both servers as fast as the broker can carry them.
	publish string
	vsFloor bool // a postgres row compared with the floor rather than the memory broker
	// proto is how the streams are read: h1 (clear text, the default),
	// h2 or h3 over TLS. An h2 row is compared with the plain net/http
	// server over HTTP/2, an h3 row with the relay over HTTP/2.
	proto string
	// relayHTTP2 has the relay serve HTTP/2 connections itself (the
	// sse_relay listener wrapper) instead of Caddy.
	relayHTTP2 bool
	// timeStop times caddy stop with the streams open (relay modes).
	timeStop bool
	metrics  []string // what the row compares; the first is its ratio
}

var scenarios = []scenario{
	{name: "fan-out 10k flat out", subs: 10000, events: 200, metrics: []string{"deliveries/s"}},
	{name: "latency 1k at 20/s", subs: 1000, events: 200, rate: 20, metrics: []string{"p99"}},
	{name: "idle 19k on postgres", subs: 19000, events: 1, publish: "postgres", vsFloor: true, metrics: []string{"rss/sub"}},
	{name: "postgres 1k at 20/s", subs: 1000, events: 200, rate: 20, publish: "postgres", metrics: []string{"p50 vs memory"}},
	// The relay on a Redis Cluster of 3 primaries, with and without a
	// replica each, publishing with SPUBLISH, against the relay on one
	// Redis with PUBLISH: the same subscribers, channels and events.
	{name: "redis cluster 3+3 1k on 100 channels flat out", subs: 1000, events: 100000, channels: 100, pubs: 32,
		publish: "redis-cluster", replicas: 1, metrics: []string{"events/s vs one redis"}},
	{name: "redis cluster 3+0 1k on 100 channels flat out", subs: 1000, events: 100000, channels: 100, pubs: 32,
		publish: "redis-cluster", replicas: 0, metrics: []string{"events/s vs one redis"}},
	// One node's load at a steady rate: what each event costs the relay.
	{name: "redis cluster 3+3 1k on 100 channels at 1000/s", subs: 1000, events: 10000, rate: 1000, channels: 100,
		publish: "redis-cluster", replicas: 1, metrics: []string{"relay cpu per event vs one redis"}},
	// What browsers use when Caddy serves TLS: HTTP/2, and HTTP/3 once
	// they have seen Alt-Svc.
	{name: "h2 idle 50k, 20 events at once", publish: "redis", subs: 50000, events: 20, proto: "h2", timeStop: true,
		metrics: []string{"rss/sub", "rss/sub settled", "deliveries/s", "stop"}},
	{name: "h2 latency 1k at 20/s", publish: "redis", subs: 1000, events: 200, rate: 20, proto: "h2", metrics: []string{"p99"}},
	{name: "h3 10k, 20 events at once", publish: "redis", subs: 10000, events: 20, proto: "h3",
		metrics: []string{"rss/sub", "rss/sub settled", "deliveries/s", "p99"}},
	{name: "h2 100k, 20 events at once", publish: "redis", subs: 100000, events: 20, proto: "h2",
		metrics: []string{"rss", "rss settled", "delivery time"}},
	// The same with the relay serving HTTP/2 (listener_wrappers { sse_relay }).
	{name: "h2 idle 50k, 20 events at once, the relay serving HTTP/2", publish: "redis", subs: 50000, events: 20,
		proto: "h2", relayHTTP2: true, timeStop: true, metrics: []string{"rss/sub", "rss/sub settled", "deliveries/s", "stop"}},
	{name: "h2 latency 1k at 20/s, the relay serving HTTP/2", publish: "redis", subs: 1000, events: 200, rate: 20,
		proto: "h2", relayHTTP2: true, metrics: []string{"p99"}},
	{name: "h2 100k, 20 events at once, the relay serving HTTP/2", publish: "redis", subs: 100000, events: 20,
		proto: "h2", relayHTTP2: true, metrics: []string{"rss", "rss settled", "delivery time"}},
}

func runSuite(caddyBin, only string, rounds int) error {
	caddyBin, err := filepath.Abs(caddyBin)
	if err != nil {
		return err
	}
	var b brokers
	defer b.stop()
	if only == "" || strings.HasPrefix(only, "history") {
		pg, err := testsrv.StartPostgres()
		if err != nil {
			return err
		}
		defer pg.Stop()
		rd, err := testsrv.StartRedisFsync("everysec")
		if err != nil {
			return err
		}
		defer rd.Stop()
		if err := runHistorySuite(caddyBin, pg.URL(), rd.URL(), rounds); err != nil {
			return err
		}
		if only != "" {
			return nil
		}
	}
	all := map[string][]result{}
	for _, sc := range scenarios {
		if only != "" && !strings.Contains(sc.name, only) {
			continue
		}
		if err := b.start(sc); err != nil {
			return err
		}
		for round := 0; round < rounds; round++ {
			for _, mode := range []string{"relay", sc.other()} {
				r, err := runOne(caddyBin, &b, sc, mode)
				if err != nil {
					return fmt.Errorf("%s (%s): %w", sc.name, mode, err)
				}
				r.Mode = sc.name + " / " + mode
				line, _ := json.Marshal(r)
				fmt.Println(string(line))
				all[r.Mode] = append(all[r.Mode], r)
			}
		}
	}
	printTable(all)
	return nil
}

// other is the mode a row compares the relay with.
func (sc scenario) other() string {
	switch {
	case sc.publish == "redis-cluster":
		return "relay-redis" // the relay on one Redis
	case sc.publish == "postgres" && !sc.vsFloor:
		return "relay-memory"
	case sc.proto == "h2":
		return "reference" // plain net/http
	case sc.proto == "h3":
		return "relay-h2"
	}
	return "floor"
}

// brokers are the servers the rows need, started on first use.
type brokers struct {
	pg       *testsrv.Postgres
	redis    *testsrv.Redis
	clusters map[int]*testsrv.RedisCluster // by replicas per primary
}

// start starts what sc needs; a row's cluster runs alone, the others'
// stopped, so that their replicas take no CPU from it.
func (b *brokers) start(sc scenario) error {
	var err error
	switch {
	case sc.publish == "postgres" && b.pg == nil:
		b.pg, err = testsrv.StartPostgres()
	case sc.publish == "redis" && b.redis == nil:
		b.redis, err = testsrv.StartRedis()
	case sc.publish == "redis-cluster":
		if b.redis == nil {
			if b.redis, err = testsrv.StartRedis(); err != nil {
				return err
			}
		}
		for n, c := range b.clusters {
			c.Stop()
			delete(b.clusters, n)
		}
		var c *testsrv.RedisCluster
		if c, err = testsrv.StartRedisCluster(3, sc.replicas); err == nil {
			b.clusters = map[int]*testsrv.RedisCluster{sc.replicas: c}
		}
	}
	return err
}

// redisURL is the Redis that sc's servers relay from, if any.
func (b *brokers) redisURL(sc scenario) string {
	if sc.publish != "redis" {
		return ""
	}
	return b.redis.URL()
}

func (b *brokers) stop() {
	if b.pg != nil {
		b.pg.Stop()
	}
	if b.redis != nil {
		b.redis.Stop()
	}
	for _, c := range b.clusters {
		c.Stop()
	}
}

// server is a Caddy, floor or reference process under load.
type server struct {
	cmd    *exec.Cmd
	target string
	pubURL string
	admin  string // Caddy's admin address
}

func (s *server) stop() {
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
}

// caddyStop is what caddy stop does, with the streams open: POST /stop to
// the admin API. It returns once the process has exited.
func (s *server) caddyStop() (time.Duration, error) {
	start := time.Now()
	resp, err := http.Post("http://"+s.admin+"/stop", "", nil)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("POST /stop: %s", resp.Status)
	}
	_ = s.cmd.Wait()
	return time.Since(start), nil
}

// proto is the protocol of mode's streams.
func (sc scenario) protoOf(mode string) string {
	if mode == "relay-h2" {
		return "h2"
	}
	if sc.proto == "" {
		return "h1"
	}
	return sc.proto
}

func runOne(caddyBin string, b *brokers, sc scenario, mode string) (result, error) {
	broker := "memory://"
	switch {
	case mode == "relay" && sc.publish == "postgres":
		broker = b.pg.URL()
	case mode == "relay" && sc.publish == "redis-cluster":
		broker = b.clusters[sc.replicas].URL()
	case mode == "relay-redis" || (sc.publish == "redis" && mode != "floor"):
		broker = b.redis.URL()
	}
	proto := sc.protoOf(mode)
	var srv *server
	var err error
	switch mode {
	case "floor":
		srv, err = startFloor()
	case "reference":
		srv, err = startReference(b.redisURL(sc))
	default:
		global := ""
		if sc.relayHTTP2 && mode == "relay" {
			global = testsrv.RelayHTTP2
		}
		srv, err = startCaddyOver(caddyBin, broker, "", proto, global)
	}
	if err != nil {
		return result{}, err
	}
	defer srv.stop()
	c := config{
		Target: srv.target, PublishURL: srv.pubURL, Publish: "http", Key: benchKey, Channel: "bench",
		Subs: sc.subs, Events: sc.events, Rate: sc.rate, Sources: 16, PID: srv.cmd.Process.Pid,
		Timeout: 60 * time.Second, Publishers: 4, Channels: sc.channels, Proto: proto,
	}
	if sc.pubs > 0 {
		c.Publishers = sc.pubs
	}
	if sc.timeStop && srv.admin != "" {
		c.Stop = srv.caddyStop
	}
	if slices.Contains(sc.metrics, "rss/sub settled") || slices.Contains(sc.metrics, "rss settled") {
		c.Admin = srv.admin // relay modes only: the reference has no admin endpoint
	}
	switch {
	case mode == "relay" && sc.publish == "postgres":
		c.Publish, c.PG = "postgres", b.pg.URL()
	case mode == "relay" && sc.publish == "redis-cluster":
		c.Publish, c.Cluster = "redis-cluster", b.clusters[sc.replicas].URL()
		for _, n := range b.clusters[sc.replicas].Nodes {
			c.BrokerPIDs = append(c.BrokerPIDs, n.PID())
		}
	case mode == "relay-redis" || sc.publish == "redis":
		c.Publish, c.Redis, c.BrokerPIDs = "redis", b.redis.URL(), []int{b.redis.PID()}
	}
	return run(context.Background(), c)
}

func startFloor() (*server, error) {
	return startSelf("-serve-floor", "http")
}

// startReference runs the plain net/http server, relaying from Redis
// when redisURL is set.
func startReference(redisURL string) (*server, error) {
	if redisURL == "" {
		return startSelf("-serve-reference", "https")
	}
	return startSelf("-serve-reference", "https", "-redis", redisURL, "-channel", "bench")
}

// startSelf runs this tool with flag, a server, on a free port.
func startSelf(flag, scheme string, more ...string) (*server, error) {
	port, err := testsrv.FreePort()
	if err != nil {
		return nil, err
	}
	self, _ := os.Executable()
	cmd := exec.Command(self, append([]string{flag, fmt.Sprintf("127.0.0.1:%d", port)}, more...)...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	base := fmt.Sprintf("%s://127.0.0.1:%d", scheme, port)
	s := &server{cmd: cmd, target: base + "/events/bench", pubURL: base + "/publish"}
	return s, waitServing(base)
}

// benchKey is the relay's publish_key in the suite: 32 bytes or more, as
// the relay requires.
const benchKey = "ssebench-publish-key-0123456789abcdef"

// startCaddy runs the relay on broker with more sse_relay lines, if any,
// over HTTP/1.1 in clear text.
func startCaddy(bin, broker, extra string) (*server, error) {
	return startCaddyOver(bin, broker, extra, "h1", "")
}

// startCaddyOver runs the relay serving proto: h1 in clear text, or h2
// and h3 over TLS from Caddy's internal CA, as a site with tls internal;
// global holds more global options.
func startCaddyOver(bin, broker, extra, proto, global string) (*server, error) {
	adminPort, _ := testsrv.FreePort()
	port, err := testsrv.FreePort()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "ssebench-")
	if err != nil {
		return nil, err
	}
	scheme, site := "http", fmt.Sprintf("http_port %d", port)
	if proto != "h1" {
		scheme, site = "https", fmt.Sprintf("https_port %d\n\tauto_https disable_redirects\n\tskip_install_trust", port)
	}
	base := fmt.Sprintf("%s://127.0.0.1:%d", scheme, port)
	cfg := fmt.Sprintf(`{
	admin 127.0.0.1:%d
	%s
	# 127.0.0.1 only: clients on 127.0.0.2… hold ephemeral ports that a
	# wildcard bind would collide with.
	default_bind 127.0.0.1
	persist_config off
	log {
		level ERROR
	}
	%s
}
%s {
	%s
	sse_relay /events/* {
		broker %s
		publish_key %s
		max_connections 200000
		max_connections_per_ip 200000
		%s
	}
}
`, adminPort, site, global, base, map[bool]string{true: "tls internal"}[proto != "h1"], broker, benchKey, extra)
	path := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "run", "--config", path, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	url := base + "/events/bench"
	s := &server{cmd: cmd, target: url, pubURL: url, admin: fmt.Sprintf("127.0.0.1:%d", adminPort)}
	return s, waitServing(base)
}

// waitServing waits until something answers at base.
func waitServing(base string) error {
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, // tls internal
	}}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := client.Get(base + "/")
		if err == nil {
			resp.Body.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("nothing answers at %s", base)
}

func median(rs []result, f func(result) float64) float64 {
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = f(r)
	}
	sort.Float64s(v)
	return v[len(v)/2]
}

// metric is one figure of a row: how to read it off a run, and its unit.
type metric struct {
	value func(result) float64
	unit  string
}

var metrics = map[string]metric{
	"deliveries/s": {func(r result) float64 { return r.DeliveriesPerS }, "deliveries/s"},
	"p99":          {func(r result) float64 { return r.P99ms }, "ms p99"},
	"rss/sub":      {func(r result) float64 { return r.RSSPerSubKiB }, "KiB RSS per subscriber"},
	"rss":          {func(r result) float64 { return r.RSSLoadedMiB }, "MiB RSS with the streams open"},
	"rss/sub settled": {func(r result) float64 { return r.RSSSettledPerSubKiB },
		"KiB RSS per subscriber after two GCs and the runtime returning what they freed (relay only)"},
	"rss settled": {func(r result) float64 { return r.RSSSettledMiB },
		"MiB RSS with the streams open, after two GCs (relay only)"},
	"delivery time": {func(r result) float64 { return r.DeliverySeconds }, "s from the first publish to the last delivery"},
	"stop":          {func(r result) float64 { return r.StopSeconds }, "s for caddy stop with the streams open (relay only)"},
	"events/s vs one redis": {func(r result) float64 { return r.EventsPerS },
		"events/s (other column: one Redis)"},
	"relay cpu per event vs one redis": {func(r result) float64 { return r.RelayCores / r.EventsPerS * 1e6 },
		"µs of relay CPU per event, lower is better (other column: one Redis)"},
	"p50 vs memory": {func(r result) float64 { return r.P50ms }, "ms p50 (other column: memory broker)"},
}

func printTable(all map[string][]result) {
	var b strings.Builder
	fmt.Fprintf(&b, "\n| scenario | relay | other | ratio (relay/other) |\n|---|---|---|---|\n")
	for _, sc := range scenarios {
		relay := all[sc.name+" / relay"]
		if len(relay) == 0 {
			continue
		}
		other := all[sc.name+" / "+sc.other()]
		for i, name := range sc.metrics {
			m := metrics[name]
			rv, ov := median(relay, m.value), median(other, m.value)
			ratio := "relay only"
			if ov != 0 {
				ratio = fmt.Sprintf("%.2f×", rv/ov)
			}
			row := sc.name
			if i > 0 {
				row = ""
			}
			fmt.Fprintf(&b, "| %s | %.3g | %.3g | %s (%s vs %s, median of %d; %s; relay broker connections %d) |\n",
				row, rv, ov, ratio, m.unit, sc.other(), len(relay), delivered(relay, other), relay[0].BrokerConns)
		}
		if sc.publish == "redis-cluster" {
			// Where the two cores went: relay, broker servers, load tool.
			cores := func(rs []result) string {
				return fmt.Sprintf("relay %.2f, brokers %.2f, load tool %.2f cores; relay %.0f µs CPU per event; p50 %.1f, p99 %.1f ms",
					median(rs, func(r result) float64 { return r.RelayCores }),
					median(rs, func(r result) float64 { return r.BrokerCores }),
					median(rs, func(r result) float64 { return r.ClientCores }),
					median(rs, func(r result) float64 { return r.RelayCores / r.EventsPerS * 1e6 }),
					median(rs, func(r result) float64 { return r.P50ms }),
					median(rs, func(r result) float64 { return r.P99ms }))
			}
			fmt.Fprintf(&b, "|  | %s | %s | |\n", cores(relay), cores(other))
		}
	}
	fmt.Print(b.String())
}

// delivered says whether every run delivered every event.
func delivered(relay, other []result) string {
	missed := func(rs []result) string {
		for _, r := range rs {
			if r.Delivered != r.Expected {
				return fmt.Sprintf("%d of %d delivered in a run", r.Delivered, r.Expected)
			}
		}
		return "all delivered"
	}
	return "relay " + missed(relay) + ", other " + missed(other)
}
