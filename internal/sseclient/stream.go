package sseclient

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"
)

// ErrTimeout is what Next's error wraps when no event came in time.
var ErrTimeout = errors.New("no event in time")

// Stream is an open event stream. One goroutine reads it from Open to its
// end, so the server never waits on a test that is not calling Next, and
// queues its events and lines for Next, Nothing and SawLine.
type Stream struct {
	// Response is the GET's response: its status, protocol and headers.
	// Its Body belongs to the Stream, unless the status is not 200.
	Response *http.Response

	cancel context.CancelFunc
	ready  chan struct{} // holds a signal when an event may be queued
	done   chan struct{} // closed when the reading has stopped, after err is set

	mu     sync.Mutex
	events []Event  // read and not yet taken by Next
	lines  []string // every line, comments included
	err    error    // why the reading stopped
}

// Open sends a GET for url with header through client (nil means
// http.DefaultClient) and returns once the response headers are in. A
// status other than 200 is not an error: the Stream reads nothing, its
// Next returns the status as an error, and Response.Body is the caller's
// to read. Close the Stream in every case.
func Open(client *http.Client, url string, header http.Header) (*Stream, error) {
	if client == nil {
		client = http.DefaultClient
	}
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		cancel()
		return nil, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := client.Do(req)
	if err != nil {
		cancel()
		return nil, err
	}
	s := &Stream{Response: resp, cancel: cancel, ready: make(chan struct{}, 1), done: make(chan struct{})}
	if resp.StatusCode != http.StatusOK {
		s.err = fmt.Errorf("GET %s: %s", url, resp.Status)
		close(s.done)
		return s, nil
	}
	go s.read(NewReader(resp.Body))
	return s, nil
}

func (s *Stream) read(r *Reader) {
	defer close(s.done)
	for {
		line, err := r.Line()
		if err != nil {
			s.mu.Lock()
			s.err = err
			s.mu.Unlock()
			return
		}
		ev, ok := r.parse(line)
		s.mu.Lock()
		s.lines = append(s.lines, string(line))
		if ok {
			s.events = append(s.events, ev)
		}
		s.mu.Unlock()
		if ok {
			s.signal()
		}
	}
}

// signal wakes a waiting Next, or the next one to wait.
func (s *Stream) signal() {
	select {
	case s.ready <- struct{}{}:
	default:
	}
}

// Next returns the next event, waiting for it up to timeout, or without
// a limit when timeout is 0. Its error wraps ErrTimeout when none came in
// time. Once the events read are taken, it returns the error that ended
// the stream as it is: io.EOF when the server ended it.
func (s *Stream) Next(timeout time.Duration) (Event, error) {
	var expired <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		expired = t.C
	}
	return s.next(expired, timeout)
}

func (s *Stream) next(expired <-chan time.Time, timeout time.Duration) (Event, error) {
	for {
		s.mu.Lock()
		if len(s.events) > 0 {
			ev := s.events[0]
			s.events[0] = Event{}
			s.events = s.events[1:]
			more := len(s.events) > 0
			s.mu.Unlock()
			if more {
				// Another Next may be waiting for the signal this one took.
				s.signal()
			}
			return ev, nil
		}
		err := s.err
		s.mu.Unlock()
		if err != nil {
			return Event{}, err
		}
		select {
		case <-s.ready:
		case <-s.done:
		case <-expired:
			return Event{}, fmt.Errorf("no event within %v: %w", timeout, ErrTimeout)
		}
	}
}

// Nothing returns an error naming the event that arrives within d, if
// one does. A stream that ends delivers nothing more, so its end is nil.
func (s *Stream) Nothing(d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	ev, err := s.next(t.C, d)
	if err != nil {
		return nil
	}
	return fmt.Errorf("an event within %v: %+v", d, ev)
}

// SawLine reports whether a line read so far, comments included, starts
// with prefix.
func (s *Stream) SawLine(prefix string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.lines {
		if strings.HasPrefix(l, prefix) {
			return true
		}
	}
	return false
}

// Lines returns every line read so far, comments and blank lines
// included, without their ends of line.
func (s *Stream) Lines() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.lines...)
}

// Close ends the request and returns once the reading has stopped.
func (s *Stream) Close() {
	s.cancel()
	s.Response.Body.Close()
	<-s.done
}
