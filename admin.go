package sserelay

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sort"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/sse-relay/caddy-sse-relay/broker"
	"github.com/sse-relay/caddy-sse-relay/hub"
)

func init() {
	caddy.RegisterModule(adminAPI{})
}

// adminAPI serves GET /sse_relay/stats and GET /sse_relay/health on
// Caddy's admin endpoint.
type adminAPI struct{}

// CaddyModule returns the Caddy module information.
func (adminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "admin.api.sse_relay", New: func() caddy.Module { return new(adminAPI) }}
}

// Routes returns the admin routes.
func (adminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{
		{Pattern: "/sse_relay/stats", Handler: caddy.AdminHandlerFunc(serveStats)},
		{Pattern: "/sse_relay/health", Handler: caddy.AdminHandlerFunc(serveHealth)},
	}
}

// brokerStats is one relay in /sse_relay/stats.
type brokerStats struct {
	URL            string            `json:"url"` // password removed
	State          string            `json:"state"`
	Since          time.Time         `json:"since"`
	Reconnects     int               `json:"reconnects"`
	EventsReceived uint64            `json:"events_received"`
	Streams        int               `json:"streams"`
	Replay         int               `json:"replay"`
	ReplayBytes    int               `json:"replay_bytes"`
	Queued         uint64            `json:"frames_queued"`
	DroppedSlow    uint64            `json:"dropped_slow"`
	Refused        uint64            `json:"payloads_refused"`
	Resets         map[string]uint64 `json:"resets"` // reset events sent, by reason
	History        *historyStats     `json:"history,omitempty"`
	// Shards are a Redis Cluster's pub/sub connections, one per primary.
	Shards   []broker.ShardState `json:"shards,omitempty"`
	Channels []hub.ChannelStat   `json:"channels"`
}

// historyStats describes a relay's event log.
type historyStats struct {
	Count     int             `json:"count"`
	MaxAge    string          `json:"max_age,omitempty"`
	Depth     broker.LogDepth `json:"depth"`
	DepthErr  string          `json:"depth_error,omitempty"`
	Backfills uint64          `json:"backfills"` // resumes that read the log
	Expired   uint64          `json:"expired"`   // resumes from a position the log no longer holds
}

// logStats reads what r's log holds, within a short time.
func logStats(r *relay, hs hub.Stats) *historyStats {
	log := r.broker.Log()
	if log == nil {
		return nil
	}
	out := &historyStats{Count: r.history.Count, Backfills: hs.Backfills, Expired: hs.Expired}
	if r.history.MaxAge > 0 {
		out.MaxAge = r.history.MaxAge.String()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	d, err := log.Depth(ctx)
	out.Depth = d
	if err != nil {
		out.DepthErr = err.Error()
	}
	return out
}

type stats struct {
	Brokers []brokerStats `json:"brokers"`
	Totals  struct {
		Brokers     int `json:"brokers"`
		Channels    int `json:"channels"`
		Subscribers int `json:"subscribers"`
		Streams     int `json:"streams"`
	} `json:"totals"`
}

func collectStats() stats {
	var out stats
	relays.Range(func(_, v any) bool {
		r := v.(*relay)
		st := r.broker.State()
		hs := r.hub.Stats()
		b := brokerStats{
			URL: r.label, State: "disconnected", Since: st.Since, Reconnects: st.Reconnects,
			EventsReceived: r.received.Load(), Streams: r.openStreams(), Replay: r.replay,
			ReplayBytes: hs.ReplayBytes, Queued: hs.Queued, DroppedSlow: hs.Dropped,
			Refused: hs.Refused, Resets: hs.Resets, History: logStats(r, hs), Shards: st.Shards,
			Channels: r.hub.ChannelStats(),
		}
		if st.Connected {
			b.State = "connected"
		}
		out.Brokers = append(out.Brokers, b)
		out.Totals.Channels += len(b.Channels)
		for _, c := range b.Channels {
			out.Totals.Subscribers += c.Subscribers
		}
		out.Totals.Streams += b.Streams
		return true
	})
	sort.Slice(out.Brokers, func(i, j int) bool { return out.Brokers[i].URL < out.Brokers[j].URL })
	out.Totals.Brokers = len(out.Brokers)
	return out
}

func serveStats(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: errMethod}
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(collectStats())
}

// serveHealth is 200 when every broker is connected, else 503: a load
// balancer takes a node whose broker is down out of rotation. A Redis
// Cluster is down while a shard that holds a listened channel is.
func serveHealth(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: errMethod}
	}
	status, body := http.StatusOK, map[string]any{"status": "ok"}
	if down := brokersDown(); len(down) > 0 {
		status, body = http.StatusServiceUnavailable, map[string]any{"status": "broker down", "brokers_down": down}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	return json.NewEncoder(w).Encode(body)
}

// brokersDown lists, sorted, the brokers that are not connected; a broker
// that several relays share is down when any of them is. It asks the
// brokers nothing (the stats' log depth is a query): a health check must
// answer at once, also while a broker is failing over.
func brokersDown() []string {
	up := map[string]bool{}
	relays.Range(func(_, v any) bool {
		r := v.(*relay)
		was, seen := up[r.label]
		up[r.label] = r.broker.State().Connected && (was || !seen)
		return true
	})
	var down []string
	for label, ok := range up {
		if !ok {
			down = append(down, label)
		}
	}
	sort.Strings(down)
	return down
}

var errMethod = errors.New("method not allowed")

var _ caddy.AdminRouter = adminAPI{}
