package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/sse-relay/caddy-sse-relay/broker"
)

// djangoPython is Debian's interpreter, where python3-django,
// python3-psycopg2 and python3-redis install (make deps does). A python3
// earlier on PATH, such as a pyenv one, may not see them.
const djangoPython = "/usr/bin/python3"

// djangoJWTSecret is runtests.py's SSE_RELAY_JWT_SECRET, the jwt_secret
// of the node that checks the package's tokens.
const djangoJWTSecret = "0123456789abcdef0123456789abcdef-python"

// djangoRuns are the Django releases and drivers contrib/django is tested
// on: Debian's own Django 3.2 and psycopg2 (bookworm), and Debian packages
// that make deps unpacks under e2e/django/ (fetch.sh) and puts first on
// PYTHONPATH: Django 4.2 (trixie) and 5.2 (sid, the newest Debian has for
// this Python: experimental's 6.x needs Python 3.12), each with psycopg2
// and with psycopg 3 (trixie's python3-psycopg; bookworm's 3.1.7 is older
// than the 3.1.8 those Django releases require). Django takes psycopg 3
// when it can import it.
var djangoRuns = []struct{ django, driver string }{
	{"3.2", "psycopg2"},
	{"4.2", "psycopg2"},
	{"4.2", "psycopg"},
	{"5.2", "psycopg2"},
	{"5.2", "psycopg"},
}

// djangoPath is the PYTHONPATH of a run of Django version on driver: the
// unpacked trees it needs ahead of the system's packages.
func djangoPath(t *testing.T, version, driver string) string {
	t.Helper()
	var trees []string
	if driver == "psycopg" {
		trees = append(trees, "psycopg3")
	}
	if version != "3.2" {
		trees = append(trees, version)
	}
	var path []string
	for _, tree := range trees {
		dir, _ := filepath.Abs(filepath.Join("django", tree, "usr/lib/python3/dist-packages"))
		if _, err := os.Stat(dir); err != nil {
			t.Fatalf("%s is not unpacked in %s (make deps runs e2e/django/fetch.sh): %v", tree, dir, err)
		}
		path = append(path, dir)
	}
	return strings.Join(path, string(os.PathListSeparator))
}

// TestDjangoPackage runs contrib/django's unittest suite, on Django 3.2,
// 4.2 and 5.2, with psycopg2 and with psycopg 3 (djangoRuns), against this
// test binary's Postgres and Redis and five Caddy nodes on them, with history and without: notify() reaches an SSE
// client only after commit, never after rollback; with history it goes
// through the log (on Postgres in the caller's transaction) and its id is
// the event's position. The suite also applies and reverses the package's
// migration of the log's schema. A node on Postgres with jwt_secret takes
// the tokens sse_url mints. On a Redis Cluster, notify() reaches channels
// on every shard.
func TestDjangoPackage(t *testing.T) {
	if out, err := exec.Command(djangoPython, "-c", "import django, psycopg2, redis").CombinedOutput(); err != nil {
		t.Fatalf("the Django tests need Debian's python3-django, python3-psycopg2 and python3-redis (make deps installs them): %v\n%s", err, out)
	}
	// A short heartbeat: Python's Stream.close waits for its reader
	// thread's read to return.
	pg := startNode(t, "broker "+servers.PG(t).URL()+"\nheartbeat 1s")
	rd := startNode(t, "broker "+servers.Redis(t).URL()+"\nheartbeat 1s")
	jwt := startNode(t, "broker "+servers.PG(t).URL()+"\nheartbeat 1s\njwt_secret "+djangoJWTSecret)
	// A relay with history on Postgres refuses its config without the
	// schema; the suite's own migration creates it only later.
	applySchema(t)
	pgLog := startNode(t, "broker "+servers.PG(t).URL()+"\nhistory 1000\nheartbeat 1s")
	rdLog := startNode(t, "broker "+servers.Redis(t).URL()+"\nhistory 1000\nheartbeat 1s")
	cl := startNode(t, "broker "+servers.Cluster(t).URL()+"\nheartbeat 1s")

	for _, run := range djangoRuns {
		t.Run("Django "+run.django+" on "+run.driver, func(t *testing.T) {
			path := djangoPath(t, run.django, run.driver)
			cmd := exec.Command(djangoPython, "runtests.py")
			cmd.Dir = "../contrib/django"
			cmd.Env = append(os.Environ(),
				"PYTHONPATH="+path,
				"SSE_RELAY_TEST_PG_URL="+servers.PG(t).URL(),
				"SSE_RELAY_TEST_BASE="+pg.base,
				"SSE_RELAY_TEST_REDIS_URL="+servers.Redis(t).URL(),
				"SSE_RELAY_TEST_REDIS_BASE="+rd.base,
				"SSE_RELAY_TEST_JWT_BASE="+jwt.base,
				"SSE_RELAY_TEST_HISTORY_BASE="+pgLog.base,
				"SSE_RELAY_TEST_REDIS_HISTORY_BASE="+rdLog.base,
				"SSE_RELAY_TEST_REDIS_CLUSTER_URL="+servers.Cluster(t).URL(),
				"SSE_RELAY_TEST_REDIS_CLUSTER_BASE="+cl.base,
			)
			out, err := cmd.CombinedOutput()
			t.Logf("runtests.py:\n%s", out)
			if err != nil {
				t.Fatalf("runtests.py: %v", err)
			}
			if !regexp.MustCompile(`(?m)^Django ` + regexp.QuoteMeta(run.django) + `\.`).Match(out) {
				t.Fatalf("runtests.py did not run on Django %s", run.django)
			}
			if !regexp.MustCompile(`(?m)^driver ` + regexp.QuoteMeta(run.driver) + ` `).Match(out) {
				t.Fatalf("runtests.py did not run on %s", run.driver)
			}
			// Every test ran: a skipped end-to-end class would prove nothing.
			if regexp.MustCompile(`(?m)skipped`).Match(out) {
				t.Fatal("runtests.py skipped tests")
			}
			if !regexp.MustCompile(`(?m)^\d+ passed, 0 failed$`).Match(out) {
				t.Fatal("runtests.py did not report its tally")
			}
		})
	}
}

// applySchema creates the event log's schema on the test Postgres, as
// `caddy sse-relay schema --apply` does. It is safe to run again.
func applySchema(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, servers.PG(t).URL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, broker.PostgresSchema); err != nil {
		t.Fatalf("applying the sse_relay schema: %v", err)
	}
}
