package broker

import (
	"context"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// BenchmarkLogRead1000: one read of 1,000 entries of a channel, as a
// resume 1,000 behind makes on a node that never saw them (the read pool
// warm), on Postgres and on Redis.
func BenchmarkLogRead1000(b *testing.B) {
	ctx := context.Background()
	payload := func(i int) string { return fmt.Sprintf(`{"data":"%d 1795649193133395982"}`, i) }
	for _, name := range []string{"postgres", "redis"} {
		b.Run(name, func(b *testing.B) {
			ch := fresh("read")
			var url string
			switch name {
			case "postgres":
				url = servers.PG(b).URL()
				conn, err := pgx.Connect(ctx, url)
				if err != nil {
					b.Fatal(err)
				}
				defer conn.Close(ctx)
				if _, err := conn.Exec(ctx, PostgresSchema); err != nil {
					b.Fatal(err)
				}
				for i := range 1000 {
					if _, err := conn.Exec(ctx, `SELECT sse_relay.publish($1, $2)`, ch, payload(i)); err != nil {
						b.Fatal(err)
					}
				}
			case "redis":
				url = servers.Redis(b).URL()
				rc := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", servers.Redis(b).Port)})
				defer rc.Close()
				if err := rc.FunctionLoadReplace(ctx, RedisFunction).Err(); err != nil {
					b.Fatal(err)
				}
				for i := range 1000 {
					if err := rc.FCall(ctx, "sse_relay_publish", []string{RedisLogKey(ch)}, payload(i), 2000, 0).Err(); err != nil {
						b.Fatal(err)
					}
				}
			}
			br, err := Open(url, zap.NewNop(), History{Count: 2000})
			if err != nil {
				b.Fatal(err)
			}
			defer br.Close()
			for b.Loop() {
				got, _, err := br.Log().Read(ctx, map[string]Position{ch: {}}, 1001)
				if err != nil || len(got) != 1000 {
					b.Fatal(len(got), err)
				}
			}
		})
	}
}
