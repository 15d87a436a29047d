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
	const path = "contrib/django/django_sse_relay/schema.sql"
	copied, err := os.ReadFile(filepath.Join("..", filepath.FromSlash(path)))
	if err != nil {
		t.Fatalf("contrib/django's copy of the schema: %v", err)
	}
	if string(copied) == PostgresSchema {
		return
	}
	want, got := strings.Split(PostgresSchema, "\n"), strings.Split(string(copied), "\n")
	for i := 0; i < max(len(want), len(got)); i++ {
		var w, g string
		if i < len(want) {
			w = want[i]
		}
		if i < len(got) {
			g = got[i]
		}
		if w != g {
			t.Fatalf("%s differs from broker/schema.sql at line %d:\n  broker: %q\n  copy:   %q\n(cp broker/schema.sql %s)", path, i+1, w, g, path)
		}
	}
	t.Fatalf("%s differs from broker/schema.sql (line endings or a final newline)", path)
}
