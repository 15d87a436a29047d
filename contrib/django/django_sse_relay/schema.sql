-- caddy-sse-relay's durable event log on PostgreSQL (history on a postgres:// broker).
-- Apply with `caddy sse-relay schema --apply --broker postgres://…`, or the Django
-- migration django_sse_relay 0001, which runs this same file. Safe to run again.
CREATE SCHEMA IF NOT EXISTS sse_relay;

-- One row per event. tx is the writing transaction's id: a reader takes only rows
-- whose transaction is older than every transaction still running, in (tx, id)
-- order, so a transaction that commits late is never skipped and nothing is read
-- twice.
CREATE TABLE IF NOT EXISTS sse_relay.events (
	id         bigint GENERATED ALWAYS AS IDENTITY,
	tx         xid8 NOT NULL DEFAULT pg_current_xact_id(),
	channel    text NOT NULL,
	payload    text NOT NULL,
	created_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (tx, id)
);
CREATE INDEX IF NOT EXISTS events_channel ON sse_relay.events (channel, tx, id);

-- The newest position trimmed away per channel: a cursor older than it has a gap.
CREATE TABLE IF NOT EXISTS sse_relay.trimmed (
	channel text PRIMARY KEY,
	tx      xid8 NOT NULL,
	id      bigint NOT NULL
);

-- publish logs an event in the caller's transaction and announces it at commit.
-- It returns the event's position, "<tx>-<id>".
CREATE OR REPLACE FUNCTION sse_relay.publish(channel text, payload text) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	pos text;
BEGIN
	IF channel IS NULL OR channel = '' OR octet_length(channel) > 63 THEN
		RAISE EXCEPTION 'sse_relay.publish: channel must be 1 to 63 bytes' USING ERRCODE = '22023';
	END IF;
	IF payload IS NULL THEN
		RAISE EXCEPTION 'sse_relay.publish: payload must not be null' USING ERRCODE = '22004';
	END IF;
	INSERT INTO sse_relay.events (channel, payload) VALUES (channel, payload)
		RETURNING tx::text || '-' || id INTO pos;
	PERFORM pg_notify('sse_relay', channel);
	RETURN pos;
END
$$;

-- head is the position a reader that starts now resumes from: everything older
-- than the oldest running transaction.
CREATE OR REPLACE FUNCTION sse_relay.head() RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
	SELECT (pg_snapshot_xmin(pg_current_snapshot())::text::numeric - 1)::text || '-9223372036854775807'
$$;

-- trim keeps the newest `keep` events of each channel and none older than
-- max_age; one node at a time does it.
CREATE OR REPLACE FUNCTION sse_relay.trim(keep integer, max_age interval) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	n bigint;
BEGIN
	IF NOT pg_try_advisory_xact_lock(hashtext('sse_relay.trim')) THEN
		RETURN 0;
	END IF;
	WITH ranked AS (
		SELECT e.tx, e.id, e.channel, e.created_at,
			row_number() OVER (PARTITION BY e.channel ORDER BY e.tx DESC, e.id DESC) AS rn
		FROM sse_relay.events e
		WHERE e.tx < pg_snapshot_xmin(pg_current_snapshot())
	), doomed AS (
		DELETE FROM sse_relay.events e USING ranked r
		WHERE e.tx = r.tx AND e.id = r.id
			AND (r.rn > keep OR (max_age IS NOT NULL AND r.created_at < now() - max_age))
		RETURNING e.channel, e.tx, e.id
	), marks AS (
		SELECT DISTINCT ON (d.channel) d.channel, d.tx, d.id FROM doomed d
		ORDER BY d.channel, d.tx DESC, d.id DESC
	)
	INSERT INTO sse_relay.trimmed AS t (channel, tx, id)
		SELECT m.channel, m.tx, m.id FROM marks m
		ON CONFLICT (channel) DO UPDATE SET tx = excluded.tx, id = excluded.id
		WHERE (excluded.tx, excluded.id) > (t.tx, t.id);
	GET DIAGNOSTICS n = ROW_COUNT;
	RETURN n;
END
$$;

REVOKE ALL ON FUNCTION sse_relay.publish(text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION sse_relay.trim(integer, interval) FROM PUBLIC;
