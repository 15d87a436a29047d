package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sse-relay/caddy-sse-relay/broker"
	"github.com/sse-relay/caddy-sse-relay/internal/sseclient"
)

// The history rows of docs/PERFORMANCE.md: what the durable event log
// costs, each against the same load without it in the same run.
//
//   - publish: events/s that 4 publishers get through the broker, through
//     the log against plain pg_notify / PUBLISH, with a relay relaying them
//     to 100 streams. On Postgres each publish is an application's
//     transaction that writes a row and publishes (sse_relay.publish, or
//     pg_notify) with it; Redis runs with appendfsync everysec.
//   - resume: 100 streams, each resuming 1,000 events behind, on a node
//     that never saw them (so from the log): time to the last event.
//   - fan-out: 10,000 streams on Redis, 200 events flat out, with and
//     without history: deliveries/s.

const historyCount = 100000

type historyRow struct {
	name, broker, metric string
	with, without        []float64
}

func runHistorySuite(caddyBin, pgURL, redisURL string, rounds int) error {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pgURL)
	if err != nil {
		return err
	}
	_, err = conn.Exec(ctx, broker.PostgresSchema)
	conn.Close(ctx)
	if err != nil {
		return err
	}
	urls := map[string]string{"postgres": pgURL, "redis": redisURL}
	var rows []*historyRow
	for _, b := range []string{"postgres", "redis"} {
		pub := &historyRow{name: "publish through the log, " + b, broker: b, metric: "events/s"}
		res := &historyRow{name: "resume 1,000 behind on another node, " + b, broker: b, metric: "ms p99"}
		rows = append(rows, pub, res)
		for range rounds {
			for _, history := range []bool{true, false} {
				r, err := historyPublish(caddyBin, b, urls[b], history)
				if err != nil {
					return fmt.Errorf("%s: %w", pub.name, err)
				}
				pub.add(history, float64(r.Events)/r.PublishSeconds)
			}
			p99, err := historyResume(caddyBin, b, urls[b])
			if err != nil {
				return fmt.Errorf("%s: %w", res.name, err)
			}
			res.add(true, p99)
		}
	}
	fan := &historyRow{name: "fan-out 10,000 streams, 200 events, redis", broker: "redis", metric: "deliveries/s"}
	rows = append(rows, fan)
	for range rounds {
		for _, history := range []bool{true, false} {
			r, err := historyFanOut(caddyBin, redisURL, history)
			if err != nil {
				return fmt.Errorf("%s: %w", fan.name, err)
			}
			fan.add(history, r.DeliveriesPerS)
		}
	}
	printHistory(rows)
	return nil
}

func (r *historyRow) add(history bool, v float64) {
	if history {
		r.with = append(r.with, v)
	} else {
		r.without = append(r.without, v)
	}
}

// historyNode starts a relay on brokerURL, with history or without.
func historyNode(caddyBin, brokerURL string, history bool) (*server, error) {
	// A queue deep enough for a flat-out burst: this measures the log,
	// not the cut-off of slow subscribers.
	extra := "buffer 4096"
	if history {
		extra += fmt.Sprintf("\n\t\thistory %d", historyCount)
	}
	return startCaddy(caddyBin, brokerURL, extra)
}

// fresh is a channel of its own for a run: the log outlives runs.
func fresh() string { return fmt.Sprintf("bench%d", time.Now().UnixNano()) }

func historyConfig(srv *server, b, brokerURL string, history bool) config {
	ch := fresh()
	c := config{Target: onChannel(srv.target, ch), Channel: ch, Publish: b, Sources: 16,
		PID: srv.cmd.Process.Pid, Timeout: 60 * time.Second, Publishers: 4}
	if b == "postgres" {
		c.PG = brokerURL
	} else {
		c.Redis = brokerURL
	}
	if history {
		c.History = historyCount
	}
	return c
}

func historyPublish(caddyBin, b, brokerURL string, history bool) (result, error) {
	srv, err := historyNode(caddyBin, brokerURL, history)
	if err != nil {
		return result{}, err
	}
	defer srv.stop()
	c := historyConfig(srv, b, brokerURL, history)
	c.Subs, c.Events, c.AppTx = 100, 2000, true
	r, err := run(context.Background(), c)
	r.Mode = fmt.Sprintf("publish %s history=%v", b, history)
	line, _ := json.Marshal(r)
	fmt.Println(string(line))
	if err == nil && r.Delivered != r.Expected {
		err = fmt.Errorf("delivered %d of %d", r.Delivered, r.Expected)
	}
	return r, err
}

func historyFanOut(caddyBin, brokerURL string, history bool) (result, error) {
	srv, err := historyNode(caddyBin, brokerURL, history)
	if err != nil {
		return result{}, err
	}
	defer srv.stop()
	c := historyConfig(srv, "redis", brokerURL, history)
	c.Subs, c.Events = 10000, 200
	r, err := run(context.Background(), c)
	r.Mode = fmt.Sprintf("fan-out redis history=%v", history)
	line, _ := json.Marshal(r)
	fmt.Println(string(line))
	if err == nil && r.Delivered != r.Expected {
		err = fmt.Errorf("delivered %d of %d", r.Delivered, r.Expected)
	}
	return r, err
}

// historyResume publishes 1,000 events through one node, then has 100
// streams resume from before them on a node started afterwards, 10 at a
// time, and returns the p99 of the time from dialling to the last event.
func historyResume(caddyBin, b, brokerURL string) (float64, error) {
	const behind, streams = 1000, 100
	first, err := historyNode(caddyBin, brokerURL, true)
	if err != nil {
		return 0, err
	}
	c := historyConfig(first, b, brokerURL, true)
	c.Events, c.Publishers = behind, 1 // in order: the resume checks it
	from, err := logHead(c)
	if err != nil {
		first.stop()
		return 0, err
	}
	l := &load{c: c}
	err = l.publish(context.Background())
	first.stop()
	if err != nil {
		return 0, err
	}
	second, err := historyNode(caddyBin, brokerURL, true)
	if err != nil {
		return 0, err
	}
	defer second.stop()
	target := onChannel(second.target, c.Channel)
	var h hist
	var mu sync.Mutex
	var firstErr error
	sem := make(chan struct{}, 10)
	var wg sync.WaitGroup
	for range streams {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			d, err := resumeOnce(target, from, behind)
			mu.Lock()
			defer mu.Unlock()
			if err != nil && firstErr == nil {
				firstErr = err
			}
			h.record(d)
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return 0, firstErr
	}
	fmt.Printf(`{"mode":"resume %s","streams":%d,"behind":%d,"p50_ms":%.2f,"p99_ms":%.2f,"max_ms":%.2f}`+"\n",
		b, streams, behind, ms(h.quantile(0.5)), ms(h.quantile(0.99)), ms(time.Duration(h.max.Load())))
	return ms(h.quantile(0.99)), nil
}

// logHead is the cursor before anything published now: sse_relay.head()
// on Postgres, the channel's last id on Redis (0-0 for a new one).
func logHead(c config) (string, error) {
	if c.Publish == "redis" {
		return "0-0", nil
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, c.PG)
	if err != nil {
		return "", err
	}
	defer conn.Close(ctx)
	var head string
	return head, conn.QueryRow(ctx, "SELECT sse_relay.head()").Scan(&head)
}

// resumeOnce opens a stream with Last-Event-ID from and reads until it
// has n events, every one of them once, in order.
func resumeOnce(target, from string, n int) (time.Duration, error) {
	u, err := urlParts(target)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	conn, err := net.DialTimeout("tcp", u.host, 10*time.Second)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nLast-Event-ID: %s\r\n\r\n", u.path, u.host, from)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("resume: %s", resp.Status)
	}
	events := sseclient.NewReader(bufio.NewReaderSize(resp.Body, 64<<10))
	for i := range n {
		data, err := events.NextData()
		if err != nil {
			return 0, fmt.Errorf("resume: event %d: %w", i, err)
		}
		if got, _, _ := strings.Cut(string(data), " "); got != fmt.Sprint(i) {
			return 0, fmt.Errorf("resume: event %d is %q", i, data)
		}
	}
	return time.Since(start), nil
}

func printHistory(rows []*historyRow) {
	var b strings.Builder
	fmt.Fprintf(&b, "\n| history | with | without | ratio |\n|---|---|---|---|\n")
	for _, r := range rows {
		w := medianOf(r.with)
		if len(r.without) == 0 {
			fmt.Fprintf(&b, "| %s | %.3g %s | | (median of %d) |\n", r.name, w, r.metric, len(r.with))
			continue
		}
		wo := medianOf(r.without)
		fmt.Fprintf(&b, "| %s | %.3g %s | %.3g %s | %.2f× (median of %d) |\n", r.name, w, r.metric, wo, r.metric, w/wo, len(r.with))
	}
	fmt.Print(b.String())
}

func medianOf(v []float64) float64 {
	rs := make([]result, len(v))
	for i, x := range v {
		rs[i].P50ms = x
	}
	return median(rs, func(r result) float64 { return r.P50ms })
}
