package sserelay

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sse-relay/caddy-sse-relay/internal/stream"
)

// TestRunApartPanics: what a goroutine apart panics with reaches the
// request's goroutine: http.ErrAbortHandler as it is (the server drops
// the request quietly), anything else with the stack it came from.
func TestRunApartPanics(t *testing.T) {
	ran := false
	if p := runApart(func() { ran = true }); p != nil || !ran {
		t.Fatalf("a run that returns: panicked %v, ran %v", p, ran)
	}
	if p := runApart(func() { panic(http.ErrAbortHandler) }); p != http.ErrAbortHandler {
		t.Fatalf("an aborted run: panicked %v, want http.ErrAbortHandler", p)
	}
	errBroken := errors.New("broken")
	if p, ok := runApart(func() { panic(errBroken) }).(error); !ok || !errors.Is(p, errBroken) {
		t.Fatalf("a run that panics with an error: %v, want it wrapped", p)
	}
	p := runApart(func() { panic("broken " + fmt.Sprint(7)) })
	err, ok := p.(error)
	if !ok || !strings.HasPrefix(err.Error(), "broken 7\n") || !strings.Contains(err.Error(), "TestRunApartPanics") {
		t.Fatalf("a run that panics: %v, want its value and its stack", p)
	}
}

// parkedCalls is a Parked that notes what was asked of it.
type parkedCalls struct {
	started int
	waited  []bool // whether done was closed, for each Wait
}

func (p *parkedCalls) Start() { p.started++ }
func (p *parkedCalls) Wait(done <-chan struct{}) {
	select {
	case <-done:
		p.waited = append(p.waited, true)
	default:
		p.waited = append(p.waited, false)
	}
}

// park leaves s in the Parking of r's context, as stream's Serve does.
func park(r *http.Request, s stream.Parked) {
	r.Context().Value(stream.ParkingKey{}).(*stream.Parking).Stream = s
}

// TestParkApart: a stream parked apart is started there and handed back
// for its caller to wait on; one parked before a panic is started and
// ended at once (its subscription and slot given back) and the panic goes
// on; a request that parks nothing hands back nothing.
func TestParkApart(t *testing.T) {
	r := httptest.NewRequest(http.MethodGet, "/events/a", nil)
	if got := parkApart(r, func(*http.Request) {}); got != nil {
		t.Fatalf("nothing parked, got %v", got)
	}
	s := new(parkedCalls)
	if got := parkApart(r, func(pr *http.Request) { park(pr, s) }); got != s || s.started != 1 || len(s.waited) != 0 {
		t.Fatalf("parked: got %v, started %d, waited %v", got, s.started, s.waited)
	}
	s = new(parkedCalls)
	func() {
		defer func() {
			if p := recover(); p == nil || !strings.HasPrefix(fmt.Sprint(p), "broken\n") {
				t.Fatalf("the panic after parking: %v", p)
			}
		}()
		parkApart(r, func(pr *http.Request) { park(pr, s); panic("broken") })
	}()
	if s.started != 1 || len(s.waited) != 1 || !s.waited[0] {
		t.Fatalf("abandoned: started %d, waited %v, want started and ended at once", s.started, s.waited)
	}
}
