package sserelay

import (
	"errors"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/sse-relay/caddy-sse-relay/hub"
	"github.com/sse-relay/caddy-sse-relay/internal/stream"
)

// serveStream serves a GET or HEAD. A GET over HTTP/2, with Caddy serving
// the connection, runs the subscribe on a goroutine apart (parkApart), and the
// request's goroutine, which HTTP/2 keeps for the stream's life, then only
// waits for the stream's end: its stack holds Caddy's chain down to this
// handler, not what the subscribe grew it to. HTTP/1.x and HTTP/3 streams
// are taken over and leave their goroutine, and the relay's own HTTP/2
// front (a Parking in the context) runs the whole chain apart already.
func (h *Handler) serveStream(w http.ResponseWriter, r *http.Request) error {
	if r.Method == http.MethodHead || r.ProtoMajor != 2 || r.Context().Value(stream.ParkingKey{}) != nil {
		return h.serveSubscribe(w, r)
	}
	var err error
	if parked := parkApart(r, func(pr *http.Request) { err = h.serveSubscribe(w, pr) }); parked != nil {
		parked.Wait(r.Context().Done())
	}
	return err
}

// serveSubscribe is the GET (and HEAD) path: channels, authorization and
// limits, then a hub subscription, then the stream (internal/stream)
// until the client leaves, the hub cuts it off or the config is replaced.
// The origin was checked by ServeHTTP.
func (h *Handler) serveSubscribe(w http.ResponseWriter, r *http.Request) error {
	channels, err := h.channels(r)
	if err != nil {
		refuse(w, http.StatusBadRequest, err.Error())
		return nil
	}
	if len(channels) == 0 {
		// 204 tells EventSource to stop reconnecting: no channel, no stream.
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	expires, err := h.authorizeSubscribe(r, channels)
	if err != nil {
		h.refuseAuth(w, err)
		return nil
	}
	if r.Method == http.MethodHead {
		// What a stream would answer, without subscribing: a HEAD must
		// not make the broker listen.
		stream.Head(w)
		return nil
	}
	ip := clientNet(clientIP(r))
	release, err := h.relay.admit(ip, h.MaxConnections, h.MaxConnectionsPerIP)
	if err != nil {
		status := http.StatusServiceUnavailable
		if errors.Is(err, errIPFull) {
			status = http.StatusTooManyRequests
		}
		w.Header().Set("Retry-After", "5")
		refuse(w, status, "too many streams: try again later")
		return nil
	}
	named := h.rules.onBroker(channels)
	if fresh := h.relay.hub.Unknown(named); fresh > 0 && !h.relay.newChannels.allow(ip, fresh, h.MaxNewChannelsPerIP) {
		release()
		metrics.dropped.WithLabelValues("limit").Inc()
		w.Header().Set("Retry-After", "60")
		refuse(w, http.StatusTooManyRequests, "too many new channels from this address: try again in a minute")
		return nil
	}
	sub, err := h.relay.hub.Subscribe(named, lastEventID(r), h.Buffer)
	if errors.Is(err, hub.ErrChannelCap) {
		release()
		metrics.dropped.WithLabelValues("limit").Inc()
		w.Header().Set("Retry-After", "5")
		refuse(w, http.StatusServiceUnavailable, "too many channels on this node: try again later")
		return nil
	}
	if err != nil {
		release()
		// Only between a config's last Cleanup and its replacement: the
		// client should come back at once.
		w.Header().Set("Retry-After", "1")
		refuse(w, http.StatusServiceUnavailable, "relay is shutting down")
		return nil
	}
	abandon := func() { h.relay.hub.Abandon(sub); release() }
	s := stream.Stream{Sub: sub, Expires: expires, Channels: channels,
		Done: func() { h.relay.hub.Unsubscribe(sub); release() }}

	if !h.awaitListening(r, sub.Ready, channels) {
		abandon()
		return nil
	}
	// With history, what the client missed since its cursor, read once
	// the broker listens, so nothing falls between the read and live.
	if err := sub.CatchUp(r.Context()); err != nil {
		abandon()
		h.logger.Warn("resuming from the event log failed", zap.Strings("channels", channels), zap.Error(err))
		w.Header().Set("Retry-After", "1")
		refuse(w, http.StatusServiceUnavailable, "event log unavailable: try again")
		return nil
	}
	h.stream.Serve(w, r, s)
	return nil
}

// awaitListening holds the headers until the broker listens, so that
// whatever is published after the client got them reaches it, for at most
// listenWait. It reports false when the client left meanwhile. Its timer
// is stopped before the stream starts: on HTTP/2 and HTTP/3 this frame
// lives as long as the stream.
func (h *Handler) awaitListening(r *http.Request, ready <-chan struct{}, channels []string) bool {
	select {
	case <-ready:
		return true
	default:
	}
	wait := time.NewTimer(listenWait)
	defer wait.Stop()
	select {
	case <-ready:
	case <-wait.C:
		h.logger.Warn("broker did not confirm listening in time; streaming anyway", zap.Strings("channels", channels))
	case <-r.Context().Done():
		return false
	}
	return true
}

// lastEventID is where the client resumes from: the Last-Event-ID header
// EventSource sends, else the last_event_id query value for a first
// connection that knows its position.
func lastEventID(r *http.Request) string {
	if id := r.Header.Get("Last-Event-ID"); id != "" {
		return id
	}
	return r.URL.Query().Get("last_event_id")
}

// clientIP is the client address as Caddy resolved it (trusted_proxies
// honoured), else the peer address.
func clientIP(r *http.Request) string {
	if ip, ok := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string); ok && ip != "" {
		return ip
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// clientNet is what max_connections_per_ip counts a client by: an IPv4
// address, or the /64 of an IPv6 one. A single IPv6 host is usually given
// a whole /64 and may use any address in it, so counting each /128 apart
// would let one client take every slot. An IPv4-mapped IPv6 address counts
// as the IPv4 address; a string that is no address counts as itself.
func clientNet(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return ip
	}
	a = a.Unmap().WithZone("")
	if a.Is4() {
		return a.String()
	}
	return netip.PrefixFrom(a, 64).Masked().String()
}
