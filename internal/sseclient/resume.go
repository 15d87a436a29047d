package sseclient

import (
	"context"
	"net/http"
	"sync"
	"time"
)

// Resumer is a client that reconnects with Last-Event-ID whenever its
// stream ends or cannot open, as EventSource does, and keeps every event
// it got. Reset is the name of the event counted apart, not kept.
type Resumer struct {
	URL    string
	Client *http.Client
	Reset  string
	// Retry is the wait before reconnecting; default 50ms.
	Retry time.Duration

	mu         sync.Mutex
	events     []Event
	resets     []Event
	reconnects int
	lastID     string
}

// RunAll runs every resumer until ctx ends and returns once each has made
// its first attempt; wait returns once they have all stopped.
func RunAll(ctx context.Context, rs []*Resumer) (wait func()) {
	var opened, done sync.WaitGroup
	opened.Add(len(rs))
	done.Add(len(rs))
	for _, r := range rs {
		go func() {
			defer done.Done()
			r.Run(ctx, opened.Done)
		}()
	}
	opened.Wait()
	return done.Wait
}

// Run reads until ctx ends; opened is told once the first attempt is done.
func (r *Resumer) Run(ctx context.Context, opened func()) {
	retry := r.Retry
	if retry == 0 {
		retry = 50 * time.Millisecond
	}
	for first := true; ctx.Err() == nil; first = false {
		r.mu.Lock()
		hdr := http.Header{}
		if r.lastID != "" {
			hdr.Set("Last-Event-ID", r.lastID)
		}
		r.mu.Unlock()
		s, err := Open(r.Client, r.URL, hdr)
		if first && opened != nil {
			opened()
		}
		if err == nil && s.Response.StatusCode == http.StatusOK {
			stop := context.AfterFunc(ctx, s.Close)
			r.read(s)
			stop()
		}
		if s != nil {
			s.Close()
		}
		if ctx.Err() != nil {
			return
		}
		r.mu.Lock()
		r.reconnects++
		r.mu.Unlock()
		select {
		case <-ctx.Done():
		case <-time.After(retry):
		}
	}
}

func (r *Resumer) read(s *Stream) {
	for {
		ev, err := s.Next(0)
		if err != nil {
			return
		}
		r.mu.Lock()
		if ev.Name != "" && ev.Name == r.Reset {
			r.resets = append(r.resets, ev)
		} else {
			r.events = append(r.events, ev)
		}
		if ev.ID != "" {
			r.lastID = ev.ID
		}
		r.mu.Unlock()
	}
}

// Events returns a copy of the events kept so far.
func (r *Resumer) Events() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Event(nil), r.events...)
}

// Count is how many events were kept.
func (r *Resumer) Count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.events)
}

// Resets returns the reset events seen.
func (r *Resumer) Resets() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Event(nil), r.resets...)
}

// Reconnects is how many times the stream was opened again.
func (r *Resumer) Reconnects() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reconnects
}
