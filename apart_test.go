package sserelay

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
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
