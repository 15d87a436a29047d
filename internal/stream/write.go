package stream

import (
	"net/http"
	"slices"
	"strconv"
	"sync"
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

// writer is one stream being written. It has no goroutine of its own:
// whatever has something for it (the hub queuing frames or ending the
// subscription, the clock for a heartbeat, an expiry or an end, the client
// leaving) kicks it, and a kick hands it to a goroutine that writes what
// there is (drain) and then waits a moment for another stream (a drainer,
// drainers.go). An
// idle stream is then its memory only: a taken-over HTTP/1.1 or HTTP/3
// stream has no goroutine, and the handler goroutine an HTTP/2 stream must
// keep only waits (see Wait).
type writer struct {
	Stream
	cfg     *Config
	wire    wire
	inner   http.ResponseWriter // the server's own, under Caddy's wrappers (HTTP/2)
	remote  string
	buf     []byte       // what the next write sends; nil between writes
	box     *[]byte      // buf's box in bufs while the stream holds it
	frames  []*hub.Frame // scratch for Take
	backlog [][]byte     // replayed frames not yet written, shared with the rings

	kicks  atomic.Int32 // kicks not yet seen by a drain; never 0 again once ended
	gone   atomic.Bool  // the client left
	opened bool         // the opening is written (drain's)
	alarm  alarm
	group  *endGroup // its config's, for the ending
	// ended is told once the stream has ended: a taken-over connection
	// closes it, a handler returns (tellOver, Wait).
	ended func(abort bool)
	over  chan bool // a response stream's end, for Wait
}

// start puts the opening lines in buf and takes the replayed frames, for
// writeOpening.
func (s *writer) start() {
	s.grab()
	s.buf = append(s.buf, ": ok\n"...)
	if s.cfg.Retry > 0 {
		s.buf = append(s.buf, "retry: "...)
		s.buf = strconv.AppendInt(s.buf, s.cfg.Retry.Milliseconds(), 10)
		s.buf = append(s.buf, '\n')
	}
	s.buf = append(s.buf, '\n')
	s.backlog, s.Sub.Backlog = s.Sub.Backlog, nil
}

// begin starts serving the stream: it joins the clock and its config's
// ending, and the hub's notices kick it; the first drain writes the
// opening.
func (s *writer) begin(ended func(abort bool)) {
	s.ended = ended
	s.alarm.init(s.cfg.Heartbeat, s.Expires, time.Now().UnixNano())
	ends.join(s)
	s.Sub.Notify(s.kick)
	s.kick()
}

// kick has a drain run for the stream, unless one is running, which then
// goes round once more.
func (s *writer) kick() {
	if s.kicks.Add(1) == 1 {
		hand(s)
	}
}

// leave notes that the client left.
func (s *writer) leave() {
	s.gone.Store(true)
	s.kick()
}

// leaveHere is leave on a goroutine that may drain the stream itself (the
// handler's, in Wait): when a server stops, 50,000 streams' handlers each
// starting a goroutine to end its stream crowded out the goroutines
// closing connections, and the stop took seconds.
func (s *writer) leaveHere() {
	s.gone.Store(true)
	s.drainHere()
}

// drainHere is kick, draining on the calling goroutine when no drain runs.
func (s *writer) drainHere() {
	if s.kicks.Add(1) == 1 {
		s.drain()
	}
}

// drain does what the kicks since the last drain asked for, until none is
// left or the stream ends. Its kicks stay counted once the stream ended,
// so that no later kick starts another.
func (s *writer) drain() {
	for {
		n := s.kicks.Load()
		if reason, abort, over := s.step(); over {
			s.finish(reason, abort)
			return
		}
		s.rearm()
		if s.kicks.Add(-n) == 0 {
			return
		}
	}
}

// finish ends the stream: out of the clock and its config's ending, the
// buffer back, Done, and last the end told (after which nothing may touch
// the response).
func (s *writer) finish(reason string, abort bool) {
	if s.alarm.asked != 0 {
		alarms[s.alarm.shard].set(s, 0)
	}
	ends.leave(s)
	s.release()
	if s.opened {
		s.cfg.Observer.Closed()
		s.logClosed(reason)
	}
	s.Done()
	s.ended(abort)
}

func (s *writer) logOpened() {
	s.cfg.Logger.Debug("stream opened", zap.Strings("channels", s.Channels), zap.String("remote", s.remote))
}

func (s *writer) logClosed(reason string) {
	s.cfg.Logger.Debug("stream closed", zap.Strings("channels", s.Channels), zap.String("reason", reason))
}

// bufs holds write buffers between writes: a stream takes one when it has
// something to write and gives it back after the write, so an idle stream
// holds none (a burst's buffer kept for the life of 50,000 idle HTTP/2
// streams was 1.6 KiB each), and one stream's buffer serves the next.
// Each is boxed once, so that giving it back allocates nothing.
var bufs = sync.Pool{New: func() any {
	b := make([]byte, 0, 2048)
	return &b
}}

// maxPooledBuf is the largest buffer given back to bufs; a larger one (a
// long burst, a chunk of replay) is left to the collector.
const maxPooledBuf = 64 << 10

// grab gives the stream a buffer from bufs, unless it holds one.
func (s *writer) grab() {
	if s.box == nil {
		s.box = bufs.Get().(*[]byte)
		s.buf = (*s.box)[:0]
	}
}

// release gives the stream's buffer back to bufs.
func (s *writer) release() {
	if s.box == nil {
		s.buf = nil
		return
	}
	*s.box = nil
	if cap(s.buf) <= maxPooledBuf {
		*s.box = s.buf[:0]
	}
	bufs.Put(s.box)
	s.box, s.buf = nil, nil
}

// flush writes buf at once, and releases it: every wire's write is done
// with the bytes when it returns.
func (s *writer) flush() error {
	err := s.wire.write(s.buf)
	s.release()
	return err
}

// heartbeat is the comment line written after a heartbeat of silence.
var heartbeat = []byte(":\n\n")

// backlogChunk is about how much replay one write carries.
const backlogChunk = 64 << 10

// writeOpening writes what start put in buf, then the replayed frames a
// chunk at a time: a resume can replay the whole ring of every channel,
// and copying all of it into each stream's buffer at once would let a few
// hundred resuming clients hold gigabytes.
func (s *writer) writeOpening() error {
	for {
		s.grab()
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

// step writes what the stream has to write: the opening first, then the
// frames pending coalesced into one write, or a heartbeat when one is due
// and nothing else goes out. It returns whether the stream is over, why,
// and whether the connection should be dropped rather than ended cleanly.
func (s *writer) step() (string, bool, bool) {
	if !s.opened {
		if err := s.writeOpening(); err != nil {
			s.cfg.Observer.WriteFailed()
			return "write: " + err.Error(), true, true
		}
		s.opened = true
		s.cfg.Observer.Opened()
		s.logOpened()
	}
	if r := s.Sub.Reason(); r != "" {
		reason, abort := hubEnded(r)
		return reason, abort, true
	}
	if s.gone.Load() {
		return "client gone", false, true
	}
	now := time.Now().UnixNano()
	due := s.alarm.due(now)
	switch due {
	case alarmEnd:
		return "config replaced", false, true
	case alarmExpired:
		return "token expired", false, true
	}
	frames, oldest := s.take()
	var err error
	switch {
	case frames > 0:
		err = s.flush()
	case due == alarmHeartbeat:
		err = s.wire.write(heartbeat) // no buffer: a wave of heartbeats allocates none
	default:
		return "", false, false
	}
	if err != nil {
		reason, abort := s.writeFailed(err)
		return reason, abort, true
	}
	if frames > 0 {
		s.cfg.Observer.Written(frames, oldest)
	}
	s.alarm.wrote(now)
	return "", false, false
}

// hubEnded is why a stream the hub ended ends, and whether to drop the
// connection.
func hubEnded(reason string) (string, bool) {
	return "hub: " + reason, reason == hub.DropSlow
}

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
	s.grab()
	for _, f := range s.frames {
		s.buf = s.Sub.Append(s.buf, f)
	}
	clear(s.frames)
	if cap(s.frames) > hub.KeptFrames {
		s.frames = nil
	}
	return n, oldest
}
