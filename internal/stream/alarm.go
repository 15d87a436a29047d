package stream

import (
	"container/heap"
	"sync"
	"sync/atomic"
	"time"
)

// What an alarm is due for.
const (
	alarmNone = iota
	alarmHeartbeat
	alarmExpired
	alarmEnd
)

// alarm is what a stream has to do when no event comes: a heartbeat a
// heartbeat interval after the last write, an end at the token's expiry,
// and an end some time after its config ended. Times are Unix nanoseconds,
// 0 when unset. The stream has no timer: the process's clock kicks it at
// the earliest of them. A write only notes its time; the time the clock
// holds moves when it rings for a heartbeat that a write has since put
// off, at most once an interval, not on every write.
//
// Only the stream's drain reads and sets the fields, except end, which
// its config's ending sets, and at and slot, which are the clock's.
type alarm struct {
	heartbeat int64
	beat      int64 // when a heartbeat is due unless a write put it off
	last      int64 // the last write
	expires   int64
	end       atomic.Int64
	asked     int64       // the time last given to the clock
	rang      atomic.Bool // the clock has let go of the stream since
	at        int64       // the clock's: when it kicks the stream
	slot      int         // the clock's: the stream's place in its heap, or -1
	shard     uint32      // which clock, and which part of its config's ending
}

func (a *alarm) init(heartbeat time.Duration, expires time.Time, now int64) {
	a.slot = -1
	a.shard = nextShard.Add(1) % shards
	a.last = now
	if heartbeat > 0 {
		a.heartbeat = int64(heartbeat)
		a.beat = now + a.heartbeat
	}
	if !expires.IsZero() {
		a.expires = expires.UnixNano()
	}
}

// due says what is due at now, the end before the expiry before the
// heartbeat. A heartbeat that a write put off moves instead.
func (a *alarm) due(now int64) int {
	switch end := a.end.Load(); {
	case end != 0 && now >= end:
		return alarmEnd
	case a.expires != 0 && now >= a.expires:
		return alarmExpired
	case a.beat != 0 && now >= a.beat:
		if put := a.last + a.heartbeat; now < put {
			a.beat = put
			return alarmNone
		}
		return alarmHeartbeat // wrote moves it once the heartbeat is out
	}
	return alarmNone
}

// wrote notes a write at now: the next heartbeat is due an interval
// after it.
func (a *alarm) wrote(now int64) {
	if a.heartbeat == 0 {
		return
	}
	a.last = now
	if a.last >= a.beat {
		a.beat = a.last + a.heartbeat
	}
}

// next is the earliest time set, or 0.
func (a *alarm) next() int64 {
	next := int64(0)
	for _, t := range [...]int64{a.beat, a.expires, a.end.Load()} {
		if t != 0 && (next == 0 || t < next) {
			next = t
		}
	}
	return next
}

// clock kicks streams when their alarm is due: a heap and a timer for a
// shard of the process's streams, where a timer a stream (and its
// channel) was a few hundred bytes of each idle stream's memory. The
// process has shards of them, so that 50,000 streams ending at once (a
// server stopping) do not queue for one lock.
type clock struct {
	mu    sync.Mutex
	queue []*writer
	timer *time.Timer
	rings int64 // when the timer rings, or 0
}

// shards is how many clocks the process has, and how many parts a
// config's ending has.
const shards = 64

var (
	alarms    [shards]clock
	nextShard atomic.Uint32
)

// rearm gives the clock s's next time, if it changed or the clock rang
// since it was given.
func (s *writer) rearm() {
	next := s.alarm.next()
	if next == s.alarm.asked && !s.alarm.rang.Swap(false) {
		return
	}
	s.alarm.asked = next
	alarms[s.alarm.shard].set(s, next)
}

// set has the clock kick s at at, or never when at is 0.
func (c *clock) set(s *writer, at int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	a := &s.alarm
	switch {
	case at == 0 && a.slot >= 0:
		heap.Remove(c, a.slot)
	case at == 0:
	case a.slot >= 0:
		a.at = at
		heap.Fix(c, a.slot)
	default:
		a.at = at
		heap.Push(c, s)
	}
	c.arm()
}

// arm makes the timer ring by the earliest time held. Called with mu.
func (c *clock) arm() {
	if len(c.queue) == 0 {
		return // a ring with nothing due does nothing
	}
	head := c.queue[0].alarm.at
	if c.rings != 0 && c.rings <= head {
		return
	}
	c.rings = head
	d := time.Duration(head - time.Now().UnixNano())
	if c.timer == nil {
		c.timer = time.AfterFunc(d, c.ring)
	} else {
		c.timer.Reset(d)
	}
}

// ring kicks the streams whose time has come.
func (c *clock) ring() {
	now := time.Now().UnixNano()
	var due []*writer
	c.mu.Lock()
	c.rings = 0
	for len(c.queue) > 0 && c.queue[0].alarm.at <= now {
		s := heap.Pop(c).(*writer)
		s.alarm.rang.Store(true)
		due = append(due, s)
	}
	c.arm()
	c.mu.Unlock()
	for _, s := range due {
		s.kick()
	}
}

// The heap, for container/heap; called with mu.

func (c *clock) Len() int           { return len(c.queue) }
func (c *clock) Less(i, j int) bool { return c.queue[i].alarm.at < c.queue[j].alarm.at }
func (c *clock) Swap(i, j int) {
	c.queue[i], c.queue[j] = c.queue[j], c.queue[i]
	c.queue[i].alarm.slot = i
	c.queue[j].alarm.slot = j
}

func (c *clock) Push(x any) {
	s := x.(*writer)
	s.alarm.slot = len(c.queue)
	c.queue = append(c.queue, s)
}

func (c *clock) Pop() any {
	n := len(c.queue) - 1
	s := c.queue[n]
	c.queue[n] = nil
	c.queue = c.queue[:n]
	s.alarm.slot = -1
	return s
}
