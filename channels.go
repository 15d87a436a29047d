package sserelay

import (
	"fmt"
	"net/http"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/caddyserver/caddy/v2"

	"github.com/sse-relay/caddy-sse-relay/broker"
)

// channels resolves the channel list a stream subscribes to: the
// `channels` template when configured, else what the request names. The
// error is a one-line reason for a 400.
func (h *Handler) channels(r *http.Request) ([]string, error) {
	if h.Channels == "" {
		return h.requestChannels(r)
	}
	repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if repl == nil {
		repl = caddy.NewReplacer()
	}
	return h.rules.check([]string{repl.ReplaceAll(h.Channels, "")})
}

// requestChannels are the channels a request names: every `channel` query
// value (repeated or comma-separated), else the last path segment. A
// publisher always names its channels this way; the template is for
// subscribers.
func (h *Handler) requestChannels(r *http.Request) ([]string, error) {
	var raw []string
	switch {
	case r.URL.Query().Has("channel"):
		raw = r.URL.Query()["channel"]
	default:
		// The last segment; "/events/" has none.
		p := r.URL.Path
		raw = []string{p[strings.LastIndexByte(p, '/')+1:]}
	}
	return h.rules.check(raw)
}

// channelRules are every rule a channel list must pass, for streams and
// publishes alike: how many, the broker's name limits, and, on a broker
// that folds case (Postgres), what a name also receives.
type channelRules struct {
	max    int // max_channels
	limits broker.Limits
	// prefix is channel_prefix: the route's channel x is the broker's
	// prefix+x, so routes on one broker do not share names.
	prefix string
}

// onBroker are the broker's names of a route's channels.
func (c channelRules) onBroker(channels []string) []string {
	if c.prefix == "" {
		return channels
	}
	out := make([]string, len(channels))
	for i, ch := range channels {
		out[i] = c.prefix + ch
	}
	return out
}

// checkPrefix refuses a channel_prefix that is not itself a fine start of
// a name, or that has capitals: Postgres folds those, and what a token
// must grant would then depend on the prefix.
func checkPrefix(prefix string) error {
	if prefix == "" {
		return nil
	}
	if err := checkChannel(prefix, broker.PostgresMaxChannel-1); err != nil {
		return fmt.Errorf("channel_prefix: %w", err)
	}
	if broker.FoldASCII(prefix) != prefix {
		return fmt.Errorf("channel_prefix %q: use lowercase", prefix)
	}
	return nil
}

// check splits comma-separated values, drops blanks and duplicates, and
// applies the limits and the name rules.
func (c channelRules) check(raw []string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, v := range raw {
		for _, ch := range strings.Split(v, ",") {
			ch = strings.TrimSpace(ch)
			if ch == "" || seen[ch] {
				continue
			}
			seen[ch] = true
			out = append(out, ch)
		}
	}
	if len(out) > c.max {
		return nil, fmt.Errorf("too many channels: %d, at most %d", len(out), c.max)
	}
	for _, ch := range out {
		if err := checkChannel(ch, c.limits.MaxChannel-len(c.prefix)); err != nil {
			return nil, err
		}
	}
	if err := c.checkFolds(out); err != nil {
		return nil, err
	}
	return out, nil
}

// checkChannel refuses names that could confuse a broker, a log or a
// shell: too long, not UTF-8, control characters, whitespace, quotes,
// semicolons and backslashes; and the names the event log uses for itself
// (its announcements on Postgres, its streams on Redis). Names never reach
// SQL text either way.
func checkChannel(ch string, limit int) error {
	if len(ch) > limit {
		return fmt.Errorf("channel name too long: %d bytes, at most %d", len(ch), limit)
	}
	if ch == "sse_relay" || strings.HasPrefix(ch, "sse-relay:") {
		return fmt.Errorf("channel name %q is reserved for the event log", ch)
	}
	if !utf8.ValidString(ch) {
		return fmt.Errorf("channel name is not valid UTF-8")
	}
	for _, c := range ch {
		switch {
		case unicode.IsControl(c):
			return fmt.Errorf("channel name has a control character")
		case unicode.IsSpace(c):
			return fmt.Errorf("channel name has whitespace")
		case strings.ContainsRune(`"';\`, c):
			return fmt.Errorf("channel name has a forbidden character %q", c)
		}
	}
	return nil
}

// checkFolds refuses, on a broker that folds case, a list with two
// channels that both receive the unquoted NOTIFY of one name (Orders and
// orders, or Orders and ORDERS): a stream of both would get each such
// event twice, and so would a stream of Orders from a publish to both.
func (c channelRules) checkFolds(list []string) error {
	if len(list) < 2 || !c.limits.FoldsCase {
		return nil
	}
	seen := make(map[string]string, len(list))
	for _, ch := range list {
		folded := broker.FoldASCII(ch)
		if other, ok := seen[folded]; ok {
			return fmt.Errorf("channels %q and %q both receive NOTIFY %s: name one of them", other, ch, folded)
		}
		seen[folded] = ch
	}
	return nil
}

// heard is every channel name whose events a stream of channels gets: on
// a broker that folds case, a name with capitals also gets the unquoted
// NOTIFY of its lowercase form, so a token must grant that too (user.Alice
// must not read user.alice's events).
func (c channelRules) heard(channels []string) []string {
	if !c.limits.FoldsCase {
		return channels
	}
	out := channels
	for _, ch := range channels {
		if folded := broker.FoldASCII(ch); folded != ch {
			if len(out) == len(channels) {
				out = append([]string(nil), channels...)
			}
			out = append(out, folded)
		}
	}
	return out
}
