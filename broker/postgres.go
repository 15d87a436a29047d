package broker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"
)

// Postgres limits: NOTIFY payloads must be shorter than 8000 bytes and
// identifiers are at most NAMEDATALEN-1 bytes.
const (
	PostgresMaxPayload = 7999
	PostgresMaxChannel = 63
	// PostgresMaxLogged caps a payload logged with history: the relay has
	// no business carrying more, as on Redis.
	PostgresMaxLogged = RedisMaxPayload
)

const (
	pgPingEvery   = 30 * time.Second
	pgCallTimeout = 10 * time.Second
	// pgSyncBatch is how many LISTEN or UNLISTEN statements one round
	// trip carries.
	pgSyncBatch = 1000
)

// postgres is one pgx connection, owned by the goroutine in run.
type postgres struct {
	core
	cfg *pgx.ConnConfig
	log *pgLog // nil without history

	mu      sync.Mutex
	pending []*publishReq
}

type publishReq struct {
	ctx      context.Context // the publisher's: once done, nothing is sent
	channels []string
	payload  []byte
	result   chan error
}

func newPostgres(rawURL string, logger *zap.Logger, history History) (*postgres, error) {
	cfg, err := pgx.ParseConfig(rawURL)
	if err != nil {
		return nil, fmt.Errorf("postgres broker URL %s: %w", Label(rawURL), err)
	}
	if _, set := cfg.RuntimeParams["application_name"]; !set {
		cfg.RuntimeParams["application_name"] = "caddy-sse-relay"
	}
	p := &postgres{cfg: cfg}
	if history.On() {
		p.log = &pgLog{history: history, cfg: cfg, logger: logger}
	}
	p.core.init(logger)
	return p, nil
}

// Log is the sse_relay schema's log, or nil without history.
func (p *postgres) Log() Log {
	if p.log == nil {
		return nil
	}
	return p.log
}

func (p *postgres) Start(sink Sink) { p.launch(func() { p.run(sink) }) }

// Limits: with history, the payload goes in a table and NOTIFY carries
// only the channel, so the 8000-byte NOTIFY limit no longer applies.
func (p *postgres) Limits() Limits {
	payload := PostgresMaxPayload
	if p.log != nil {
		payload = PostgresMaxLogged
	}
	return Limits{MaxPayload: payload, MaxChannel: PostgresMaxChannel, FoldsCase: true}
}

// Publish runs pg_notify on the broker's own connection, so publishing
// over HTTP adds no connection. Several channels take one statement, and
// so one transaction: every NOTIFY goes out, or none.
func (p *postgres) Publish(ctx context.Context, channels []string, payload []byte) error {
	if !p.outage.isUp() {
		return ErrUnavailable
	}
	req := &publishReq{ctx: ctx, channels: channels, payload: payload, result: make(chan error, 1)}
	p.mu.Lock()
	p.pending = append(p.pending, req)
	p.mu.Unlock()
	p.want.signal()
	select {
	case err := <-req.result:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-p.done:
		return ErrClosed
	}
}

func (p *postgres) Close() error {
	p.stop()
	if p.log != nil {
		p.log.close()
	}
	return nil
}

func (p *postgres) run(sink Sink) {
	defer p.failPending(ErrClosed)
	for p.ctx.Err() == nil {
		conn, err := pgx.ConnectConfig(p.ctx, p.cfg)
		if err != nil {
			p.down(err)
			if !sleep(p.ctx, p.bo.delay()) {
				return
			}
			continue
		}
		err = p.serve(conn, sink)
		closeCtx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = conn.Close(closeCtx)
		cancel()
		if p.ctx.Err() != nil {
			return
		}
		p.down(err)
	}
}

func (p *postgres) down(err error) {
	p.outage.lost(err)
	p.want.releaseAll()
	p.failPending(ErrUnavailable)
}

func (p *postgres) failPending(err error) {
	p.mu.Lock()
	reqs := p.pending
	p.pending = nil
	p.mu.Unlock()
	for _, r := range reqs {
		r.result <- err
	}
}

// pgListens tracks what one connection listens to. A hub channel C is
// listened as "C" and, when it differs, as its folded form, because
// Postgres folds an unquoted NOTIFY Orders to "orders".
type pgListens struct {
	have   map[string]bool     // hub channels
	refs   map[string]int      // Postgres channel -> hub channels using it
	routes map[string][]string // Postgres channel -> hub channels
}

// serve relays on one connection until it fails. The connection counts as
// up (for health, the outage log and the backoff) only once its first sync
// has listened to every wanted channel again.
func (p *postgres) serve(conn *pgx.Conn, sink Sink) error {
	l := pgListens{have: map[string]bool{}, refs: map[string]int{}, routes: map[string][]string{}}
	if p.log != nil {
		if err := p.log.start(p.ctx, conn); err != nil {
			return err
		}
	}
	added, err := p.sync(conn, &l)
	if err != nil {
		return err
	}
	wasDown := p.outage.connected()
	p.bo.reset()
	p.markActive(added)
	for {
		added, err := p.sync(conn, &l)
		if err != nil {
			return err
		}
		p.markActive(added)
		if wasDown && p.log == nil {
			// NOTIFY keeps nothing for absent listeners: once listening
			// again, tell subscribers that events may be missing. With
			// history the log goes on from where it was instead.
			wasDown = false
			sink.Reset(keys(l.have), "broker-reconnect")
		}
		if err := p.publishPending(conn); err != nil {
			return err
		}
		var poll time.Duration
		if p.log != nil {
			if err := p.log.read(p.ctx, conn, l.routes, sink); err != nil {
				return err
			}
			p.log.trim(p.ctx, conn)
			poll = p.log.poll
		}
		n, err := p.wait(conn, poll)
		if err != nil {
			return err
		}
		switch {
		case n == nil:
			if poll > 0 {
				p.log.due = true
			}
		case p.log != nil && n.Channel == pgAnnounce:
			p.log.announced(n.Payload, l.refs)
		default:
			for _, ch := range l.routes[n.Channel] {
				sink.Deliver(ch, []byte(n.Payload))
			}
		}
	}
}

// wait returns the next notification, or nil when woken for other work or
// when poll (if positive) has passed.
func (p *postgres) wait(conn *pgx.Conn, poll time.Duration) (*pgconn.Notification, error) {
	limit := pgPingEvery
	if poll > 0 {
		limit = poll
	}
	ctx, cancel := context.WithTimeout(p.ctx, limit)
	defer cancel()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case <-p.want.wake:
			select {
			case <-stop:
				// The wait returned before this goroutine ran, and the
				// token is for the next one: put it back.
				p.want.signal()
			default:
				cancel()
			}
		case <-stop:
		}
	}()
	n, err := conn.WaitForNotification(ctx)
	if err == nil {
		return n, nil
	}
	if p.ctx.Err() != nil {
		return nil, p.ctx.Err()
	}
	if ctx.Err() == nil || conn.IsClosed() {
		return nil, err
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) && poll == 0 {
		// Quiet for a while: make sure the connection is still there.
		pingCtx, cancelPing := context.WithTimeout(p.ctx, pgCallTimeout)
		defer cancelPing()
		return nil, conn.Ping(pingCtx)
	}
	return nil, nil
}

// sync brings the connection's LISTENs to the wanted set: the statements
// go out pgSyncBatch at a time, one round trip and one timeout per batch,
// so thousands of channels listen again in seconds even with a database a
// few milliseconds away.
func (p *postgres) sync(conn *pgx.Conn, l *pgListens) (added []string, err error) {
	add, remove, changed := p.want.diff(l.have)
	if !changed {
		return nil, nil
	}
	var stmts, fresh []string
	for _, ch := range add {
		for _, name := range pgNames(ch) {
			if l.refs[name] == 0 {
				stmts = append(stmts, "LISTEN "+pgx.Identifier{name}.Sanitize())
				fresh = append(fresh, name)
			}
			l.refs[name]++
			l.routes[name] = append(l.routes[name], ch)
		}
		l.have[ch] = true
	}
	for _, ch := range remove {
		for _, name := range pgNames(ch) {
			l.routes[name] = without(l.routes[name], ch)
			if l.refs[name]--; l.refs[name] > 0 {
				continue
			}
			delete(l.refs, name)
			delete(l.routes, name)
			stmts = append(stmts, "UNLISTEN "+pgx.Identifier{name}.Sanitize())
			if p.log != nil {
				p.log.unlistened(name)
			}
		}
		delete(l.have, ch)
	}
	if p.log != nil && len(fresh) > 0 {
		if err := p.log.listening(p.ctx, conn, fresh); err != nil {
			return nil, err
		}
	}
	for len(stmts) > 0 {
		n := min(len(stmts), pgSyncBatch)
		ctx, cancel := context.WithTimeout(p.ctx, pgCallTimeout)
		_, err := conn.Exec(ctx, strings.Join(stmts[:n], ";"))
		cancel()
		if err != nil {
			// The connection goes: the next one listens to the whole set.
			return nil, fmt.Errorf("listen: %w", err)
		}
		stmts = stmts[n:]
	}
	return add, nil
}

// markActive tells the waiters of channels that they are listened to.
func (p *postgres) markActive(channels []string) {
	for _, ch := range channels {
		p.want.markActive(ch)
	}
}

func (p *postgres) publishPending(conn *pgx.Conn) error {
	p.mu.Lock()
	reqs := p.pending
	p.pending = nil
	p.mu.Unlock()
	for i, r := range reqs {
		if err := r.ctx.Err(); err != nil {
			r.result <- err // its publisher has gone and was told it failed
			continue
		}
		ctx, cancel := context.WithTimeout(p.ctx, pgCallTimeout)
		_, err := conn.Exec(ctx, p.publishStatement(len(r.channels)), r.channels, string(r.payload))
		cancel()
		var pgErr *pgconn.PgError
		isPg := errors.As(err, &pgErr)
		switch {
		case err == nil:
			r.result <- nil
		case isPg && strings.HasPrefix(pgErr.Code, "22"):
			// A data exception: the channel or payload itself (empty
			// name, too long, not valid text). Retrying will not help.
			r.result <- fmt.Errorf("%w: %s", ErrRejected, pgErr.Message)
		case isPg && pgErr.Severity != "FATAL" && pgErr.Severity != "PANIC" && !conn.IsClosed():
			// The server's trouble (statement timeout, NOTIFY queue
			// full, …): the connection lives, the publisher may retry.
			r.result <- fmt.Errorf("%w: %s", ErrUnavailable, pgErr.Message)
		default:
			for _, rest := range reqs[i:] {
				rest.result <- ErrUnavailable
			}
			return err
		}
	}
	return nil
}

// publishStatement publishes $2 on every channel of $1 in one statement,
// and so one transaction: through the log with history, else NOTIFY.
func (p *postgres) publishStatement(channels int) string {
	fn := "pg_notify"
	if p.log != nil {
		fn = "sse_relay.publish"
	}
	if channels == 1 {
		return "SELECT " + fn + "(($1::text[])[1], $2)"
	}
	return "SELECT " + fn + "(c, $2) FROM unnest($1::text[]) WITH ORDINALITY AS t(c, n) ORDER BY n"
}

// pgNames are the Postgres channels that feed hub channel ch: itself, and
// its ASCII-lowercased form, which is what an unquoted identifier becomes.
func pgNames(ch string) []string {
	folded := FoldASCII(ch)
	if folded == ch {
		return []string{ch}
	}
	return []string{ch, folded}
}

// FoldASCII lowercases the ASCII letters of s, as Postgres does to an
// unquoted identifier.
func FoldASCII(s string) string {
	b := []byte(s)
	changed := false
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
			changed = true
		}
	}
	if !changed {
		return s
	}
	return string(b)
}

func without(list []string, s string) []string {
	out := list[:0]
	for _, x := range list {
		if x != s {
			out = append(out, x)
		}
	}
	return out
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
