"""The relay's durable event log (history) on PostgreSQL: the sse_relay schema.

It runs django_sse_relay/schema.sql, a byte-for-byte copy of the relay's
broker/schema.sql (a Go test keeps the two equal). That file is safe to run
again, so this migration also adopts a schema that `caddy sse-relay schema
--apply` created first.

Reversible: migrating django_sse_relay to zero drops the sse_relay schema
with every event logged in it, whoever created it. A relay with history on
then refuses its config until the schema is back.

On any other database (SQLite, MySQL) it does nothing: the log lives in the
PostgreSQL the relay listens to, and a project on Redis needs no schema.
"""
from pathlib import Path

from django.db import migrations

SCHEMA = Path(__file__).resolve().parent.parent / "schema.sql"


def create_log(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    # params=None: the file goes to the server as it is, with no %-formatting.
    schema_editor.execute(SCHEMA.read_text(encoding="utf-8"), params=None)


def drop_log(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("DROP SCHEMA IF EXISTS sse_relay CASCADE", params=None)


class Migration(migrations.Migration):
    initial = True
    dependencies = []
    operations = [migrations.RunPython(create_log, drop_log)]
