package broker

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDjangoSchemaCopy: contrib/django's migration runs its own copy of
// the log's schema (a Python package cannot reach broker/schema.sql once
// installed), so the copy must stay byte-identical to the SQL the relay
// embeds and `caddy sse-relay schema` applies. Pure: it reads two files.
func TestDjangoSchemaCopy(t *testing.T) {
	sameAsCopy(t, "broker/schema.sql", PostgresSchema, "contrib/django/django_sse_relay/schema.sql")
}

// TestDjangoRedisFunctionCopy: django_sse_relay.notify loads its own copy
// of the Redis function library into a Redis that has none yet, so that
// copy must be the library the relay loads. Pure: it reads two files.
func TestDjangoRedisFunctionCopy(t *testing.T) {
	sameAsCopy(t, "broker/redis_function.lua", RedisFunction, "contrib/django/django_sse_relay/redis_function.lua")
}

// sameAsCopy fails unless the file at copyPath (from the repository root)
// holds exactly want, the embedded content of origPath, and names the
// first line that differs.
func sameAsCopy(t *testing.T, origPath, want, copyPath string) {
	t.Helper()
	copied, err := os.ReadFile(filepath.Join("..", filepath.FromSlash(copyPath)))
	if err != nil {
		t.Fatalf("contrib/django's copy of %s: %v", origPath, err)
	}
	if string(copied) == want {
		return
	}
	wl, gl := strings.Split(want, "\n"), strings.Split(string(copied), "\n")
	for i := range max(len(wl), len(gl)) {
		var w, g string
		if i < len(wl) {
			w = wl[i]
		}
		if i < len(gl) {
			g = gl[i]
		}
		if w != g {
			t.Fatalf("%s differs from %s at line %d:\n  %s: %q\n  copy: %q\n(cp %s %s)", copyPath, origPath, i+1, origPath, w, g, origPath, copyPath)
		}
	}
	t.Fatalf("%s differs from %s (line endings or a final newline; cp %s %s)", copyPath, origPath, origPath, copyPath)
}
