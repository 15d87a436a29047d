package sserelay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/golang-jwt/jwt/v5"
	"github.com/spf13/cobra"

	"github.com/sse-relay/caddy-sse-relay/broker"
	"github.com/sse-relay/caddy-sse-relay/hub"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "sse-relay",
		Usage: "notify|token|schema [flags]",
		Short: "Publishes an event, mints a subscriber token or sets up the event log for sse_relay",
		Long: `
notify publishes one event through a broker, as a Django app would:

  caddy sse-relay notify --broker postgres://u@db/app --channel orders --event order --data '{"id":1}'
  echo 'hello' | caddy sse-relay notify --broker redis://localhost:6379 --channel news --data -
  caddy sse-relay notify --broker 'redis-cluster://10.0.0.1:7000?addr=10.0.0.2:7000' --channel news --data hi

token mints a subscriber JWT for handlers with jwt_secret:

  caddy sse-relay token --secret "$SSE_RELAY_JWT_SECRET" --channel user.42 --channel 'tenant.7.*' --ttl 1h

schema prints, or applies, what the event log (history) needs: on
PostgreSQL the sse_relay schema, on Redis the sse_relay function library:

  caddy sse-relay schema > sse_relay.sql
  caddy sse-relay schema --apply --broker postgres://owner@db/app
  caddy sse-relay schema --apply --broker redis://localhost:6379
  caddy sse-relay schema --apply --broker 'redis-cluster://10.0.0.1:7000?addr=10.0.0.2:7000'
`,
		CobraFunc: func(cmd *cobra.Command) {
			cmd.AddCommand(notifyCommand(), tokenCommand(), schemaCommand())
		},
	})
}

func notifyCommand() *cobra.Command {
	var brokerURL, channel, event, id, data string
	var retry int
	var history broker.History
	c := &cobra.Command{
		Use:   "notify --broker URL --channel C [--event E] [--id I] [--retry MS] [--history N [--history-max-age D]] [--data D | --data -]",
		Short: "Publish one event through a broker",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if brokerURL == "" || channel == "" {
				return errors.New("--broker and --channel are required")
			}
			if data == "-" {
				b, err := io.ReadAll(os.Stdin)
				if err != nil {
					return err
				}
				data = strings.TrimSuffix(string(b), "\n")
			}
			payload, err := notifyPayload(event, id, data, retry, cmd.Flags().Changed("retry"))
			if err != nil {
				return err
			}
			return notify(brokerURL, channel, payload, history)
		},
	}
	f := c.Flags()
	f.StringVar(&brokerURL, "broker", os.Getenv("SSE_RELAY_BROKER"), "broker URL (postgres://, redis://, rediss://, redis-cluster://, rediss-cluster://); default $SSE_RELAY_BROKER")
	f.StringVar(&channel, "channel", "", "channel to publish on")
	f.StringVar(&event, "event", "", "SSE event name")
	f.StringVar(&id, "id", "", "SSE event id")
	f.IntVar(&retry, "retry", 0, "SSE retry, in milliseconds")
	f.StringVar(&data, "data", "", "event data; - reads standard input")
	f.IntVar(&history.Count, "history", 0, "publish through the event log, as handlers with `history N` read it (Redis trims each stream to N)")
	f.DurationVar(&history.MaxAge, "history-max-age", 0, "with --history on Redis: trim entries older than this")
	return c
}

// notifyPayload builds the JSON payload of the relay's contract and
// checks it as the relay would.
func notifyPayload(event, id, data string, retry int, withRetry bool) ([]byte, error) {
	p := map[string]any{"data": data}
	if event != "" {
		p["event"] = event
	}
	if id != "" {
		p["id"] = id
	}
	if withRetry {
		p["retry"] = retry
	}
	b, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	if _, err := hub.Decode(b); err != nil {
		return nil, err
	}
	return b, nil
}

func notify(brokerURL, channel string, payload []byte, history broker.History) error {
	if strings.HasPrefix(brokerURL, "memory:") {
		return errors.New("the memory broker lives inside one Caddy process; publish with POST to its sse_relay route instead")
	}
	b, err := broker.Open(brokerURL, nil, history)
	if err != nil {
		return err
	}
	limits := b.Limits()
	if err := checkChannel(channel, limits.MaxChannel); err != nil {
		return err
	}
	if len(payload) > limits.MaxPayload {
		return fmt.Errorf("payload is %d bytes; this broker carries at most %d", len(payload), limits.MaxPayload)
	}
	b.Start(discard{})
	defer b.Close()
	deadline := time.Now().Add(10 * time.Second)
	for !b.Connected() {
		if time.Now().After(deadline) {
			return fmt.Errorf("could not connect to %s within 10s", broker.Label(brokerURL))
		}
		time.Sleep(20 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return b.Publish(ctx, []string{channel}, payload)
}

func schemaCommand() *cobra.Command {
	var brokerURL string
	var apply bool
	c := &cobra.Command{
		Use:   "schema [--apply --broker URL]",
		Short: "Print or apply what the event log (history) needs",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !apply {
				if strings.HasPrefix(brokerURL, "redis") {
					fmt.Fprint(cmd.OutOrStdout(), broker.RedisFunction)
					return nil
				}
				fmt.Fprint(cmd.OutOrStdout(), broker.PostgresSchema)
				return nil
			}
			if brokerURL == "" {
				return errors.New("--apply needs --broker")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := broker.ApplySchema(ctx, brokerURL); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "event log ready on %s\n", broker.Label(brokerURL))
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&brokerURL, "broker", "", "broker URL: postgres:// prints or applies the SQL, redis:// or redis-cluster:// the function library (on every primary of a cluster)")
	f.BoolVar(&apply, "apply", false, "apply it to --broker instead of printing it")
	return c
}

type discard struct{}

func (discard) Deliver(string, []byte)    {}
func (discard) DeliverEntry(broker.Entry) {}
func (discard) Reset([]string, string)    {}

func tokenCommand() *cobra.Command {
	var secret, audience, issuer string
	var channels, publish []string
	var ttl time.Duration
	c := &cobra.Command{
		Use:   "token --secret S --channel C [--channel C2 …] [--publish C …] [--ttl 1h] [--audience A] [--issuer I]",
		Short: "Mint an HS256 subscriber token",
		RunE: func(cmd *cobra.Command, _ []string) error {
			tok, err := mintToken(secret, channels, publish, ttl, audience, issuer)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), tok)
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&secret, "secret", os.Getenv("SSE_RELAY_JWT_SECRET"), "the handler's jwt_secret; default $SSE_RELAY_JWT_SECRET")
	f.StringArrayVar(&channels, "channel", nil, "channel the token may read (exact or * glob); repeat for more")
	f.StringArrayVar(&publish, "publish", nil, "channel the token may publish on; repeat for more")
	f.DurationVar(&ttl, "ttl", time.Hour, "how long the token is valid")
	f.StringVar(&audience, "audience", "", "the aud claim, for a handler with jwt_audience")
	f.StringVar(&issuer, "issuer", "", "the iss claim, for a handler with jwt_issuer")
	return c
}

func mintToken(secret string, channels, publish []string, ttl time.Duration, audience, issuer string) (string, error) {
	if _, err := newVerifier(secret, "", tokenRules{}); err != nil || secret == "" {
		return "", fmt.Errorf("--secret: %v", errOr(err, errors.New("required")))
	}
	if len(channels) == 0 && len(publish) == 0 {
		return "", errors.New("give at least one --channel or --publish")
	}
	if ttl <= 0 {
		return "", errors.New("--ttl must be positive")
	}
	claims := jwt.MapClaims{"exp": time.Now().Add(ttl).Unix(), "iat": time.Now().Unix()}
	if len(channels) > 0 {
		claims["channels"] = channels
	}
	if len(publish) > 0 {
		claims["publish"] = publish
	}
	if audience != "" {
		claims["aud"] = audience
	}
	if issuer != "" {
		claims["iss"] = issuer
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(secret))
}

func errOr(err, fallback error) error {
	if err != nil {
		return err
	}
	return fallback
}
