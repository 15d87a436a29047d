package stream

import (
	"net/http"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/sse-relay/caddy-sse-relay/hub"
)

// wire is where a stream's bytes go: the response (HTTP/2, HTTP/3, or a
// connection that could not be taken over) or a taken-over connection.
type wire interface {
	write(p []byte) error
}

// responseWire writes through the response. Its writes are bounded by the
// watchdog, not by a write deadline armed for each: on HTTP/2 a deadline
// is a timer in the connection's serve loop that resets the stream when it
// fires, even after the write it was set for went through, so an idle
// stream would be cut write_timeout after its last event.
type responseWire struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	// started is when the write in progress began (Unix nanoseconds), or
	// 0 between writes.
	started atomic.Int64
}

// bypass is the wire of a stream served through the response: the
// server's own ResponseWriter (HTTP/2's, HTTP/3's, or net/http's when a
// connection could not be taken over), not the wrappers above it. A
// server's idle write timeout wraps every response in a writer that moves
// the write deadline before and after each Write and Flush: four deadline
// changes an event, each a timer and, on HTTP/2, a message through the
// connection's serve loop. Whatever deadline the header flush left armed
// is cleared once; the watchdog bounds the stream's writes from then on.
// As with a taken-over HTTP/1.1 connection, an access log sees the status
// but not the body's bytes.
func bypass(inner http.ResponseWriter, timeout time.Duration) *responseWire {
	rc := http.NewResponseController(inner)
	_ = rc.SetWriteDeadline(time.Time{})
	return &responseWire{w: inner, rc: rc, timeout: timeout}
}

// write sends p in one Write and one Flush.
func (o *responseWire) write(p []byte) error {
	o.started.Store(time.Now().UnixNano())
	_, err := o.w.Write(p)
	if err == nil {
		err = o.rc.Flush()
	}
	o.started.Store(0)
	return err
}

// late reports whether the write in progress began more than the timeout
// before now.
func (o *responseWire) late(now int64) bool {
	s := o.started.Load()
	return s != 0 && now-s > int64(o.timeout)
}

// abort fails the write in progress, and every later one, with a deadline
// in the past: HTTP/2 resets the stream, HTTP/1.1 and HTTP/3 fail the
// write.
func (o *responseWire) abort() {
	_ = o.rc.SetWriteDeadline(time.Unix(1, 0))
}

// writer is one stream being written.
type writer struct {
	Stream
	cfg     *Config
	wire    wire
	inner   http.ResponseWriter // the server's own, under Caddy's wrappers (HTTP/2 and HTTP/3)
	remote  string
	buf     []byte
	frames  []*hub.Frame // scratch for Take
	backlog [][]byte     // replayed frames not yet written, shared with the rings
}

// start puts the opening lines in buf and takes the replayed frames, for
// writeOpening.
func (s *writer) start() {
	s.buf = append(s.buf, ": ok\n"...)
	if s.cfg.Retry > 0 {
		s.buf = append(s.buf, "retry: "...)
		s.buf = strconv.AppendInt(s.buf, s.cfg.Retry.Milliseconds(), 10)
		s.buf = append(s.buf, '\n')
	}
	s.buf = append(s.buf, '\n')
	s.backlog, s.Sub.Backlog = s.Sub.Backlog, nil
}

// run writes the stream until it ends, then calls Done. It reports
// whether the connection should be dropped rather than ended cleanly.
//
// Its frame and loop's stay on the stack of an idle stream's goroutine
// for the stream's life, so they are kept small (the log lines' fields
// live in functions of their own): Go halves a goroutine's stack during
// GC only while less than a quarter of it is in use, and a parked stack
// under about 2 KiB then fits in 4 KiB instead of 8. With the relay
// serving HTTP/2 it is within a few dozen bytes of that:
// e2e.TestRelayHTTP2ParkedStack fails when it no longer fits.
func (s *writer) run(gone <-chan struct{}) bool {
	defer s.Done()
	if err := s.writeOpening(); err != nil {
		s.cfg.Observer.WriteFailed()
		return true
	}
	s.cfg.Observer.Opened()
	defer s.cfg.Observer.Closed()
	s.logOpened()
	reason, abort := s.loop(gone)
	s.logClosed(reason)
	return abort
}

//go:noinline
func (s *writer) logOpened() {
	s.cfg.Logger.Debug("stream opened", zap.Strings("channels", s.Channels), zap.String("remote", s.remote))
}

//go:noinline
func (s *writer) logClosed(reason string) {
	s.cfg.Logger.Debug("stream closed", zap.Strings("channels", s.Channels), zap.String("reason", reason))
}

// flush writes buf at once.
func (s *writer) flush() error {
	err := s.wire.write(s.buf)
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
func (s *writer) writeOpening() error {
	for {
		// Size the buffer for the chunk once, rather than growing it by
		// doubling through a quarter of a megabyte of garbage per resume.
		n, size := 0, len(s.buf)
		for n < len(s.backlog) && size < backlogChunk {
			size += len(s.backlog[n])
			n++
		}
		s.buf = slices.Grow(s.buf, size-len(s.buf))
		for _, f := range s.backlog[:n] {
			s.buf = append(s.buf, f...)
		}
		clear(s.backlog[:n])
		s.backlog = s.backlog[n:]
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
//
// It waits on four things: the subscription's wake (which also tells of
// the hub ending it), the client leaving, the config ending, and one
// alarm for whichever comes first of the heartbeat, the token's expiry
// and the end after EndDelay. Every case of a select is a channel lock
// on every wake, and every timer is memory held by an idle stream.
func (s *writer) loop(gone <-chan struct{}) (string, bool) {
	sub := s.Sub
	a := newAlarm(s.cfg.Heartbeat, s.Expires)
	defer a.stop()
	ending := s.cfg.Ending
	for {
		frames, oldest := 0, time.Time{}
		select {
		case <-sub.Wake():
			if r := sub.Reason(); r != "" {
				return hubEnded(r)
			}
			frames, oldest = s.take()
			if frames == 0 {
				continue
			}
		case <-gone:
			return "client gone", false
		case <-ending:
			d := s.cfg.EndDelay()
			if d <= 0 {
				return "config replaced", false
			}
			ending = nil
			a.endIn(d)
			continue
		case now := <-a.C():
			switch a.due(now) {
			case alarmEnd:
				return "config replaced", false
			case alarmExpired:
				return "token expired", false
			case alarmNone:
				continue
			}
			s.buf = append(s.buf, ":\n\n"...)
		}
		if err := s.flush(); err != nil {
			return s.writeFailed(err)
		}
		if frames > 0 {
			s.cfg.Observer.Written(frames, oldest)
		}
		a.wrote()
	}
}

// hubEnded is why a stream the hub ended ends, and whether to drop the
// connection. (Out of loop, as writeFailed: see run.)
//
//go:noinline
func hubEnded(reason string) (string, bool) {
	return "hub: " + reason, reason == hub.DropSlow
}

//go:noinline
func (s *writer) writeFailed(err error) (string, bool) {
	s.cfg.Observer.WriteFailed()
	return "write: " + err.Error(), true
}

// take appends every queued frame to buf and returns how many, and when
// the oldest was received.
func (s *writer) take() (int, time.Time) {
	s.frames = s.Sub.Take(s.frames[:0])
	n := len(s.frames)
	if n == 0 {
		return 0, time.Time{}
	}
	oldest := s.frames[0].At
	for _, f := range s.frames {
		s.buf = s.Sub.Append(s.buf, f)
	}
	clear(s.frames)
	if cap(s.frames) > 64 {
		s.frames = nil
	}
	return n, oldest
}
