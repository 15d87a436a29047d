GO ?= go
CADDY := bin/caddy
# apt-get as root, else through sudo when there is one.
APT := $(shell [ "$$(id -u)" = 0 ] && echo apt-get || echo sudo apt-get)

.PHONY: test deps example-deps build run example vet fuzz bench

## test: install what the tests need if missing (deps), then vet and run every test with -race
test: deps vet
	$(GO) test -race -count=1 -timeout 30m ./...

## deps: what the tests start or drive, installed when missing: what
## make example needs (its browser test runs it), the Redis server, Debian's
## Django 3.2 for contrib/django (and 4.2, 5.2 and psycopg 3 unpacked under
## e2e/django/), Chromium and npm's htmx for the browser tests
deps: example-deps
	@if ! command -v redis-server >/dev/null 2>&1; then \
		echo "installing redis-server"; \
		$(APT) update -qq && DEBIAN_FRONTEND=noninteractive $(APT) install -y -qq redis-server; \
	fi
	@if ! /usr/bin/python3 -c 'import django, psycopg2, redis' >/dev/null 2>&1; then \
		echo "installing Django, psycopg2 and redis-py for contrib/django"; \
		$(APT) update -qq && DEBIAN_FRONTEND=noninteractive $(APT) install -y -qq python3-django python3-psycopg2 python3-redis; \
	fi
	@if ! [ -d e2e/django/4.2/usr/lib/python3/dist-packages/django ] || ! [ -d e2e/django/5.2/usr/lib/python3/dist-packages/django ] \
		|| ! [ -d e2e/django/psycopg3/usr/lib/python3/dist-packages/psycopg ]; then \
		echo "fetching Django 4.2 and 5.2 and psycopg 3 from Debian for the Django tests"; \
		sh e2e/django/fetch.sh; \
	fi
	@if ! [ -x /usr/bin/chromium ]; then \
		echo "installing Chromium for the browser test"; \
		$(APT) update -qq && DEBIAN_FRONTEND=noninteractive $(APT) install -y -qq chromium; \
	fi
	@if ! [ -f e2e/browser/node_modules/htmx-ext-sse/dist/sse.js ]; then \
		echo "installing htmx for the browser test"; \
		npm ci --prefix e2e/browser --no-audit --no-fund --loglevel=error; \
	fi

## example-deps: what examples/django runs on, installed when missing:
## PostgreSQL's server binaries, Debian's Django, gunicorn and psycopg2, and
## npm's htmx and its SSE extension
example-deps:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then \
		echo "installing PostgreSQL server binaries"; \
		$(APT) update -qq && DEBIAN_FRONTEND=noninteractive $(APT) install -y -qq postgresql; \
	fi
	@if ! /usr/bin/python3 -c 'import django, gunicorn, psycopg2' >/dev/null 2>&1; then \
		echo "installing Django, gunicorn and psycopg2 for examples/django"; \
		$(APT) update -qq && DEBIAN_FRONTEND=noninteractive $(APT) install -y -qq python3-django python3-gunicorn python3-psycopg2; \
	fi
	@if ! [ -f examples/django/node_modules/htmx-ext-sse/dist/sse.js ]; then \
		echo "installing htmx for examples/django"; \
		npm ci --prefix examples/django --no-audit --no-fund --loglevel=error; \
	fi

## example: examples/django on http://localhost:8080, Django under gunicorn
## behind Caddy (reverse_proxy and sse_relay) on a throw-away PostgreSQL,
## with the users alice and bob; ^C stops it and removes the database
example: example-deps build
	$(GO) run ./examples/django/cmd/example -caddy $(CADDY)

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }
	$(GO) vet ./...

## build: Caddy with the standard modules and sse_relay, as xcaddy would build it
build:
	$(GO) build -o $(CADDY) ./cmd/caddy

## run: the example site on http://localhost:8080 with the memory broker and a demo page
run: build
	SSE_RELAY_PUBLISH_KEY=$${SSE_RELAY_PUBLISH_KEY:-dev-publish-key-for-localhost-only} $(CADDY) run --config Caddyfile.example --adapter caddyfile

## fuzz: a minute each of fuzzing the payload codec, the channel resolver, the token parser and the grant globs
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzDecodeEncode -fuzztime 60s ./hub/
	$(GO) test -run '^$$' -fuzz FuzzChannels -fuzztime 60s .
	$(GO) test -run '^$$' -fuzz FuzzTokens -fuzztime 60s .
	$(GO) test -run '^$$' -fuzz FuzzGlob -fuzztime 60s .

## bench: the docs/PERFORMANCE.md table: relay and floor under the same load, medians of 3
bench: build
	$(GO) build -o bin/ssebench ./cmd/ssebench
	ulimit -n $$(ulimit -Hn) 2>/dev/null; ./bin/ssebench -suite -caddy $(CADDY)
