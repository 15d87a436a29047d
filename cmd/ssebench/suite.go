package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/sse-relay/caddy-sse-relay/internal/testsrv"
)

// scenario is one row of the table: the same load against the relay and
// against the floor.
type scenario struct {
	name    string
	subs    int
	events  int
	rate    float64
	publish string // relay side: http (memory broker) or postgres
	vsFloor bool   // a postgres row compared with the floor rather than the memory broker
	metric  string // what the row compares
}

var scenarios = []scenario{
	{name: "fan-out 10k flat out", subs: 10000, events: 200, metric: "deliveries/s"},
	{name: "latency 1k at 20/s", subs: 1000, events: 200, rate: 20, metric: "p99"},
	{name: "idle 19k on postgres", subs: 19000, events: 1, publish: "postgres", vsFloor: true, metric: "rss/sub"},
	{name: "postgres 1k at 20/s", subs: 1000, events: 200, rate: 20, publish: "postgres", metric: "p50 vs memory"},
}

const rounds = 3

func runSuite(caddyBin, only string) error {
	caddyBin, err := filepath.Abs(caddyBin)
	if err != nil {
		return err
	}
	pg, err := testsrv.StartPostgres()
	if err != nil {
		return err
	}
	defer pg.Stop()
	if only == "" || strings.Contains("history", only) || strings.HasPrefix(only, "history") {
		rd, err := testsrv.StartRedisFsync("everysec")
		if err != nil {
			return err
		}
		defer rd.Stop()
		if err := runHistorySuite(caddyBin, pg.URL(), rd.URL(), only); err != nil {
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
		for round := 0; round < rounds; round++ {
			for _, mode := range []string{"relay", "floor"} {
				if sc.publish == "postgres" && !sc.vsFloor && mode == "floor" {
					mode = "relay-memory" // the comparison for this row
				}
				r, err := runOne(caddyBin, pg.URL(), sc, mode)
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

// server is a Caddy or floor process under load.
type server struct {
	cmd    *exec.Cmd
	target string
	pubURL string
}

func (s *server) stop() {
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
}

func runOne(caddyBin, pgURL string, sc scenario, mode string) (result, error) {
	var srv *server
	var err error
	if mode == "floor" {
		srv, err = startFloor()
	} else {
		broker := "memory://"
		if mode == "relay" && sc.publish == "postgres" {
			broker = pgURL
		}
		srv, err = startCaddy(caddyBin, broker, "")
	}
	if err != nil {
		return result{}, err
	}
	defer srv.stop()
	c := config{
		Target: srv.target, PublishURL: srv.pubURL, Publish: "http", Key: benchKey, Channel: "bench",
		Subs: sc.subs, Events: sc.events, Rate: sc.rate, Sources: 16, PID: srv.cmd.Process.Pid,
		Timeout: 60 * time.Second, Publishers: 4,
	}
	if mode == "relay" && sc.publish == "postgres" {
		c.Publish, c.PG = "postgres", pgURL
	}
	return run(context.Background(), c)
}

func startFloor() (*server, error) {
	port, err := testsrv.FreePort()
	if err != nil {
		return nil, err
	}
	self, _ := os.Executable()
	cmd := exec.Command(self, "-serve-floor", fmt.Sprintf("127.0.0.1:%d", port))
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &server{cmd: cmd, target: fmt.Sprintf("http://127.0.0.1:%d/events/bench", port),
		pubURL: fmt.Sprintf("http://127.0.0.1:%d/publish", port)}
	return s, waitPort(port)
}

// benchKey is the relay's publish_key in the suite: 32 bytes or more, as
// the relay requires.
const benchKey = "ssebench-publish-key-0123456789abcdef"

// startCaddy runs the relay on broker with more sse_relay lines, if any.
func startCaddy(bin, broker, extra string) (*server, error) {
	adminPort, _ := testsrv.FreePort()
	port, err := testsrv.FreePort()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "ssebench-")
	if err != nil {
		return nil, err
	}
	cfg := fmt.Sprintf(`{
	admin 127.0.0.1:%d
	http_port %d
	# 127.0.0.1 only: clients on 127.0.0.2… hold ephemeral ports that a
	# wildcard bind would collide with.
	default_bind 127.0.0.1
	persist_config off
	log {
		level ERROR
	}
}
http://127.0.0.1:%d {
	sse_relay /events/* {
		broker %s
		publish_key %s
		max_connections 100000
		max_connections_per_ip 100000
		%s
	}
}
`, adminPort, port, port, broker, benchKey, extra)
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
	url := fmt.Sprintf("http://127.0.0.1:%d/events/bench", port)
	return &server{cmd: cmd, target: url, pubURL: url}, waitPort(port)
}

func waitPort(port int) error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
		if err == nil {
			resp.Body.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("nothing answers on port %d", port)
}

func median(rs []result, f func(result) float64) float64 {
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = f(r)
	}
	sort.Float64s(v)
	return v[len(v)/2]
}

func printTable(all map[string][]result) {
	var b strings.Builder
	fmt.Fprintf(&b, "\n| scenario | relay | floor | ratio (relay/floor) |\n|---|---|---|---|\n")
	for _, sc := range scenarios {
		relay := all[sc.name+" / relay"]
		if len(relay) == 0 {
			continue
		}
		other := all[sc.name+" / floor"]
		if sc.publish == "postgres" && !sc.vsFloor {
			other = all[sc.name+" / relay-memory"]
		}
		var f func(result) float64
		var unit string
		switch sc.metric {
		case "deliveries/s":
			f, unit = func(r result) float64 { return r.DeliveriesPerS }, "deliveries/s"
		case "p99":
			f, unit = func(r result) float64 { return r.P99ms }, "ms p99"
		case "rss/sub":
			f, unit = func(r result) float64 { return r.RSSPerSubKiB }, "KiB RSS per subscriber"
		default:
			f, unit = func(r result) float64 { return r.P50ms }, "ms p50 (other column: memory broker)"
		}
		rv, ov := median(relay, f), median(other, f)
		ratio := 0.0
		if ov != 0 {
			ratio = rv / ov
		}
		fmt.Fprintf(&b, "| %s | %.3g | %.3g | %.2f× (%s, median of %d; relay broker connections %d) |\n",
			sc.name, rv, ov, ratio, unit, len(relay), relay[0].BrokerConns)
	}
	fmt.Print(b.String())
}
