package broker

import (
	"context"
	"sync"
	"time"
)

// Memory limits match Redis's, so a config moves between them unchanged.
const (
	MemoryMaxPayload = RedisMaxPayload
	MemoryMaxChannel = RedisMaxChannel
)

// memory is the in-process broker: publishing delivers straight to the
// hub of this process. Useful for one node and for development.
type memory struct {
	// mu is held for a whole publish: one at a time, so a publish to
	// several channels is not interleaved with another.
	mu      sync.Mutex
	sink    Sink
	closed  bool
	started time.Time
}

func newMemory() *memory { return &memory{started: time.Now()} }

func (m *memory) Start(sink Sink) {
	m.mu.Lock()
	m.sink = sink
	m.mu.Unlock()
}

func (m *memory) Listen(string) <-chan struct{} { return ready }

func (m *memory) Unlisten(string) {}

func (m *memory) Limits() Limits {
	return Limits{MaxPayload: MemoryMaxPayload, MaxChannel: MemoryMaxChannel}
}

func (m *memory) Log() Log { return nil }

func (m *memory) Connected() bool { return true }

func (m *memory) State() State { return State{Connected: true, Since: m.started} }

func (m *memory) Publish(_ context.Context, channels []string, payload []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed || m.sink == nil {
		return ErrClosed
	}
	for _, ch := range channels {
		m.sink.Deliver(ch, payload)
	}
	return nil
}

func (m *memory) Close() error {
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	return nil
}

var ready = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()
