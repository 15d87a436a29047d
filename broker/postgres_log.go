package broker

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"
)

// PostgresSchema is the SQL that creates the log: the sse_relay schema, its
// tables and the functions publish, head and trim.
//
//go:embed schema.sql
var PostgresSchema string

// pgAnnounce is the channel sse_relay.publish notifies, with the event's
// channel as payload: one LISTEN per connection, whatever the channels.
const pgAnnounce = "sse_relay"

const (
	pgReadBatch  = 500
	pgTrimEvery  = 30 * time.Second
	pgPollFirst  = 20 * time.Millisecond
	pgPollMost   = 500 * time.Millisecond
	pgReadersMax = 8
)

// pgLog is the Postgres broker's log: the reader's place in it, and a small
// pool for the reads of resuming streams, which must not wait behind the
// listening connection.
type pgLog struct {
	history History
	cfg     *pgx.ConnConfig
	logger  *zap.Logger

	// Owned by the broker's goroutine.
	pos      Position            // the last position delivered
	since    map[string]Position // per channel name, where it started to be listened
	due      bool                // an announcement or a poll asks for a read
	poll     time.Duration       // how soon to read again while rows wait (0: only when told)
	trimAt   time.Time           // next retention run
	trimWarn bool                // a failing trim was logged

	poolOnce sync.Once
	pool     *pgxpool.Pool
	poolErr  error
}

// readers is the pool, opened on first use.
func (l *pgLog) readers() (*pgxpool.Pool, error) {
	l.poolOnce.Do(func() {
		cfg, err := pgxpool.ParseConfig("")
		if err != nil {
			l.poolErr = err
			return
		}
		cfg.ConnConfig = l.cfg.Copy()
		cfg.MaxConns = pgReadersMax
		l.pool, l.poolErr = pgxpool.NewWithConfig(context.Background(), cfg)
	})
	return l.pool, l.poolErr
}

func (l *pgLog) close() {
	if l.pool != nil {
		l.pool.Close()
	}
}

func (l *pgLog) GlobalOrder() bool { return true }

// Check reports whether the schema exists where the broker points.
func (l *pgLog) Check(ctx context.Context) error {
	pool, err := l.readers()
	if err != nil {
		return err
	}
	var events, publish *string
	err = pool.QueryRow(ctx, `SELECT to_regclass('sse_relay.events')::text, to_regprocedure('sse_relay.publish(text,text)')::text`).
		Scan(&events, &publish)
	if err != nil {
		return fmt.Errorf("checking the sse_relay schema: %w", err)
	}
	if events == nil || publish == nil {
		return ErrNoSchema
	}
	return nil
}

// ErrNoSchema means history is on but the log's storage is missing.
var ErrNoSchema = errors.New("the sse_relay schema is missing: create it with `caddy sse-relay schema --apply --broker <url>` (or the Django migration django_sse_relay 0001)")

// start sets the reader's place at a new connection: where it was, or, the
// first time, after everything committed before now.
func (l *pgLog) start(ctx context.Context, conn *pgx.Conn) error {
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{pgAnnounce}.Sanitize()); err != nil {
		return fmt.Errorf("listen %q: %w", pgAnnounce, err)
	}
	l.due = true
	if !l.pos.IsZero() {
		return nil
	}
	var head string
	if err := conn.QueryRow(ctx, `SELECT pg_snapshot_xmin(pg_current_snapshot())::text`).Scan(&head); err != nil {
		return fmt.Errorf("reading the log's head: %w", err)
	}
	xmin, err := strconv.ParseUint(head, 10, 64)
	if err != nil {
		return fmt.Errorf("reading the log's head: %w", err)
	}
	l.pos = Position{Hi: xmin - 1, Lo: math.MaxInt64}
	return nil
}

// listening records, before names are first listened to, the position
// they start at: the log's head now. The reader's place is one for all
// channels, and a channel listened to later must not get, as live events,
// what was committed before anyone listened. (Read before the LISTEN: a
// transaction still running then has an id at or after the head, so
// nothing it commits is skipped.) A name listened to again after a
// reconnect keeps its place, so what came in the outage is delivered.
func (l *pgLog) listening(ctx context.Context, conn *pgx.Conn, names []string) error {
	ctx, cancel := context.WithTimeout(ctx, pgCallTimeout)
	defer cancel()
	var text string
	if err := conn.QueryRow(ctx, `SELECT sse_relay.head()`).Scan(&text); err != nil {
		return fmt.Errorf("reading the log's head: %w", err)
	}
	head, err := ParsePosition(text)
	if err != nil {
		return err
	}
	if l.since == nil {
		l.since = map[string]Position{}
	}
	for _, name := range names {
		if _, ok := l.since[name]; !ok {
			l.since[name] = head
		}
	}
	return nil
}

// unlistened forgets where name started.
func (l *pgLog) unlistened(name string) { delete(l.since, name) }

// announced notes an announcement for a channel the connection listens to.
func (l *pgLog) announced(channel string, listened map[string]int) {
	if listened[channel] > 0 {
		l.due = true
	}
}

// read delivers every entry of the listened channels that is safe to
// deliver, in (tx, id) order. A row whose transaction is newer than one
// still running waits: that one may yet commit an entry before it. While
// such rows wait, the log is polled, since the transaction holding them
// back may commit no event and so announce nothing.
func (l *pgLog) read(ctx context.Context, conn *pgx.Conn, routes map[string][]string, sink Sink) error {
	if !l.due {
		return nil
	}
	l.due = false
	names := make([]string, 0, len(routes))
	for name := range routes {
		names = append(names, name)
	}
	if len(names) == 0 {
		l.poll = 0
		return nil
	}
	for {
		n, held, err := l.readBatch(ctx, conn, names, routes, sink)
		if err != nil {
			return err
		}
		if held {
			l.due = true
			l.poll = min(max(l.poll*2, pgPollFirst), pgPollMost)
			return nil
		}
		if n < pgReadBatch {
			l.poll = 0
			return nil
		}
	}
}

func (l *pgLog) readBatch(ctx context.Context, conn *pgx.Conn, names []string, routes map[string][]string, sink Sink) (n int, held bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, pgCallTimeout)
	defer cancel()
	rows, err := conn.Query(ctx, `
		SELECT e.channel, e.tx::text, e.id, e.payload, e.tx < pg_snapshot_xmin(pg_current_snapshot())
		FROM sse_relay.events e
		WHERE e.channel = ANY($1) AND (e.tx, e.id) > ($2::text::xid8, $3)
		ORDER BY e.tx, e.id
		LIMIT `+strconv.Itoa(pgReadBatch),
		names, strconv.FormatUint(l.pos.Hi, 10), int64(l.pos.Lo))
	if err != nil {
		return 0, false, fmt.Errorf("reading the log: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var channel, tx, payload string
		var id int64
		var safe bool
		if err := rows.Scan(&channel, &tx, &id, &payload, &safe); err != nil {
			return n, false, err
		}
		if !safe {
			return n, true, nil
		}
		pos, err := pgPosition(tx, id)
		if err != nil {
			return n, false, err
		}
		l.pos = pos
		n++
		if !l.since[channel].Less(pos) {
			continue // committed before the channel was listened to
		}
		for _, ch := range routes[channel] {
			sink.DeliverEntry(Entry{Channel: ch, Pos: pos, Payload: []byte(payload)})
		}
	}
	return n, false, rows.Err()
}

func pgPosition(tx string, id int64) (Position, error) {
	hi, err := strconv.ParseUint(tx, 10, 64)
	if err != nil || id < 0 {
		return Position{}, fmt.Errorf("log position %s-%d", tx, id)
	}
	return Position{Hi: hi, Lo: uint64(id)}, nil
}

// trim runs retention when it is due. A node that cannot (no EXECUTE on
// sse_relay.trim) says so once and goes on relaying.
func (l *pgLog) trim(ctx context.Context, conn *pgx.Conn) {
	if time.Now().Before(l.trimAt) {
		return
	}
	l.trimAt = time.Now().Add(pgTrimEvery)
	ctx, cancel := context.WithTimeout(ctx, pgCallTimeout)
	defer cancel()
	var maxAge *string
	if l.history.MaxAge > 0 {
		s := fmt.Sprintf("%d milliseconds", l.history.MaxAge.Milliseconds())
		maxAge = &s
	}
	_, err := conn.Exec(ctx, `SELECT sse_relay.trim($1, $2::interval)`, l.history.Count, maxAge)
	if err != nil && !l.trimWarn {
		l.trimWarn = true
		l.logger.Warn("history retention failed; another node may do it", zap.Error(err))
	}
}

// Read returns the entries after each channel's position, from the
// reading pool. A hub channel also reads the log of its folded name, as
// it hears its NOTIFY.
func (l *pgLog) Read(ctx context.Context, after map[string]Position, limit int) ([]Entry, []string, error) {
	pool, err := l.readers()
	if err != nil {
		return nil, nil, err
	}
	var names []string
	var txs []uint64
	var ids []int64
	hubOf := map[string][]string{}
	for ch, pos := range after {
		for _, name := range pgNames(ch) {
			names = append(names, name)
			txs = append(txs, pos.Hi)
			ids = append(ids, int64(min(pos.Lo, math.MaxInt64)))
			hubOf[name] = append(hubOf[name], ch)
		}
	}
	// The entries and the retention check go in one round trip. Positions
	// travel as xid8 and bigint in binary, not as text to parse.
	batch := &pgx.Batch{}
	batch.Queue(`
		SELECT e.channel, e.tx, e.id, e.payload
		FROM sse_relay.events e
		JOIN unnest($1::text[], $2::xid8[], $3::bigint[]) AS c(channel, tx, id)
			ON e.channel = c.channel AND (e.tx, e.id) > (c.tx, c.id)
		WHERE e.tx < pg_snapshot_xmin(pg_current_snapshot())
		ORDER BY e.tx, e.id
		LIMIT $4`, names, txs, ids, limit)
	batch.Queue(`
		SELECT t.channel FROM sse_relay.trimmed t
		JOIN unnest($1::text[], $2::xid8[], $3::bigint[]) AS c(channel, tx, id)
			ON t.channel = c.channel AND (t.tx, t.id) > (c.tx, c.id)`, names, txs, ids)
	results := pool.SendBatch(ctx, batch)
	defer results.Close()
	out, err := readEntries(results, hubOf)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the log: %w", err)
	}
	trimmed, err := readTrimmed(results, hubOf)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the log's retention: %w", err)
	}
	return out, trimmed, nil
}

// readEntries reads the batch's entries, each for the hub channels that
// hear its name. A row costs one allocation, its payload: the name is
// only looked up, in the driver's buffer.
func readEntries(results pgx.BatchResults, hubOf map[string][]string) ([]Entry, error) {
	rows, err := results.Query()
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Entry
	var name pgtype.DriverBytes
	var tx uint64
	var id int64
	var payload []byte // a new slice each row: pgx copies into a new one
	for rows.Next() {
		if err := rows.Scan(&name, &tx, &id, &payload); err != nil {
			return nil, err
		}
		if id < 0 {
			return nil, fmt.Errorf("log position %d-%d", tx, id)
		}
		for _, ch := range hubOf[string(name)] {
			out = append(out, Entry{Channel: ch, Pos: Position{Hi: tx, Lo: uint64(id)}, Payload: payload})
		}
	}
	return out, rows.Err()
}

// readTrimmed reads the batch's channels trimmed past their position.
func readTrimmed(results pgx.BatchResults, hubOf map[string][]string) ([]string, error) {
	rows, err := results.Query()
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	seen := map[string]bool{}
	var out []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return nil, err
		}
		for _, ch := range hubOf[name] {
			if !seen[ch] {
				seen[ch] = true
				out = append(out, ch)
			}
		}
	}
	return out, rows.Err()
}

// Head is one position for every channel: after everything committed
// before the oldest transaction still running.
func (l *pgLog) Head(ctx context.Context, channels []string) (map[string]Position, error) {
	pool, err := l.readers()
	if err != nil {
		return nil, err
	}
	var head string
	if err := pool.QueryRow(ctx, `SELECT sse_relay.head()`).Scan(&head); err != nil {
		return nil, fmt.Errorf("reading the log's head: %w", err)
	}
	pos, err := ParsePosition(head)
	if err != nil {
		return nil, err
	}
	out := make(map[string]Position, len(channels))
	for _, ch := range channels {
		out[ch] = pos
	}
	return out, nil
}

func (l *pgLog) Depth(ctx context.Context) (LogDepth, error) {
	pool, err := l.readers()
	if err != nil {
		return LogDepth{}, err
	}
	var d LogDepth
	var oldest *time.Time
	err = pool.QueryRow(ctx, `SELECT count(*), count(DISTINCT channel), min(created_at) FROM sse_relay.events`).
		Scan(&d.Entries, &d.Channels, &oldest)
	if oldest != nil {
		d.Oldest = *oldest
	}
	return d, err
}
