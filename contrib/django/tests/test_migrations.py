import unittest
from importlib import import_module

from django.core.management import call_command
from django.db import connection, connections, transaction

#: The migration module (its name starts with a digit).
event_log = import_module("django_sse_relay.migrations.0001_event_log")

ALL = {"events", "trimmed", "publish", "head", "trim"}


def log_objects():
    """Which of the schema's objects the default database has."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT to_regclass('sse_relay.events') IS NOT NULL, to_regclass('sse_relay.trimmed') IS NOT NULL,"
            " to_regprocedure('sse_relay.publish(text,text)') IS NOT NULL, to_regprocedure('sse_relay.head()') IS NOT NULL,"
            " to_regprocedure('sse_relay.trim(integer,interval)') IS NOT NULL")
        return {name for name, there in zip(("events", "trimmed", "publish", "head", "trim"), cursor.fetchone()) if there}


class MigrationTests(unittest.TestCase):
    def tearDown(self):
        call_command("migrate", "django_sse_relay", verbosity=0)

    def test_creates_drops_and_creates_again(self):
        """0001 creates the relay's schema, reverses by dropping it, and applies again."""
        call_command("migrate", "django_sse_relay", verbosity=0)
        self.assertEqual(log_objects(), ALL)
        call_command("migrate", "django_sse_relay", "zero", verbosity=0)
        self.assertEqual(log_objects(), set())
        call_command("migrate", "django_sse_relay", verbosity=0)
        self.assertEqual(log_objects(), ALL)
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT sse_relay.publish(%s, %s), pg_current_xact_id()::text", ["migrated", "{}"])
            position, tx = cursor.fetchone()
        self.assertTrue(position.startswith(tx + "-"), position)

    def test_adopts_a_schema_created_first(self):
        """A schema `caddy sse-relay schema --apply` created before the migration is kept, events and all."""
        call_command("migrate", "django_sse_relay", "zero", verbosity=0)
        with connection.cursor() as cursor:
            cursor.execute(event_log.SCHEMA.read_text(encoding="utf-8"))
            cursor.execute("SELECT sse_relay.publish(%s, %s)", ["adopted", "kept"])
        call_command("migrate", "django_sse_relay", verbosity=0)
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM sse_relay.events WHERE channel = 'adopted' AND payload = 'kept'")
            self.assertEqual(cursor.fetchone()[0], 1)

    def test_leaves_other_databases_alone(self):
        """On SQLite (a project on Redis, say) the migration applies and reverses, and creates nothing."""
        lite = connections["lite"]
        call_command("migrate", "django_sse_relay", database="lite", verbosity=0)
        with lite.cursor() as cursor:
            cursor.execute("SELECT app, name FROM django_migrations WHERE app = 'django_sse_relay'")
            self.assertEqual(cursor.fetchall(), [("django_sse_relay", "0001_event_log")])
            cursor.execute("SELECT name FROM sqlite_master WHERE name NOT IN ('django_migrations', 'sqlite_sequence')")
            self.assertEqual(cursor.fetchall(), [])
        call_command("migrate", "django_sse_relay", "zero", database="lite", verbosity=0)
