package sserelay

import (
	"errors"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sse-relay/caddy-sse-relay/broker"
	"github.com/sse-relay/caddy-sse-relay/hub"
)

// metrics are created once per process and registered on each config's
// registry, so their values carry over reloads. No label takes unbounded
// values: brokers are labelled by their configured (redacted) URL, never
// by channel.
var metrics = struct {
	open    prometheus.Gauge
	opened  prometheus.Counter
	written prometheus.Counter
	dropped *prometheus.CounterVec
	refused *prometheus.CounterVec
	latency prometheus.Histogram
	brokers prometheus.Collector
	http2   prometheus.Gauge
}{
	open: prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "caddy", Subsystem: "sse_relay", Name: "streams_open",
		Help: "Event streams open now.",
	}),
	opened: prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "sse_relay", Name: "streams_opened_total",
		Help: "Event streams opened.",
	}),
	written: prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "sse_relay", Name: "frames_delivered_total",
		Help: "Event frames written to subscribers.",
	}),
	dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "sse_relay", Name: "subscribers_dropped_total",
		Help: "Subscribers cut off or refused, by reason: slow (queue full), write_error, limit (connection limits).",
	}, []string{"reason"}),
	refused: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "sse_relay", Name: "payloads_refused_total",
		Help: "Payloads from the broker that were not relayed, by reason.",
	}, []string{"reason"}),
	latency: prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: "caddy", Subsystem: "sse_relay", Name: "publish_to_write_seconds",
		Help:    "Time from the relay receiving an event from the broker to writing it to a subscriber.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
	}),
	brokers: brokerCollector{},
	http2: prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "caddy", Subsystem: "sse_relay", Name: "http2_connections",
		Help: "HTTP/2 connections the sse_relay listener wrapper serves now.",
	}),
}

// registerMetrics puts the collectors on reg, once per registry.
func registerMetrics(reg prometheus.Registerer) error {
	if reg == nil {
		return nil
	}
	for _, c := range []prometheus.Collector{metrics.open, metrics.opened, metrics.written,
		metrics.dropped, metrics.refused, metrics.latency, metrics.brokers, metrics.http2} {
		if err := reg.Register(c); err != nil {
			var already prometheus.AlreadyRegisteredError
			if !errors.As(err, &already) {
				return err
			}
		}
	}
	return nil
}

// refusedReason turns a decode error into a metric label.
func refusedReason(err error) string {
	var r *hub.RefusedError
	if errors.As(err, &r) {
		return strings.ReplaceAll(r.Reason, " ", "_")
	}
	return "other"
}

var (
	descReceived = prometheus.NewDesc("caddy_sse_relay_events_received_total",
		"Events received from the broker.", []string{"broker"}, nil)
	descReconnects = prometheus.NewDesc("caddy_sse_relay_broker_reconnects_total",
		"Broker connections re-established after a loss.", []string{"broker"}, nil)
	descConnected = prometheus.NewDesc("caddy_sse_relay_broker_connected",
		"1 when the broker connection is up.", []string{"broker"}, nil)
	descResets = prometheus.NewDesc("caddy_sse_relay_resets_total",
		"Reset events sent (sse-relay-reset), by reason.", []string{"broker", "reason"}, nil)
	descBackfills = prometheus.NewDesc("caddy_sse_relay_history_backfills_total",
		"Resumes that read the event log (history).", []string{"broker"}, nil)
	descLogEntries = prometheus.NewDesc("caddy_sse_relay_history_entries",
		"Events the log holds (on Redis: of the channels listened to now).", []string{"broker"}, nil)
	descLogOldest = prometheus.NewDesc("caddy_sse_relay_history_oldest_seconds",
		"Age of the oldest event the log holds (Postgres).", []string{"broker"}, nil)
)

// brokerCollector reports every open relay's broker when scraped.
type brokerCollector struct{}

func (brokerCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descReceived
	ch <- descReconnects
	ch <- descConnected
	ch <- descResets
	ch <- descBackfills
	ch <- descLogEntries
	ch <- descLogOldest
}

func (brokerCollector) Collect(ch chan<- prometheus.Metric) {
	for url, agg := range brokerTotals() {
		ch <- prometheus.MustNewConstMetric(descReceived, prometheus.CounterValue, float64(agg.received), url)
		ch <- prometheus.MustNewConstMetric(descReconnects, prometheus.CounterValue, float64(agg.state.Reconnects), url)
		up := 0.0
		if agg.state.Connected {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(descConnected, prometheus.GaugeValue, up, url)
		for reason, n := range agg.resets {
			ch <- prometheus.MustNewConstMetric(descResets, prometheus.CounterValue, float64(n), url, reason)
		}
		if agg.history != nil {
			ch <- prometheus.MustNewConstMetric(descBackfills, prometheus.CounterValue, float64(agg.history.Backfills), url)
			ch <- prometheus.MustNewConstMetric(descLogEntries, prometheus.GaugeValue, float64(agg.history.Depth.Entries), url)
			if !agg.history.Depth.Oldest.IsZero() {
				ch <- prometheus.MustNewConstMetric(descLogOldest, prometheus.GaugeValue, time.Since(agg.history.Depth.Oldest).Seconds(), url)
			}
		}
	}
}

type brokerTotal struct {
	received uint64
	state    broker.State
	resets   map[string]uint64
	history  *historyStats // of the first relay with history on this URL
}

// brokerTotals sums the open relays by redacted broker URL (relays with
// the same URL but other hub options share a label).
func brokerTotals() map[string]brokerTotal {
	out := map[string]brokerTotal{}
	relays.Range(func(_, v any) bool {
		r := v.(*relay)
		t, seen := out[r.label]
		st := r.broker.State()
		t.received += r.received.Load()
		hs := r.hub.Stats()
		for reason, n := range hs.Resets {
			if t.resets == nil {
				t.resets = map[string]uint64{}
			}
			t.resets[reason] += n
		}
		if t.history == nil {
			t.history = logStats(r, hs)
		} else if lh := r.broker.Log(); lh != nil {
			t.history.Backfills += hs.Backfills
		}
		t.state.Reconnects += st.Reconnects
		t.state.Connected = st.Connected && (t.state.Connected || !seen)
		if st.Since.After(t.state.Since) {
			t.state.Since = st.Since
		}
		out[r.label] = t
		return true
	})
	return out
}

// streamMetrics counts what streams do (internal/stream's Observer).
type streamMetrics struct{}

func (streamMetrics) Opened() {
	metrics.open.Inc()
	metrics.opened.Inc()
}

func (streamMetrics) Closed() { metrics.open.Dec() }

func (streamMetrics) Written(frames int, oldest time.Time) {
	metrics.written.Add(float64(frames))
	metrics.latency.Observe(time.Since(oldest).Seconds())
}

func (streamMetrics) WriteFailed() { metrics.dropped.WithLabelValues("write_error").Inc() }
