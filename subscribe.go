package sserelay

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/sse-relay/caddy-sse-relay/broker"
	"github.com/sse-relay/caddy-sse-relay/hub"
)

// serveStream subscribes the request to its channels and writes events
// until the client leaves, the hub cuts it off or the config is replaced.
func (h *Handler) serveStream(w http.ResponseWriter, r *http.Request) error {
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
	expires, err := h.authorize(r, channels)
	if err != nil {
		h.refuseAuth(w, err)
		return nil
	}
	release, status := h.relay.admit(clientIP(r), h.MaxConnections, h.MaxConnectionsPerIP)
	if status != 0 {
		w.Header().Set("Retry-After", "5")
		refuse(w, status, "too many streams: try again later")
		return nil
	}
	lastID := r.Header.Get("Last-Event-ID")
	if lastID == "" {
		lastID = r.URL.Query().Get("last_event_id")
	}
	sub, err := h.relay.hub.Subscribe(channels, lastID, h.Buffer)
	if err != nil {
		release()
		// Only between a config's last Cleanup and its replacement: the
		// client should come back at once.
		w.Header().Set("Retry-After", "1")
		refuse(w, http.StatusServiceUnavailable, "relay is shutting down")
		return nil
	}
	st := &stream{h: h, sub: sub, expires: expires, channels: channels, remote: r.RemoteAddr,
		done: func() { h.relay.hub.Unsubscribe(sub); release() }}

	// Headers go out once the broker listens, so that whatever is
	// published after the client got them reaches it.
	wait := time.NewTimer(listenWait)
	select {
	case <-sub.Ready:
	case <-wait.C:
		h.logger.Warn("broker did not confirm listening in time; streaming anyway", zap.Strings("channels", channels))
	case <-r.Context().Done():
		wait.Stop()
		st.done()
		return nil
	}
	wait.Stop()

	hdr := w.Header()
	hdr.Set("Content-Type", "text/event-stream")
	hdr.Set("Cache-Control", "no-cache, no-transform")
	hdr.Set("X-Accel-Buffering", "no")
	hdr.Del("Content-Length")
	if r.Method == http.MethodHead {
		w.WriteHeader(http.StatusOK)
		st.done()
		return nil
	}
	if r.ProtoMajor == 1 {
		// net/http then sends the body as it is, not chunked, and closes
		// the connection after it: the body ends when the stream does.
		hdr.Set("Transfer-Encoding", "identity")
	}
	// net/http writes the headers, and Caddy's access log and metrics
	// see the 200, also for a stream that is taken over.
	w.WriteHeader(http.StatusOK)
	st.start()
	if r.ProtoMajor == 1 && h.takeOver(w, st) {
		return nil // the stream goes on in its own goroutine
	}
	st.out = &responseOut{w: w, rc: http.NewResponseController(w), timeout: time.Duration(h.WriteTimeout)}
	// A keep-alive connection must not carry our deadline into the next
	// request.
	defer func() { _ = st.out.(*responseOut).rc.SetWriteDeadline(time.Time{}) }()
	if st.run(r.Context().Done()) {
		// Cut off (too slow, or the socket stalled): close the connection
		// instead of ending the response and keeping it alive; the client
		// resumes with Last-Event-ID.
		panic(http.ErrAbortHandler)
	}
	return nil
}

// takeOver hijacks an HTTP/1.x connection once the headers are out and
// serves the stream from a goroutine of its own, so the request's
// goroutine, with Caddy's deep handler stack, and net/http's buffers and
// background reader are freed: an idle stream then costs a few KiB. It
// reports false when the connection cannot be taken over, leaving the
// ordinary path to serve it.
//
// The headers are flushed through every wrapper first, then the server's
// own ResponseWriter, under Caddy's wrappers, is hijacked: it gives the
// raw connection, which the hang-up watcher can poll. Hijacking through
// Caddy's access-log recorder would give a byte-counting wrapper whose
// count the log reads on the request goroutine while this one writes.
func (h *Handler) takeOver(w http.ResponseWriter, st *stream) bool {
	if err := http.NewResponseController(w).Flush(); err != nil {
		return false
	}
	hj, ok := innermost(w).(http.Hijacker)
	if !ok {
		return false
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		return false
	}
	st.out = &connOut{conn: conn, timeout: time.Duration(h.WriteTimeout)}
	gone := make(chan struct{})
	unwatch := watchHangup(conn, gone)
	go func() {
		st.run(gone)
		unwatch()
		_ = conn.Close()
	}()
	return true
}

// out is where a stream's bytes go: the response (HTTP/2, HTTP/3, or a
// connection that could not be taken over) or a hijacked connection.
type out interface {
	write(p []byte) error
}

type responseOut struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
}

// write sends p in one Write and one Flush, under a write deadline.
func (o *responseOut) write(p []byte) error {
	if err := o.rc.SetWriteDeadline(time.Now().Add(o.timeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	if _, err := o.w.Write(p); err != nil {
		return err
	}
	return o.rc.Flush()
}

// innermost follows Unwrap down to the ResponseWriter that Caddy's
// wrappers wrap: net/http's own.
func innermost(w http.ResponseWriter) http.ResponseWriter {
	for {
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return w
		}
		w = u.Unwrap()
	}
}

type connOut struct {
	conn    net.Conn
	timeout time.Duration
}

func (o *connOut) write(p []byte) error {
	if err := o.conn.SetWriteDeadline(time.Now().Add(o.timeout)); err != nil {
		return err
	}
	_, err := o.conn.Write(p)
	return err
}

// stream is one subscriber's event stream.
type stream struct {
	h        *Handler
	sub      *hub.Subscription
	out      out
	buf      []byte
	frames   []*hub.Frame // scratch for Take
	backlog  [][]byte     // replayed frames not yet written, shared with the rings
	expires  time.Time
	channels []string
	remote   string
	done     func() // unsubscribe and release the connection slot
}

// start puts the opening lines in buf and takes the replayed frames, for
// writeOpening.
func (s *stream) start() {
	s.buf = append(s.buf, ": ok\n"...)
	if s.h.Retry > 0 {
		s.buf = append(s.buf, "retry: "...)
		s.buf = strconv.AppendInt(s.buf, time.Duration(s.h.Retry).Milliseconds(), 10)
		s.buf = append(s.buf, '\n')
	}
	s.buf = append(s.buf, '\n')
	s.backlog, s.sub.Backlog = s.sub.Backlog, nil
}

// run writes the stream until it ends, then cleans up. It reports whether
// the connection should be dropped rather than ended cleanly.
func (s *stream) run(gone <-chan struct{}) bool {
	defer s.done()
	if err := s.writeOpening(); err != nil {
		metrics.dropped.WithLabelValues("write_error").Inc()
		return true
	}
	metrics.open.Inc()
	metrics.opened.Inc()
	defer metrics.open.Dec()
	s.h.logger.Debug("stream opened", zap.Strings("channels", s.channels), zap.String("remote", s.remote))
	reason, abort := s.loop(gone)
	s.h.logger.Debug("stream closed", zap.Strings("channels", s.channels), zap.String("reason", reason))
	return abort
}

// flush writes buf at once.
func (s *stream) flush() error {
	err := s.out.write(s.buf)
	s.buf = s.buf[:0]
	if cap(s.buf) > 64<<10 {
		// Do not hold on to a burst's buffer for the life of the stream.
		s.buf = nil
	}
	return err
}

// backlogChunk is about how much replay one write carries.
const backlogChunk = 64 << 10

// writeOpening writes what start put in buf, then the replayed frames a
// chunk at a time: a resume can replay the whole ring of every channel,
// and copying all of it into each stream's buffer at once would let a few
// hundred resuming clients hold gigabytes.
func (s *stream) writeOpening() error {
	for {
		for len(s.backlog) > 0 && len(s.buf) < backlogChunk {
			s.buf = append(s.buf, s.backlog[0]...)
			s.backlog[0] = nil
			s.backlog = s.backlog[1:]
		}
		if err := s.flush(); err != nil {
			return err
		}
		if len(s.backlog) == 0 {
			s.backlog = nil
			return nil
		}
	}
}

// loop writes frames as they come, coalescing everything pending into one
// write, and heartbeats when idle. It returns why the stream ended and
// whether the connection should be dropped rather than ended cleanly.
func (s *stream) loop(gone <-chan struct{}) (string, bool) {
	sub := s.sub
	var heartbeat <-chan time.Time
	var beat *time.Timer
	if hb := time.Duration(*s.h.Heartbeat); hb > 0 {
		beat = time.NewTimer(hb)
		defer beat.Stop()
		heartbeat = beat.C
	}
	var endTimer, expired <-chan time.Time
	if !s.expires.IsZero() {
		t := time.NewTimer(time.Until(s.expires))
		defer t.Stop()
		expired = t.C
	}
	ending := s.h.ending
	for {
		frames, oldest := 0, time.Time{}
		select {
		case <-sub.Wake():
			s.frames = sub.Take(s.frames[:0])
			if len(s.frames) == 0 {
				continue
			}
			oldest, frames = s.frames[0].At, len(s.frames)
			for _, f := range s.frames {
				s.buf = append(s.buf, f.Bytes...)
			}
			clear(s.frames)
			if cap(s.frames) > 64 {
				s.frames = nil
			}
		case <-heartbeat:
			s.buf = append(s.buf, ":\n\n"...)
		case <-gone:
			return "client gone", false
		case <-sub.Done():
			return "hub: " + sub.Reason(), sub.Reason() == hub.DropSlow
		case <-ending:
			ending = nil
			t := time.NewTimer(s.h.endDelay())
			defer t.Stop()
			endTimer = t.C
			continue
		case <-endTimer:
			return "config replaced", false
		case <-expired:
			return "token expired", false
		}
		if err := s.flush(); err != nil {
			metrics.dropped.WithLabelValues("write_error").Inc()
			return "write: " + err.Error(), true
		}
		if frames > 0 {
			metrics.delivered.Add(float64(frames))
			metrics.latency.Observe(time.Since(oldest).Seconds())
		}
		if beat != nil {
			beat.Reset(time.Duration(*s.h.Heartbeat))
		}
	}
}

// servePublish publishes the request body on the request's channels
// through the broker, so subscribers on every node get it.
func (h *Handler) servePublish(w http.ResponseWriter, r *http.Request) error {
	channels, err := h.requestChannels(r)
	if err != nil {
		refuse(w, http.StatusBadRequest, err.Error())
		return nil
	}
	if len(channels) == 0 {
		refuse(w, http.StatusBadRequest, "no channel: use /<route>/<channel> or ?channel=")
		return nil
	}
	if err := h.authorizePublish(r, channels); err != nil {
		h.refuseAuth(w, err)
		return nil
	}
	limit := h.relay.broker.Limits().MaxPayload
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, int64(limit)))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			refuse(w, http.StatusRequestEntityTooLarge, "payload over the broker's limit of "+strconv.Itoa(limit)+" bytes")
			return nil
		}
		refuse(w, http.StatusBadRequest, "reading body: "+err.Error())
		return nil
	}
	if _, err := hub.Decode(body); err != nil {
		refuse(w, http.StatusBadRequest, err.Error())
		return nil
	}
	// Every channel, or none: a 202 means all of them got the event.
	if err := h.relay.broker.Publish(r.Context(), channels, body); err != nil {
		if errors.Is(err, broker.ErrRejected) {
			refuse(w, http.StatusBadRequest, err.Error())
			return nil
		}
		h.logger.Warn("publish failed", zap.Strings("channels", channels), zap.Error(err))
		w.Header().Set("Retry-After", "1")
		refuse(w, http.StatusServiceUnavailable, "broker unavailable")
		return nil
	}
	w.WriteHeader(http.StatusAccepted)
	return nil
}

// authorizePublish accepts the publish key (compared in constant time) or
// a token whose publish claim grants every channel.
func (h *Handler) authorizePublish(r *http.Request, channels []string) error {
	tok, ok := bearer(r)
	if !ok || tok == "" {
		return &authError{http.StatusUnauthorized, "missing publish key or token"}
	}
	if h.publishKey != "" && subtle.ConstantTimeCompare([]byte(tok), []byte(h.publishKey)) == 1 {
		return nil
	}
	if h.verifier == nil {
		return &authError{http.StatusUnauthorized, "wrong publish key"}
	}
	c, err := h.verifier.parse(tok)
	if err != nil {
		return &authError{http.StatusUnauthorized, "wrong publish key or invalid token"}
	}
	if ch, ok := granted(c.Publish, channels); !ok {
		return &authError{http.StatusForbidden, fmt.Sprintf("publishing on %q not granted", ch)}
	}
	return nil
}

// refuseAuth answers a failed authorization; 401s carry the challenge.
func (h *Handler) refuseAuth(w http.ResponseWriter, err error) {
	var ae *authError
	if !errors.As(err, &ae) {
		ae = &authError{http.StatusUnauthorized, "unauthorized"}
	}
	if ae.status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="sse_relay"`)
	}
	refuse(w, ae.status, ae.reason)
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
