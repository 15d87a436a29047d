package broker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// History configures a broker's durable event log: up to Count events per
// channel, none older than MaxAge (0: no age limit). The zero value keeps
// no log.
type History struct {
	Count  int
	MaxAge time.Duration
}

// On reports whether the log is kept.
func (h History) On() bool { return h.Count > 0 }

// Position is an entry's place in its log, compared as the pair (Hi, Lo):
// on Postgres the writing transaction's id and the row's id, on Redis the
// stream entry id's milliseconds and sequence. Its text form is "Hi-Lo".
// The zero Position is before every entry.
type Position struct{ Hi, Lo uint64 }

// Less orders positions.
func (p Position) Less(q Position) bool { return p.Hi < q.Hi || (p.Hi == q.Hi && p.Lo < q.Lo) }

// IsZero reports whether p is before every entry.
func (p Position) IsZero() bool { return p == Position{} }

func (p Position) String() string {
	return strconv.FormatUint(p.Hi, 10) + "-" + strconv.FormatUint(p.Lo, 10)
}

// ParsePosition reads the text form.
func ParsePosition(s string) (Position, error) {
	hi, lo, ok := strings.Cut(s, "-")
	if !ok {
		return Position{}, fmt.Errorf("position %q: want <number>-<number>", s)
	}
	h, err1 := strconv.ParseUint(hi, 10, 64)
	l, err2 := strconv.ParseUint(lo, 10, 64)
	if err1 != nil || err2 != nil {
		return Position{}, fmt.Errorf("position %q: want <number>-<number>", s)
	}
	return Position{Hi: h, Lo: l}, nil
}

// Entry is one event of the log.
type Entry struct {
	Channel string
	Pos     Position
	Payload []byte
}

// Log is a broker's durable event log. Publish writes to it when history
// is on; the broker's reader hands what is appended to the sink's
// DeliverEntry, in position order per channel (in one order across every
// channel when GlobalOrder), and after a reconnect goes on from the last
// position it delivered instead of resetting.
type Log interface {
	// Read returns the entries of channels after after[channel], oldest
	// first, at most limit of them, and the channels whose entries after
	// that position are partly gone (trimmed by count or age).
	Read(ctx context.Context, after map[string]Position, limit int) (entries []Entry, trimmed []string, err error)
	// Head returns each channel's newest position (the zero Position for
	// a channel with no entry): a cursor from which a reader gets only
	// what is appended later.
	Head(ctx context.Context, channels []string) (map[string]Position, error)
	// GlobalOrder reports whether one position orders the entries of
	// every channel, so one position is a cursor for any set of channels.
	GlobalOrder() bool
	// Depth describes what the log holds now.
	Depth(ctx context.Context) (LogDepth, error)
	// Check makes sure the log's storage is there: on Postgres the
	// sse_relay schema (ErrNoSchema when missing), on Redis the function
	// library, which it loads.
	Check(ctx context.Context) error
}

// LogDepth is what a log holds.
type LogDepth struct {
	Entries  int64     `json:"entries"`
	Channels int64     `json:"channels"`
	Oldest   time.Time `json:"oldest,omitzero"`
}

// ErrNoHistory means the broker keeps no log.
var ErrNoHistory = errors.New("this broker keeps no history")

// ApplySchema creates what the log needs where rawURL points: on Postgres
// the sse_relay schema (its owner is whoever applies it), on Redis the
// function library.
func ApplySchema(ctx context.Context, rawURL string) error {
	b, err := Open(rawURL, nil, History{Count: 1})
	if err != nil {
		return err
	}
	defer b.Close()
	switch l := b.Log().(type) {
	case *pgLog:
		pool, err := l.readers()
		if err != nil {
			return err
		}
		if _, err := pool.Exec(ctx, PostgresSchema); err != nil {
			return fmt.Errorf("applying the sse_relay schema: %w", err)
		}
		return nil
	case *redisLog:
		return l.load(ctx)
	case *clusterLog:
		return l.load(ctx)
	}
	return ErrNoHistory
}
