package sseclient

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"
)

// TestStream: against an httptest server, Open sends the extra headers and
// gives the response's status and headers; Next returns the events in
// order, then ErrTimeout while the stream is quiet, then io.EOF once the
// server ends it; Nothing and SawLine see what was sent.
func TestStream(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Last-Event-ID") != "41" {
			http.Error(w, "no Last-Event-ID", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, ": ok\n\nretry: 1500\n\nid: 42\nevent: order\ndata: a\ndata: b\n\n:\n")
		w.(http.Flusher).Flush()
		<-release
		fmt.Fprint(w, "data: last\n\n")
	}))
	defer srv.Close()

	s, err := Open(srv.Client(), srv.URL, http.Header{"Last-Event-ID": {"41"}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Response.StatusCode != http.StatusOK || s.Response.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("%s %v", s.Response.Status, s.Response.Header)
	}
	if ev, err := s.Next(5 * time.Second); err != nil || ev != (Event{ID: "42", Name: "order", Data: "a\nb"}) {
		t.Fatalf("got %+v, %v", ev, err)
	}
	if err := s.Nothing(100 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Next(50 * time.Millisecond); !errors.Is(err, ErrTimeout) {
		t.Fatalf("a quiet stream: %v, want ErrTimeout", err)
	}
	for _, prefix := range []string{": ok", "retry: 1500", "id: 42", ":"} {
		if !s.SawLine(prefix) {
			t.Errorf("no line starts with %q", prefix)
		}
	}
	if s.SawLine("data: last") {
		t.Error("saw a line before it was sent")
	}
	if n := len(slices.DeleteFunc(s.Lines(), func(l string) bool { return l != ":" })); n != 1 {
		t.Errorf("%d lines that are only a colon, want 1", n)
	}

	close(release)
	if ev, err := s.Next(5 * time.Second); err != nil || ev.Data != "last" {
		t.Fatalf("got %+v, %v", ev, err)
	}
	if _, err := s.Next(5 * time.Second); err != io.EOF {
		t.Fatalf("after the server ended the stream: %v, want io.EOF", err)
	}
	if err := s.Nothing(time.Second); err != nil {
		t.Fatalf("an ended stream: %v", err)
	}
}

// TestStreamRefused: a status other than 200 opens a Stream that reads
// nothing, whose Next says the status, and whose body the caller reads.
func TestStreamRefused(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no such channel", http.StatusForbidden)
	}))
	defer srv.Close()
	s, err := Open(nil, srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Response.StatusCode != http.StatusForbidden {
		t.Fatalf("status %d", s.Response.StatusCode)
	}
	if _, err := s.Next(time.Second); err == nil || errors.Is(err, ErrTimeout) || err.Error() != "GET "+srv.URL+": 403 Forbidden" {
		t.Fatalf("Next on a 403: %v", err)
	}
	if b, err := io.ReadAll(s.Response.Body); err != nil || string(b) != "no such channel\n" {
		t.Fatalf("body %q, %v", b, err)
	}
}

// TestStreamClose: Close ends a stream the server keeps open, a Next
// waiting without a limit returns, and no reading goroutine is left.
func TestStreamClose(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	defer srv.Close()
	s, err := Open(srv.Client(), srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	ended := make(chan error, 1)
	go func() {
		_, err := s.Next(0)
		ended <- err
	}()
	time.Sleep(50 * time.Millisecond)
	s.Close()
	select {
	case <-s.done:
	default:
		t.Fatal("Close returned before the reading stopped")
	}
	select {
	case err := <-ended:
		if err == nil || errors.Is(err, ErrTimeout) {
			t.Fatalf("Next after Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Next(0) still waiting after Close")
	}
}
