"""notify() with SSE_RELAY_HISTORY: events go through the relay's durable log."""
import os
import unittest
from datetime import timedelta

from django.db import connection, connections, transaction
from django.template import Context, Template
from django.test.utils import override_settings

import django_sse_relay
from django_sse_relay import cursor, notify, sse_url
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


class PostgresCursorTests(unittest.TestCase):
    """The render-time cursor on Postgres: sse_relay.head(), in the view's transaction."""

    def setUp(self):
        self.override = override_settings(SSE_RELAY_HISTORY=HISTORY)
        self.override.enable()

    def tearDown(self):
        self.override.disable()

    def test_url_carries_the_head(self):
        with transaction.atomic(), connection.cursor() as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            cur.execute("SELECT sse_relay.head()")
            head = cur.fetchone()[0]
            self.assertEqual(cursor("orders"), head)
            self.assertEqual(sse_url("orders"), "/events/orders?last_event_id=" + head)
            out = Template('{% load sse_relay %}{% sse_url "a" "b" %}').render(Context())
            self.assertEqual(out, "/events/?channel=a%2Cb&last_event_id=" + head)

    def test_given_or_none(self):
        self.assertEqual(sse_url("orders", last_event_id="12-3"), "/events/orders?last_event_id=12-3")
        self.assertEqual(sse_url("orders", last_event_id=False), "/events/orders")
        out = Template('{% load sse_relay %}{% sse_url "orders" last_event_id=False %}|'
                       '{% sse_url "orders" last_event_id=c %}').render(Context({"c": "7-1"}))
        self.assertEqual(out, "/events/orders|/events/orders?last_event_id=7-1")
        with override_settings(SSE_RELAY_HISTORY=None):
            self.assertEqual(sse_url("orders"), "/events/orders")


class RedisCursorTests(unittest.TestCase):
    """The render-time cursor on Redis: each channel's newest entry, in the order of sorted names."""

    def setUp(self):
        url = os.environ["SSE_RELAY_TEST_REDIS_URL"]
        self.override = override_settings(SSE_RELAY_BACKEND="redis", SSE_RELAY_REDIS_URL=url, SSE_RELAY_HISTORY=HISTORY)
        self.override.enable()
        django_sse_relay._redis_client = None
        self.redis = django_sse_relay._redis()

    def tearDown(self):
        self.override.disable()
        django_sse_relay._redis_client = None

    def test_one_position_per_channel_sorted(self):
        self.redis.delete("sse-relay:{cur_a}", "sse-relay:{cur_b}")
        self.assertEqual(cursor("cur_b", "cur_a"), "0-0,0-0")
        notify("cur_b", "1", on_commit=False)
        b = self.redis.xrevrange("sse-relay:{cur_b}", count=1)[0][0].decode()
        self.assertEqual(cursor("cur_b", "cur_a", "cur_b"), "0-0," + b)
        self.assertEqual(cursor("cur_b"), b)
        out = Template('{% load sse_relay %}{% sse_url "cur_b" "cur_a" %}').render(Context())
        self.assertEqual(out, "/events/?channel=cur_b%2Ccur_a&last_event_id=0-0%2C" + b)


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

    def test_render_cursor(self):
        """A stream opened at sse_url's URL gets what was published after the render, and nothing before."""
        notify("rendered", "before")
        url = sse_url("rendered")
        notify("rendered", "after 1")
        notify("rendered", "after 2")
        stream = Stream(self.base + url)
        try:
            notify("rendered", "live")
            self.assertEqual([stream.get(10) for _ in range(3)], ["after 1", "after 2", "live"])
        finally:
            stream.close()

    def test_render_cursor_in_the_views_transaction(self):
        """A cursor read in a transaction that published does not skip that transaction's event."""
        with transaction.atomic():
            notify("rendered_own", "own")
            url = sse_url("rendered_own")
        stream = Stream(self.base + url)
        try:
            notify("rendered_own", "live")
            self.assertEqual([stream.get(10) for _ in range(2)], ["own", "live"])
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

    def test_render_cursor_of_two_channels(self):
        """On two channels the cursor is a position per channel: each gets what came after the render."""
        notify("rend_b", "b before", on_commit=False)
        notify("rend_a", "a before", on_commit=False)
        url = sse_url("rend_b", "rend_a")
        for channel, data in (("rend_a", "a 1"), ("rend_b", "b 1"), ("rend_a", "a 2")):
            notify(channel, data, on_commit=False)
        stream = Stream(self.base + url)
        try:
            notify("rend_b", "b live", on_commit=False)
            got = [stream.get(10) for _ in range(4)]
            self.assertEqual([d for d in got if d.startswith("a")], ["a 1", "a 2"])
            self.assertEqual([d for d in got if d.startswith("b")], ["b 1", "b live"])
        finally:
            stream.close()

    def test_id_is_the_stream_entry(self):
        stream = Stream(self.base + "/events/logged_redis_id")
        try:
            notify("logged_redis_id", "x", on_commit=False)
            last = django_sse_relay._redis().xrevrange("sse-relay:{logged_redis_id}", count=1)[0][0].decode()
            self.assertEqual(stream.get_event(10), (last, "x"))
        finally:
            stream.close()
