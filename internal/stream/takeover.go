package stream

import (
	"context"
	"net/http"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// takeOver hijacks an HTTP/1.x connection once the headers are out and
// serves the stream without a goroutine (see writer), so the request's
// goroutine, with the server's deep handler stack, and net/http's buffers
// and background reader are freed: an idle stream then costs a few KiB. It
// reports false when the connection cannot be taken over, leaving the
// response path to serve it.
//
// inner is the server's own ResponseWriter, under the wrappers that the
// headers were flushed through: it gives the raw connection, which the
// hang-up watcher can poll. Hijacking through an access log's recorder
// would give a byte-counting wrapper whose count the log reads on the
// request goroutine while this one writes.
func (s *writer) takeOver(inner http.ResponseWriter) bool {
	hj, ok := inner.(http.Hijacker)
	if !ok {
		return false
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		return false
	}
	s.wire = &takenWire{w: conn, timeout: s.cfg.WriteTimeout}
	unwatch := watchHangup(conn, s.leave)
	s.begin(func(bool) {
		unwatch()
		_ = conn.Close()
	})
	return true
}

// innermost follows Unwrap down to the ResponseWriter that the server's
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

// takenWire writes to a taken-over HTTP/1.x connection or HTTP/3 stream
// (whose Write makes a DATA frame), each write under a deadline.
type takenWire struct {
	w interface {
		Write(p []byte) (int, error)
		SetWriteDeadline(t time.Time) error
	}
	timeout time.Duration
}

func (o *takenWire) write(p []byte) error {
	if err := o.w.SetWriteDeadline(time.Now().Add(o.timeout)); err != nil {
		return err
	}
	_, err := o.w.Write(p)
	return err
}

// http3Streamer is HTTP/3's own ResponseWriter, which hands its stream over.
type http3Streamer interface{ HTTPStream() *http3.Stream }

// takeOverHTTP3 takes an HTTP/3 stream over once the headers are out, as
// takeOver does an HTTP/1.x connection: quic-go leaves a stream it handed
// over open when the handler returns, so the request's goroutine, with
// the server's handler stack and per-request state, is freed, and the
// relay writes DATA frames itself. The client leaving (its STOP_SENDING,
// or the connection closing) ends the stream's context. It reports false
// when the response is not HTTP/3's.
func (s *writer) takeOverHTTP3(inner http.ResponseWriter) bool {
	hs, ok := inner.(http3Streamer)
	if !ok {
		return false
	}
	str := hs.HTTPStream()
	s.wire = &takenWire{w: str, timeout: s.cfg.WriteTimeout}
	stop := context.AfterFunc(str.Context(), s.leave)
	s.begin(func(abort bool) {
		stop()
		if abort {
			str.CancelWrite(quic.StreamErrorCode(http3.ErrCodeInternalError))
		} else {
			_ = str.Close()
		}
		str.CancelRead(quic.StreamErrorCode(http3.ErrCodeNoError))
	})
	return true
}
