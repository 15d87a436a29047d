"""notify() with SSE_RELAY_HISTORY: events go through the relay's durable log."""
import os
import unittest
from datetime import timedelta

from django.db import connection, connections, transaction
from django.test.utils import override_settings

import django_sse_relay
from django_sse_relay import notify
from tests.test_notify import Stream, _Commit

HISTORY = {"count": 1000, "max_age": 3600}


class Rollback(Exception):
    pass


def logged(channel, using="other"):
    """The (position, payload) rows of channel in sse_relay.events, as another connection sees them."""
    with connections[using].cursor() as cursor:
        cursor.execute("SELECT tx::text || '-' || id, payload FROM sse_relay.events WHERE channel = %s ORDER BY tx, id",
                       [channel])
        return cursor.fetchall()


class SettingTests(unittest.TestCase):
    def test_parsed_like_the_relays_history(self):
        for value, want in ((None, None), ({"count": 5}, (5, 0)), ({"count": 5, "max_age": 1.5}, (5, 1500)),
                            ({"count": 5, "max_age": timedelta(hours=1)}, (5, 3600000)),
                            ({"count": 5, "max_age": None}, (5, 0))):
            with override_settings(SSE_RELAY_HISTORY=value):
                self.assertEqual(django_sse_relay._history(), want, value)

    def test_refused(self):
        for value in (1000, True, {}, {"count": 0}, {"count": "10"}, {"count": True}, {"count": 5, "max_age": -1},
                      {"count": 5, "max_age": "1h"}, {"count": 5, "maxage": 60}):
            with override_settings(SSE_RELAY_HISTORY=value):
                with self.assertRaises(ValueError, msg=value):
                    notify("refused", "x", on_commit=False)


class PostgresLogTests(unittest.TestCase):
    """sse_relay.publish runs in the caller's transaction: no relay needed to see it."""

    def setUp(self):
        self.override = override_settings(SSE_RELAY_HISTORY=HISTORY)
        self.override.enable()

    def tearDown(self):
        self.override.disable()

    def test_logged_in_the_transaction(self):
        """Written at once, seen by others only at commit, at the position notify returned."""
        with transaction.atomic():
            position = notify("log_commit", {"n": 1}, event="order")
            self.assertEqual(logged("log_commit", using="default"), [(position, '{"event":"order","data":{"n":1}}')])
            self.assertEqual(logged("log_commit"), [], "another connection saw the event before commit")
        self.assertEqual(logged("log_commit"), [(position, '{"event":"order","data":{"n":1}}')])

    def test_rolled_back_logs_nothing(self):
        try:
            with transaction.atomic():
                notify("log_rollback", "gone")
                notify("log_rollback", "gone too", on_commit=False)  # in the transaction all the same
                raise Rollback
        except Rollback:
            pass
        self.assertEqual(logged("log_rollback"), [])
        notify("log_rollback", "kept")  # autocommit: logged at once
        self.assertEqual([p for _, p in logged("log_rollback")], ['{"data":"kept"}'])

    def test_using_another_connection(self):
        """notify(using=...) writes in that connection's transaction, not default's."""
        try:
            with transaction.atomic(using="other"):
                notify("log_using", "on other", using="other")
                self.assertEqual(logged("log_using", using="default"), [])
                raise Rollback
        except Rollback:
            pass
        with transaction.atomic():
            notify("log_using", "other, autocommit", using="other")
            self.assertEqual(len(logged("log_using", using="default")), 1)

    def test_payload_limit_is_64_kib(self):
        """The 7999-byte NOTIFY limit is gone: a payload of 65536 bytes goes, one more is refused."""
        body = "x" * (64 * 1024 - len('{"data":""}'))
        self.assertEqual(len(django_sse_relay.payload(body)), 64 * 1024)
        notify("log_limit", body)
        self.assertEqual(len(logged("log_limit")[0][1]), 64 * 1024)
        with self.assertRaises(ValueError) as cm:
            notify("log_limit", body + "x")
        self.assertIn("65536", str(cm.exception))


class RedisLogTests(unittest.TestCase):
    """FCALL sse_relay_publish after commit: the stream entry is the event."""

    def setUp(self):
        url = os.environ["SSE_RELAY_TEST_REDIS_URL"]  # required: a missing Redis fails the test
        self.override = override_settings(SSE_RELAY_BACKEND="redis", SSE_RELAY_REDIS_URL=url, SSE_RELAY_HISTORY=HISTORY)
        self.override.enable()
        django_sse_relay._redis_client = None
        self.redis = django_sse_relay._redis()

    def tearDown(self):
        self.override.disable()
        django_sse_relay._redis_client = None

    def entries(self, channel):
        return [(id.decode(), fields[b"d"].decode()) for id, fields in self.redis.xrange("sse-relay:{%s}" % channel)]

    def test_stream_entry_only_after_commit(self):
        self.redis.delete("sse-relay:{log_redis}")
        with transaction.atomic():
            self.assertIsNone(notify("log_redis", {"n": 1}, event="order"))
            self.assertEqual(self.entries("log_redis"), [], "appended before commit")
        self.assertEqual([d for _, d in self.entries("log_redis")], ['{"event":"order","data":{"n":1}}'])
        try:
            with transaction.atomic():
                notify("log_redis", "rolled back")
                raise Rollback
        except Rollback:
            pass
        notify("log_redis", "now", on_commit=False)
        self.assertEqual([d for _, d in self.entries("log_redis")], ['{"event":"order","data":{"n":1}}', '{"data":"now"}'])

    def test_loads_the_function_when_missing(self):
        """A Redis no relay with history has loaded yet gets the package's copy of the library."""
        self.redis.delete("sse-relay:{log_load}")
        notify("log_load", "first", on_commit=False)  # the library is there from here on
        self.redis.function_delete("sse_relay")
        notify("log_load", "second", on_commit=False)
        self.assertEqual([d for _, d in self.entries("log_load")], ['{"data":"first"}', '{"data":"second"}'])
        self.redis.fcall("sse_relay_publish", 1, "sse-relay:{log_load}", "third", 10, 0)

    def test_payload_limit_is_64_kib(self):
        with self.assertRaises(ValueError):
            notify("log_limit", "x" * (64 * 1024), on_commit=False)


@unittest.skipUnless(os.environ.get("SSE_RELAY_TEST_HISTORY_BASE"), "needs SSE_RELAY_TEST_HISTORY_BASE (run through go test ./e2e)")
class PostgresHistoryEndToEnd(_Commit, unittest.TestCase):
    """Through a relay with `history 1000` on Postgres."""
    base = os.environ.get("SSE_RELAY_TEST_HISTORY_BASE")

    def setUp(self):
        self.override = override_settings(SSE_RELAY_HISTORY=HISTORY)
        self.override.enable()

    def tearDown(self):
        self.override.disable()

    def test_event_only_after_commit(self):
        self.check_only_after_commit("orders_logged")

    def test_id_is_the_position(self):
        stream = Stream(self.base + "/events/logged_id")
        try:
            position = notify("logged_id", "x", id="mine")
            self.assertEqual(stream.get_event(10), (position, "x"))
        finally:
            stream.close()


@unittest.skipUnless(os.environ.get("SSE_RELAY_TEST_REDIS_HISTORY_BASE"), "needs SSE_RELAY_TEST_REDIS_HISTORY_BASE")
class RedisHistoryEndToEnd(_Commit, unittest.TestCase):
    """Through a relay with `history 1000` on Redis."""
    base = os.environ.get("SSE_RELAY_TEST_REDIS_HISTORY_BASE")

    def setUp(self):
        self.override = override_settings(SSE_RELAY_BACKEND="redis", SSE_RELAY_REDIS_URL=os.environ["SSE_RELAY_TEST_REDIS_URL"],
                                          SSE_RELAY_HISTORY=HISTORY)
        self.override.enable()
        django_sse_relay._redis_client = None

    def tearDown(self):
        self.override.disable()
        django_sse_relay._redis_client = None

    def test_event_only_after_commit(self):
        self.check_only_after_commit("orders_redis_logged")

    def test_id_is_the_stream_entry(self):
        stream = Stream(self.base + "/events/logged_redis_id")
        try:
            notify("logged_redis_id", "x", on_commit=False)
            last = django_sse_relay._redis().xrevrange("sse-relay:{logged_redis_id}", count=1)[0][0].decode()
            self.assertEqual(stream.get_event(10), (last, "x"))
        finally:
            stream.close()
