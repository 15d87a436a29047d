package sserelay

import (
	"fmt"
	"net/http"
	"runtime"
)

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
