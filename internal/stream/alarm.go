package stream

import "time"

// What an alarm rang for.
const (
	alarmNone = iota
	alarmHeartbeat
	alarmExpired
	alarmEnd
)

// alarm is a stream's one timer: it rings at the first of the next
// heartbeat (a heartbeat interval after the last write), the token's
// expiry and the end of the stream after its config ended. A write only
// notes its time; the timer moves when it rings for a heartbeat that a
// write has since put off, at most once an interval, not on every write.
type alarm struct {
	t         *time.Timer
	heartbeat time.Duration
	beat      time.Time // when the timer rings for a heartbeat; zero without heartbeats
	last      time.Time // the last write
	expires   time.Time // zero without expiry
	end       time.Time // zero until the config ends
}

func newAlarm(heartbeat time.Duration, expires time.Time) *alarm {
	a := &alarm{heartbeat: heartbeat, expires: expires, last: time.Now()}
	if heartbeat > 0 {
		a.beat = a.last.Add(heartbeat)
	}
	if next := a.next(); !next.IsZero() {
		a.t = time.NewTimer(time.Until(next))
	}
	return a
}

// C is the channel the alarm rings on; nil, which never delivers, when
// there is nothing to ring for.
func (a *alarm) C() <-chan time.Time {
	if a.t == nil {
		return nil
	}
	return a.t.C
}

// next is the earliest of the times set, or zero.
func (a *alarm) next() time.Time {
	var next time.Time
	for _, t := range []time.Time{a.beat, a.expires, a.end} {
		if !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	return next
}

// set rearms the timer for the earliest time.
func (a *alarm) set() {
	next := a.next()
	switch {
	case next.IsZero():
		if a.t != nil {
			a.t.Stop()
		}
	case a.t == nil:
		a.t = time.NewTimer(time.Until(next))
	default:
		a.t.Reset(time.Until(next))
	}
}

// due says what the alarm rang for at now, the end before the expiry
// before the heartbeat, and rearms it for what is left. alarmNone means
// it rang early, for a time since moved.
func (a *alarm) due(now time.Time) int {
	switch {
	case !a.end.IsZero() && !now.Before(a.end):
		return alarmEnd
	case !a.expires.IsZero() && !now.Before(a.expires):
		return alarmExpired
	case !a.beat.IsZero() && !now.Before(a.beat):
		if due := a.last.Add(a.heartbeat); now.Before(due) {
			a.beat = due // a write put it off
			break
		}
		return alarmHeartbeat // wrote rearms it after the heartbeat goes out
	}
	a.set()
	return alarmNone
}

// wrote notes a write: the next heartbeat is due an interval after it.
func (a *alarm) wrote() {
	if a.heartbeat <= 0 {
		return
	}
	a.last = time.Now()
	if !a.last.Before(a.beat) {
		// After a heartbeat, or a ring put off: rearm.
		a.beat = a.last.Add(a.heartbeat)
		a.set()
	}
}

// endIn makes the alarm ring d from now for the stream's end.
func (a *alarm) endIn(d time.Duration) {
	a.end = time.Now().Add(d)
	a.set()
}

func (a *alarm) stop() {
	if a.t != nil {
		a.t.Stop()
	}
}
