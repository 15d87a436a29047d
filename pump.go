package sserelay

import (
	"sync/atomic"

	"github.com/sse-relay/caddy-sse-relay/broker"
	"github.com/sse-relay/caddy-sse-relay/hub"
)

// pumpQueue is how much a broker's reader may read ahead of the fan-out;
// past it, the reader waits, and the broker's own buffers hold the rest.
const pumpQueue = 4096

// pumpBatch bounds what one hand-over to the hub carries.
const pumpBatch = 256

// pump is the Sink between a broker and its hub: it counts what the
// broker hands over and gives it to the hub from a goroutine of its own,
// in order. The broker's reader then never waits for a fan-out: on a node
// with tens of thousands of streams, a fan-out wakes them all, and a
// reader that did the fan-out itself would get the CPU back only once they
// had all written, reading one event a round. Read ahead, a burst reaches
// the hub as one batch and each stream writes it at once.
type pump struct {
	hub      *hub.Hub
	received *atomic.Uint64
	in       chan pumped
	quit     chan struct{}
	done     chan struct{}
}

// pumped is one hand-over: a payload (an entry without a position), an
// entry of the log, or a reset. It is kept small: the queue holds
// pumpQueue of them from the start.
type pumped struct {
	kind  int
	entry broker.Entry
	reset *reset
}

// reset is a Reset call.
type reset struct {
	channels []string
	reason   string
}

// The kinds of hand-over.
const (
	pumpedPayload = iota
	pumpedEntry
	pumpedReset
)

func newPump(h *hub.Hub, received *atomic.Uint64) *pump {
	p := &pump{hub: h, received: received, in: make(chan pumped, pumpQueue),
		quit: make(chan struct{}), done: make(chan struct{})}
	go p.run()
	return p
}

func (p *pump) Deliver(channel string, payload []byte) {
	p.received.Add(1)
	p.put(pumped{kind: pumpedPayload, entry: broker.Entry{Channel: channel, Payload: payload}})
}

func (p *pump) DeliverEntry(e broker.Entry) {
	p.received.Add(1)
	p.put(pumped{kind: pumpedEntry, entry: e})
}

func (p *pump) Reset(channels []string, reason string) {
	p.put(pumped{kind: pumpedReset, reset: &reset{channels: channels, reason: reason}})
}

func (p *pump) put(x pumped) {
	select {
	case p.in <- x:
	case <-p.quit:
	}
}

// stop ends the pump once its broker is closed; what it still holds is
// dropped with the relay.
func (p *pump) stop() {
	close(p.quit)
	<-p.done
}

// run hands over what is queued, as much as is there at a time.
func (p *pump) run() {
	defer close(p.done)
	batch := make([]pumped, 0, pumpBatch)
	for {
		select {
		case x := <-p.in:
			batch = append(batch[:0], x)
		case <-p.quit:
			return
		}
	more:
		for len(batch) < pumpBatch {
			select {
			case x := <-p.in:
				batch = append(batch, x)
			default:
				break more
			}
		}
		p.hand(batch)
		clear(batch)
	}
}

// hand gives a batch to the hub in order: runs of payloads in one
// DeliverBatch, runs of entries in one DeliverEntries, resets one by one
// between them.
func (p *pump) hand(batch []pumped) {
	var msgs []hub.Message
	var entries []broker.Entry
	flush := func() {
		if len(msgs) > 0 {
			p.hub.DeliverBatch(msgs)
			msgs = msgs[:0]
		}
		if len(entries) > 0 {
			p.hub.DeliverEntries(entries)
			entries = entries[:0]
		}
	}
	for _, x := range batch {
		switch x.kind {
		case pumpedEntry:
			if len(msgs) > 0 {
				flush()
			}
			entries = append(entries, x.entry)
		case pumpedReset:
			flush()
			p.hub.Reset(x.reset.channels, x.reset.reason)
		default:
			if len(entries) > 0 {
				flush()
			}
			msgs = append(msgs, hub.Message{Channel: x.entry.Channel, Payload: x.entry.Payload})
		}
	}
	flush()
}
