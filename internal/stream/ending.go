package stream

import (
	"sync"
	"time"
)

// endings ends the streams of a config when its Ending closes: one
// goroutine a config waits for it and sets each of its streams' end, a
// stream's EndDelay from then, in place of every stream waiting on the
// channel itself.
type endings struct {
	mu     sync.Mutex
	groups map[<-chan struct{}]*endGroup
}

// endGroup is the open streams of one config, in parts (the stream's
// clock shard), so that streams ending together do not queue for one
// lock.
type endGroup struct {
	parts [shards]struct {
		mu    sync.Mutex
		live  map[*writer]struct{}
		ended bool
	}
}

var ends = &endings{groups: map[<-chan struct{}]*endGroup{}}

// join adds s to its config's group, or, when the config has already
// ended, sets its end at once.
func (e *endings) join(s *writer) {
	ch := s.cfg.Ending
	if ch == nil {
		return
	}
	e.mu.Lock()
	g := e.groups[ch]
	if g == nil {
		select {
		case <-ch:
			// Ended, and its group gone: end now.
			e.mu.Unlock()
			s.endSoon()
			return
		default:
		}
		g = new(endGroup)
		e.groups[ch] = g
		go e.wait(s.cfg, g)
	}
	e.mu.Unlock()
	part := &g.parts[s.alarm.shard]
	part.mu.Lock()
	ended := part.ended
	if !ended {
		if part.live == nil {
			part.live = map[*writer]struct{}{}
		}
		part.live[s] = struct{}{}
		s.group = g
	}
	part.mu.Unlock()
	if ended {
		s.endSoon()
	}
}

// leave takes s out of its config's group.
func (e *endings) leave(s *writer) {
	if s.group == nil {
		return
	}
	part := &s.group.parts[s.alarm.shard]
	part.mu.Lock()
	delete(part.live, s)
	part.mu.Unlock()
}

// wait ends g's streams once cfg's Ending closes, and drops the group: a
// stream that joins later finds the channel closed, or its part ended.
func (e *endings) wait(cfg *Config, g *endGroup) {
	<-cfg.Ending
	e.mu.Lock()
	delete(e.groups, cfg.Ending)
	e.mu.Unlock()
	var live []*writer
	for i := range g.parts {
		part := &g.parts[i]
		part.mu.Lock()
		part.ended = true
		for s := range part.live {
			live = append(live, s)
		}
		part.live = nil
		part.mu.Unlock()
	}
	for _, s := range live {
		s.endSoon()
	}
}

// endSoon ends s its config's EndDelay from now (at once when that is not
// positive).
func (s *writer) endSoon() {
	s.setEnd()
	s.kick()
}

// endHere is endSoon on a goroutine that may drain the stream itself (the
// handler's, in Wait).
func (s *writer) endHere() {
	s.setEnd()
	s.drainHere()
}

// setEnd sets s's end its config's EndDelay from now, unless an earlier
// one is set.
func (s *writer) setEnd() {
	at := time.Now().Add(max(s.cfg.EndDelay(), 0)).UnixNano()
	for {
		old := s.alarm.end.Load()
		if old != 0 && old <= at || s.alarm.end.CompareAndSwap(old, at) {
			return
		}
	}
}
