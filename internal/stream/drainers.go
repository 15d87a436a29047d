package stream

import (
	"sync"
	"sync/atomic"
	"time"
)

// A drainer is a goroutine that drains kicked streams, one at a time, and
// waits between drains for the next. A goroutine started for each kick
// began on a 2 KiB stack and grew it through the write path every time;
// one that waits keeps its stack, and the drainers come to as many as the
// writes in progress at once, not the streams.
type drainer struct {
	next chan *writer // the next stream to drain, or nil to exit
	idle int64        // when it last went idle, Unix nanoseconds
}

// drainerLinger is how long a drainer waits for another stream before it
// exits.
const drainerLinger = time.Second

// drainers are the drainers waiting between drains, the one idle longest
// first. A kick takes the last (whose stack is warm); the reaper ends
// those at the front once they have waited drainerLinger. Each drainer
// waits on its own channel, by a plain receive: a select over one channel
// shared by every idle drainer and a timer per drainer cost 8% of the
// relay's CPU at 1,000 HTTP/2 streams and 20 events a second.
var drainers struct {
	mu     sync.Mutex
	idle   []*drainer
	reaper *time.Timer  // armed while idle is not empty
	live   atomic.Int64 // drainers running, idle or not
}

// hand gives a kicked stream to an idle drainer, or to a new one.
func hand(s *writer) {
	drainers.mu.Lock()
	if n := len(drainers.idle); n > 0 {
		d := drainers.idle[n-1]
		drainers.idle[n-1] = nil
		drainers.idle = drainers.idle[:n-1]
		drainers.mu.Unlock()
		d.next <- s
		return
	}
	drainers.mu.Unlock()
	drainers.live.Add(1)
	go (&drainer{next: make(chan *writer, 1)}).run(s)
}

// run drains s, then each stream handed to it, until the reaper ends it.
func (d *drainer) run(s *writer) {
	defer drainers.live.Add(-1)
	for s != nil {
		s.drain()
		s = d.wait()
	}
}

// wait puts d among the idle drainers and returns the next stream it is
// handed, or nil when it is to exit.
func (d *drainer) wait() *writer {
	d.idle = time.Now().UnixNano()
	drainers.mu.Lock()
	drainers.idle = append(drainers.idle, d)
	if len(drainers.idle) == 1 {
		if drainers.reaper == nil {
			drainers.reaper = time.AfterFunc(drainerLinger, reap)
		} else {
			drainers.reaper.Reset(drainerLinger)
		}
	}
	drainers.mu.Unlock()
	return <-d.next
}

// reap ends the drainers idle for drainerLinger or longer, and arms
// itself for the next one to be.
func reap() {
	now := time.Now().UnixNano()
	drainers.mu.Lock()
	idle := drainers.idle
	n := 0
	for n < len(idle) && now-idle[n].idle >= int64(drainerLinger) {
		n++
	}
	done := make([]*drainer, n)
	copy(done, idle[:n])
	rest := copy(idle, idle[n:])
	clear(idle[rest:])
	idle = idle[:rest]
	if cap(idle) > 64 && rest < cap(idle)/4 {
		idle = append([]*drainer(nil), idle...)
	}
	drainers.idle = idle
	if rest > 0 {
		drainers.reaper.Reset(time.Duration(idle[0].idle + int64(drainerLinger) - now))
	}
	drainers.mu.Unlock()
	for _, d := range done {
		d.next <- nil
	}
}
