package stream

import (
	"sync"
	"time"
)

// watchdogTick is how often the watchdog looks at the writes in progress:
// a write is cut off between write_timeout and write_timeout plus this.
const watchdogTick = 250 * time.Millisecond

// watchdog bounds the writes of the streams served through the response
// (HTTP/2, HTTP/3, and HTTP/1.x that could not be taken over). A write
// only marks when it began; the watchdog, one goroutine for the process
// while any such stream is open, aborts the writes that have taken longer
// than their timeout. A write then costs two atomic stores rather than a
// timer armed and stopped through the HTTP/2 serve loop.
type watchdog struct {
	mu      sync.Mutex
	wires   map[*responseWire]struct{}
	running bool
}

// writes watches the process's response wires.
var writes = &watchdog{wires: map[*responseWire]struct{}{}}

func (d *watchdog) watch(o *responseWire) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.wires[o] = struct{}{}
	if !d.running {
		d.running = true
		go d.run()
	}
}

func (d *watchdog) forget(o *responseWire) {
	d.mu.Lock()
	delete(d.wires, o)
	d.mu.Unlock()
}

// run looks at the writes every tick until no wire is left to watch.
func (d *watchdog) run() {
	t := time.NewTicker(watchdogTick)
	defer t.Stop()
	var late []*responseWire
	for now := range t.C {
		var more bool
		late, more = d.late(now.UnixNano(), late[:0])
		for _, o := range late {
			o.abort()
		}
		clear(late)
		if !more {
			return
		}
	}
}

// late appends the wires whose write has taken too long to into. It
// reports false, and the watchdog stops, when no wire is left to watch.
func (d *watchdog) late(now int64, into []*responseWire) ([]*responseWire, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.wires) == 0 {
		d.running = false
		return into, false
	}
	for o := range d.wires {
		if o.late(now) {
			into = append(into, o)
		}
	}
	return into, true
}
