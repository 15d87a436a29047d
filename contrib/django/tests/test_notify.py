import base64
import hashlib
import hmac
import json
import os
import queue
import threading
import time
import unittest
import urllib.error
import urllib.request
from urllib.parse import parse_qs, urlparse

from django.db import connection, transaction
from django.template import Context, Template
from django.test.utils import override_settings

import django_sse_relay
from django_sse_relay import check_channel, notify, payload, subscriber_token
from tests import run_without_django
from tests.testapp.models import Order


class ImportTests(unittest.TestCase):
    def test_package_imports_without_django(self):
        """A service that only mints tokens or reads the limits need not have Django."""
        out = run_without_django(
            "import django_sse_relay as r\n"
            "print(r.MAX_CHANNEL['postgres'], len(r.subscriber_token(['a'], secret='s' * 32).split('.')))")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(out.stdout.split(), ["63", "3"])


class PayloadTests(unittest.TestCase):
    def test_fields_left_out_when_unset(self):
        self.assertEqual(payload({"id": 1}, event="order"), '{"event":"order","data":{"id":1}}')
        self.assertEqual(payload("x", id=7, retry=500), '{"id":7,"data":"x","retry":500}')

    def test_refuses_injection_and_bad_retry(self):
        for kwargs in ({"event": "a\nb"}, {"id": "1\r"}, {"retry": -1}, {"retry": 1.5}, {"retry": True},
                       {"event": ["a"]}, {"id": {"x": 1}}, {"id": False}):
            with self.assertRaises(ValueError):
                payload("x", **kwargs)

    def test_channel_rules(self):
        check_channel("tenant.7.orders")
        for bad in ("", "a b", "a;b", 'a"b', "a'b", "a\\b", "a\x01b", "a,b", "x" * 64):
            with self.assertRaises(ValueError, msg=bad):
                check_channel(bad, "postgres")
        check_channel("x" * 255, "redis")
        with self.assertRaises(ValueError):
            check_channel("x" * 256, "redis")

    def test_oversize_payload(self):
        with self.assertRaises(ValueError) as cm:
            notify("orders", "x" * 8000, on_commit=False)
        self.assertIn("7999", str(cm.exception))


class TokenTests(unittest.TestCase):
    def test_token_verifies(self):
        token = subscriber_token(["user.42", "tenant.7.*"], ttl=60, publish=["news"])
        header, body, sig = token.split(".")
        secret = b"0123456789abcdef0123456789abcdef-python"
        want = hmac.new(secret, (header + "." + body).encode(), hashlib.sha256).digest()
        self.assertEqual(base64.urlsafe_b64decode(sig + "=="), want)
        claims = json.loads(base64.urlsafe_b64decode(body + "=="))
        self.assertEqual(claims["channels"], ["user.42", "tenant.7.*"])
        self.assertEqual(claims["publish"], ["news"])
        self.assertTrue(time.time() < claims["exp"] <= time.time() + 61)

    def test_short_secret_refused(self):
        with self.assertRaises(ValueError):
            subscriber_token(["a"], secret="short")


class TemplateTagTests(unittest.TestCase):
    def test_context_processor(self):
        from django_sse_relay.context_processors import sse_relay
        self.assertEqual(sse_relay(None), {"SSE_RELAY_URL_PREFIX": "/events/"})
        with override_settings(SSE_RELAY_URL_PREFIX="/sse/"):
            self.assertEqual(sse_relay(None), {"SSE_RELAY_URL_PREFIX": "/sse/"})

    def test_sse_url(self):
        out = Template('{% load sse_relay %}{% sse_url "orders" %}|{% sse_url "a" "b" %}').render(Context())
        self.assertEqual(out, "/events/orders|/events/?channel=a%2Cb")
        with override_settings(SSE_RELAY_URL_PREFIX="/sse/"):
            out = Template('{% load sse_relay %}{% sse_url "user.42" token=True %}').render(Context())
        self.assertTrue(out.startswith("/sse/user.42?token="), out)
        # Not HTML-escaped: inside <script> an &amp; would break the URL.
        out = Template('{% load sse_relay %}{% sse_url "a" "b" token=True %}').render(Context())
        self.assertTrue(out.startswith("/events/?channel=a%2Cb&token="), out)

    def test_sse_url_token_grants_what_the_stream_hears(self):
        """On Postgres user.Alice also hears NOTIFY user.alice, and the relay wants both granted."""
        def granted(url):
            token = parse_qs(urlparse(url).query)["token"][0]
            return json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))["channels"]
        self.assertEqual(granted(django_sse_relay.sse_url("user.Alice", token=True)), ["user.Alice", "user.alice"])
        self.assertEqual(granted(django_sse_relay.sse_url("user.Alice", "Team.ÄB", "x", token=True)),
                         ["user.Alice", "Team.ÄB", "x", "user.alice", "team.Äb"])  # only ASCII folds
        self.assertEqual(granted(django_sse_relay.sse_url("user.alice", token=True)), ["user.alice"])
        with override_settings(SSE_RELAY_BACKEND="redis"):
            self.assertEqual(granted(django_sse_relay.sse_url("user.Alice", token=True)), ["user.Alice"])


class Stream:
    """Reads an SSE stream on a thread; events land in a queue."""

    def __init__(self, url):
        self.events = queue.Queue()
        self.resp = urllib.request.urlopen(url, timeout=30)
        first = self.resp.readline()
        assert first.startswith(b":"), first  # the relay listens from here on
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        data, id = [], None
        try:
            for raw in self.resp:
                line = raw.decode().rstrip("\n")
                if line.startswith("data: "):
                    data.append(line[6:])
                elif line.startswith("id: "):
                    id = line[4:]
                elif line == "" and data:
                    self.events.put((id, "\n".join(data)))
                    data, id = [], None
        except Exception:
            pass

    def get(self, timeout):
        """The next event's data."""
        return self.events.get(timeout=timeout)[1]

    def get_event(self, timeout):
        """The next event's id (None without one) and data."""
        return self.events.get(timeout=timeout)

    def close(self):
        self.resp.close()


def create_table():
    with connection.schema_editor() as editor:
        editor.execute("DROP TABLE IF EXISTS testapp_order")
        editor.create_model(Order)


class _Commit:
    """Shared by the Postgres and Redis end-to-end tests."""
    base = None

    def check_only_after_commit(self, channel):
        create_table()
        stream = Stream(self.base + "/events/" + channel)
        try:
            with transaction.atomic():
                order = Order.objects.create(total=42)
                notify(channel, {"id": order.pk}, event="order.created")
                time.sleep(0.5)
                self.assertTrue(stream.events.empty(), "an event arrived before commit")
            self.assertEqual(json.loads(stream.get(10)), {"id": order.pk})

            class Rollback(Exception):
                pass
            try:
                with transaction.atomic():
                    Order.objects.create(total=1)
                    notify(channel, {"rolled": "back"}, event="order.created")
                    raise Rollback
            except Rollback:
                pass
            notify(channel, "after rollback", on_commit=False)
            self.assertEqual(stream.get(10), "after rollback", "the rolled-back event arrived")
        finally:
            stream.close()


@unittest.skipUnless(os.environ.get("SSE_RELAY_TEST_BASE"), "needs SSE_RELAY_TEST_BASE (run through go test ./e2e)")
class PostgresEndToEnd(_Commit, unittest.TestCase):
    base = os.environ.get("SSE_RELAY_TEST_BASE")

    def test_using_another_connection(self):
        """notify(using=...) waits for that connection's transaction, and sends on it."""
        channel = "orders_other"
        stream = Stream(self.base + "/events/" + channel)
        try:
            with transaction.atomic(using="other"):
                notify(channel, "on other", using="other")
                time.sleep(0.5)
                self.assertTrue(stream.events.empty(), "an event arrived before the other connection committed")
            self.assertEqual(stream.get(10), "on other")

            class Rollback(Exception):
                pass
            try:
                with transaction.atomic(using="other"):
                    notify(channel, "rolled back on other", using="other")
                    raise Rollback
            except Rollback:
                pass
            # A transaction on default does not hold back an event for other.
            with transaction.atomic():
                notify(channel, "other, autocommit", using="other")
                self.assertEqual(stream.get(10), "other, autocommit")
        finally:
            stream.close()

    def test_event_only_after_commit(self):
        self.check_only_after_commit("orders")


@unittest.skipUnless(os.environ.get("SSE_RELAY_TEST_JWT_BASE"), "needs SSE_RELAY_TEST_JWT_BASE (run through go test ./e2e)")
class PostgresTokenEndToEnd(unittest.TestCase):
    """A relay on Postgres with jwt_secret: sse_url's token opens a channel with capitals."""
    base = os.environ.get("SSE_RELAY_TEST_JWT_BASE")

    def test_sse_url_token_opens_a_channel_with_capitals(self):
        stream = Stream(self.base + django_sse_relay.sse_url("user.Alice", token=True))
        try:
            notify("user.Alice", "to user.Alice", on_commit=False)
            self.assertEqual(stream.get(10), "to user.Alice")
            # What an unquoted NOTIFY user.Alice becomes: the stream hears it,
            # which is why the token must grant it.
            notify("user.alice", "to user.alice", on_commit=False)
            self.assertEqual(stream.get(10), "to user.alice")
        finally:
            stream.close()

    def test_token_for_the_given_name_alone_is_refused(self):
        """What sse_url minted before: the relay answers 403."""
        url = self.base + "/events/user.Alice?token=" + subscriber_token(["user.Alice"])
        with self.assertRaises(urllib.error.HTTPError) as cm:
            urllib.request.urlopen(url, timeout=30)
        self.assertEqual(cm.exception.code, 403)


@unittest.skipUnless(os.environ.get("SSE_RELAY_TEST_REDIS_BASE"), "needs SSE_RELAY_TEST_REDIS_BASE")
class RedisEndToEnd(_Commit, unittest.TestCase):
    base = os.environ.get("SSE_RELAY_TEST_REDIS_BASE")

    def setUp(self):
        self.override = override_settings(SSE_RELAY_BACKEND="redis", SSE_RELAY_REDIS_URL=os.environ["SSE_RELAY_TEST_REDIS_URL"])
        self.override.enable()
        django_sse_relay._redis_client = None

    def tearDown(self):
        self.override.disable()
        django_sse_relay._redis_client = None

    def test_event_only_after_commit(self):
        self.check_only_after_commit("orders_redis")


@unittest.skipUnless(os.environ.get("SSE_RELAY_TEST_REDIS_CLUSTER_BASE"), "needs SSE_RELAY_TEST_REDIS_CLUSTER_BASE")
class RedisClusterEndToEnd(_Commit, unittest.TestCase):
    """SSE_RELAY_REDIS_URL names a Redis Cluster as the relay's broker URL does:
    notify() publishes with SPUBLISH on the shard of each channel's slot."""
    base = os.environ.get("SSE_RELAY_TEST_REDIS_CLUSTER_BASE")

    def setUp(self):
        self.override = override_settings(SSE_RELAY_BACKEND="redis",
                                          SSE_RELAY_REDIS_URL=os.environ["SSE_RELAY_TEST_REDIS_CLUSTER_URL"])
        self.override.enable()
        django_sse_relay._redis_client = None

    def tearDown(self):
        self.override.disable()
        django_sse_relay._redis_client = None

    def test_event_only_after_commit(self):
        self.check_only_after_commit("orders_cluster")

    def test_a_channel_on_every_shard(self):
        client = django_sse_relay._redis()
        primaries = {node.name for node in client.get_primaries()}
        channels, shards = [], set()
        for i in range(1000):
            channel = "shard_%d" % i
            node = client.get_node_from_key(channel).name
            if node not in shards:
                shards.add(node)
                channels.append(channel)
        self.assertEqual(shards, primaries)
        streams = [Stream(self.base + "/events/" + channel) for channel in channels]
        try:
            for channel in channels:
                notify(channel, "on " + channel, on_commit=False)
            for channel, stream in zip(channels, streams):
                self.assertEqual(stream.get(10), "on " + channel)
        finally:
            for stream in streams:
                stream.close()
