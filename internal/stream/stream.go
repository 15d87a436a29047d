// Package stream writes a hub subscription to a client as an event
// stream: the opening lines and the replay, then events as they come,
// coalesced into one write each, heartbeats when idle, and an end when the
// client leaves, the hub cuts it off, its token expires or its config is
// replaced. A stream has no goroutine of its own: what has something for
// it kicks it, and a goroutine of a shared few writes (see writer). On
// HTTP/1.x the connection is taken over after the headers, with one epoll
// set noticing clients that leave, and on HTTP/3 the QUIC stream; on
// HTTP/2 the handler's goroutine waits for the end. It knows nothing of
// Caddy.
package stream

import (
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/sse-relay/caddy-sse-relay/hub"
)

// Config is what every stream of one handler shares.
type Config struct {
	// Heartbeat is the silence after which a comment line goes out; 0
	// turns heartbeats off.
	Heartbeat time.Duration
	// Retry, when positive, is sent once at the start.
	Retry time.Duration
	// WriteTimeout bounds every write.
	WriteTimeout time.Duration
	// Ending closes when the streams should end (their config is replaced
	// or the server stops); each then ends after EndDelay.
	Ending   <-chan struct{}
	EndDelay func() time.Duration
	Logger   *zap.Logger
	Observer Observer
}

// Observer counts what streams do.
type Observer interface {
	Opened()
	Closed()
	// Written reports frames written in one write, the oldest of them
	// received at oldest.
	Written(frames int, oldest time.Time)
	WriteFailed()
}

// Stream is one subscriber's stream to serve.
type Stream struct {
	Sub      *hub.Subscription
	Expires  time.Time // the token's expiry, or zero
	Channels []string  // for logs
	// Done unsubscribes and releases the stream's slot; Serve calls it
	// once the stream has ended.
	Done func()
}

// Head answers a HEAD with a stream's headers and no body.
func Head(w http.ResponseWriter) {
	setHeaders(w.Header())
	w.WriteHeader(http.StatusOK)
}

func setHeaders(hdr http.Header) {
	hdr.Set("Content-Type", "text/event-stream")
	hdr.Set("Cache-Control", "no-cache, no-transform")
	hdr.Set("X-Accel-Buffering", "no")
	hdr.Del("Content-Length")
}

// Serve writes the headers, then the stream. An HTTP/1.x or HTTP/3 stream
// is taken over and goes on after Serve returns; a stream whose request carries a
// Parking goes on in the handler that put it there; other streams are
// served before Serve returns.
func (c *Config) Serve(w http.ResponseWriter, r *http.Request, s Stream) {
	hdr := w.Header()
	setHeaders(hdr)
	if r.ProtoMajor == 1 {
		// net/http then sends the body as it is, not chunked, and closes
		// the connection after it: the body ends when the stream does.
		hdr.Set("Transfer-Encoding", "identity")
	}
	// net/http writes the headers, and whatever wraps w (an access log,
	// metrics) sees the 200, also for a stream that is taken over.
	w.WriteHeader(http.StatusOK)
	st := &writer{cfg: c, Stream: s, remote: r.RemoteAddr}
	st.start()
	// The headers go out through every wrapper; the body then goes to the
	// server's own ResponseWriter under them (see bypass).
	if err := http.NewResponseController(w).Flush(); err != nil {
		st.release()
		st.Done()
		return
	}
	inner := innermost(w)
	if r.ProtoMajor == 1 && st.takeOver(inner) || r.ProtoMajor == 3 && st.takeOverHTTP3(inner) {
		return // the stream goes on without this goroutine
	}
	st.inner = inner
	if p, ok := r.Context().Value(ParkingKey{}).(*Parking); ok {
		p.Stream = st
		return // the handler that put p there serves the stream
	}
	st.Serve(r.Context().Done())
}

// ParkingKey holds a *Parking in a request's context.
type ParkingKey struct{}

// Parking is left in a request's context by a caller that runs the
// handler chain, or the subscribe, on a goroutine apart and can serve a
// stream once that has returned: Serve then leaves the stream in it
// instead of serving it there, where the frames and per-request state
// would stay with it for its life.
type Parking struct{ Stream Parked }

// Abandon ends the stream left in p, if any, that no handler will serve
// (something panicked after Serve parked it), so that its subscription
// and slot are given back.
func (p *Parking) Abandon() {
	if p.Stream == nil {
		return
	}
	gone := make(chan struct{})
	close(gone)
	p.Stream.Start()
	p.Stream.Wait(gone)
}

// Parked is a stream left in a Parking: Start serves it from then on
// (its writes are not the caller's: see writer), and Wait waits for its
// end, telling it when done closes first. Wait panics with
// http.ErrAbortHandler when the connection should be dropped rather than
// the response ended.
type Parked interface {
	Start()
	Wait(done <-chan struct{})
}

// Serve serves the stream until it ends or done closes.
func (st *writer) Serve(done <-chan struct{}) {
	st.Start()
	st.Wait(done)
}

// Start serves the stream through inner, the server's own ResponseWriter,
// its writes bounded by the watchdog.
func (st *writer) Start() {
	rw := bypass(st.inner, st.cfg.WriteTimeout)
	st.wire = rw
	writes.watch(rw)
	st.over = make(chan bool, 1)
	st.begin(st.tellOver)
}

// tellOver is a response stream's ended: Wait returns.
func (st *writer) tellOver(abort bool) {
	writes.forget(st.wire.(*responseWire))
	st.over <- abort
}

// Wait waits for the stream's end. The goroutine that calls it, the
// handler's, keeps whatever is on its stack for the stream's life: Go
// halves an idle goroutine's stack during GC only while under a quarter of
// it (less a guard of 800 bytes) is in use, so a goroutine whose stack
// grew to 4 KiB never shrinks to the smallest, 2 KiB. The relay's HTTP/2
// front runs the handler chain and Start on another goroutine for that
// reason, and with Caddy serving HTTP/2 the relay's handler runs the
// subscribe and Start apart; the request's goroutine only waits
// (e2e.TestRelayHTTP2ParkedStack).
//
// It also ends the stream itself when the client leaves or the config
// ends, draining on this goroutine rather than starting one: when a server
// stops, 50,000 handlers each handing their stream's end to another
// goroutine took more than twice as long as ending it here.
func (st *writer) Wait(done <-chan struct{}) {
	var abort bool
	ending := st.cfg.Ending
	for waiting := true; waiting; {
		select {
		case abort = <-st.over:
			waiting = false
		case <-done:
			st.leaveHere()
			abort = <-st.over
			waiting = false
		case <-ending:
			ending = nil
			st.endHere()
		}
	}
	if abort {
		// Cut off (too slow, or the socket stalled): close the connection
		// instead of ending the response and keeping it alive; the client
		// resumes with Last-Event-ID.
		panic(http.ErrAbortHandler)
	}
}
