package sserelay

import (
	"context"
	"fmt"
	"net/http"
	"runtime"

	"github.com/sse-relay/caddy-sse-relay/internal/stream"
)

// parkApart runs serve on a goroutine apart (runApart) with a Parking in
// the request's context, starts the event stream that serve left parked
// there, if any, and returns it for the caller to Wait on: the caller's
// goroutine, which HTTP/2 keeps for the stream's life, has then run none of
// serve. A panic in serve after it parked a stream ends the stream and
// goes on, to the caller.
func parkApart(r *http.Request, serve func(*http.Request)) stream.Parked {
	p := new(stream.Parking)
	pr := r.WithContext(context.WithValue(r.Context(), stream.ParkingKey{}, p))
	panicked := runApart(func() {
		returned := false
		defer func() {
			if !returned {
				p.Abandon()
			}
		}()
		serve(pr)
		returned = true
		if p.Stream != nil {
			p.Stream.Start()
		}
	})
	if panicked != nil {
		panic(panicked)
	}
	return p.Stream
}

// runApart runs run on another goroutine and waits for it, and returns
// what it panicked with, if anything: http.ErrAbortHandler as it is (the
// server drops the request without a word), anything else with the stack
// it panicked on, for the server's log.
//
// An event stream's HTTP/2 request keeps its goroutine for the stream's
// life, and with it the stack that goroutine grew: Go halves an idle
// stack during GC only while under a quarter of it is in use, so a stack
// that grew to 16 KiB through the subscribe stays near that
// (e2e.TestRelayHTTP2ParkedStack). The work that grows it runs apart, and
// the request's goroutine only waits for the stream's end.
func runApart(run func()) (panicked any) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer func() {
			if p := recover(); p != nil {
				panicked = stackedPanic(p)
			}
		}()
		run()
	}()
	<-done
	return panicked
}

// stackedPanic is what a goroutine apart panicked with, to panic with
// again on the request's goroutine.
func stackedPanic(p any) any {
	if p == http.ErrAbortHandler {
		return p
	}
	buf := make([]byte, 64<<10)
	stack := buf[:runtime.Stack(buf, false)]
	if err, ok := p.(error); ok {
		return fmt.Errorf("%w\n%s", err, stack)
	}
	return fmt.Errorf("%v\n%s", p, stack)
}
