"""Publish events to browsers through caddy-sse-relay.

    from django_sse_relay import notify
    notify("orders", {"id": order.pk}, event="order.created")

On Postgres (the default) this runs ``SELECT pg_notify(%s, %s)`` on Django's own
connection once the surrounding transaction commits, so a rolled-back change is
never announced. With ``SSE_RELAY_BACKEND = "redis"`` it publishes to
``SSE_RELAY_REDIS_URL`` instead, also after commit.

With ``SSE_RELAY_HISTORY`` set (the relay's ``history`` is on), events go
through the relay's durable log instead: on Postgres ``SELECT
sse_relay.publish(%s, %s)`` right away, inside the current transaction, so the
event commits or rolls back with the data; on Redis ``FCALL sse_relay_publish``
after commit.

Django is imported where it is used, not here: importing the package, as a
service that only mints tokens does (see django_sse_relay.tokens), needs
neither Django nor its settings.
"""
import json
import string
import unicodedata
from datetime import timedelta
from pathlib import Path

__all__ = ["notify", "payload", "cursor", "sse_url", "subscriber_token", "check_channel", "heard", "MAX_PAYLOAD",
           "MAX_PAYLOAD_HISTORY"]

#: Postgres NOTIFY payloads must be shorter than 8000 bytes.
MAX_PAYLOAD = {"postgres": 7999, "redis": 64 * 1024}
#: With history the payload goes in a table or a stream, not in a NOTIFY, and
#: the relay carries at most 64 KiB on either broker.
MAX_PAYLOAD_HISTORY = {"postgres": 64 * 1024, "redis": 64 * 1024}
#: Channel names: Postgres identifiers stop at 63 bytes; the relay caps Redis at 255.
MAX_CHANNEL = {"postgres": 63, "redis": 255}

_FORBIDDEN = set("\"';\\,")


def _setting(name, default):
    from django.conf import settings
    return getattr(settings, name, default)


def _backend():
    backend = _setting("SSE_RELAY_BACKEND", "postgres")
    if backend not in MAX_PAYLOAD:
        raise ValueError("SSE_RELAY_BACKEND must be 'postgres' or 'redis', not %r" % (backend,))
    return backend


def _history():
    """SSE_RELAY_HISTORY as (count, max_age in milliseconds), or None when it is off.

    It mirrors the relay's `history <count> [<max-age>]`: {"count": 10000,
    "max_age": 86400} (seconds, or a timedelta). Redis trims each stream as
    it is written, with these values; on Postgres the relay trims, and the
    setting only turns the log on.
    """
    history = _setting("SSE_RELAY_HISTORY", None)
    if history is None:
        return None
    if not isinstance(history, dict) or set(history) - {"count", "max_age"}:
        raise ValueError('SSE_RELAY_HISTORY must be a dict like {"count": 10000, "max_age": 86400}, not %r' % (history,))
    count, max_age = history.get("count"), history.get("max_age") or 0
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError("SSE_RELAY_HISTORY['count'] must be a whole number of events per channel of at least 1, as the relay's history")
    if isinstance(max_age, timedelta):
        max_age = max_age.total_seconds()
    if isinstance(max_age, bool) or not isinstance(max_age, (int, float)) or max_age < 0:
        raise ValueError("SSE_RELAY_HISTORY['max_age'] must be seconds (or a timedelta), not %r" % (max_age,))
    return count, int(max_age * 1000)


def check_channel(channel, backend=None):
    """Raise ValueError unless the relay would accept channel as a name."""
    backend = backend or _backend()
    if not isinstance(channel, str) or not channel:
        raise ValueError("channel must be a non-empty string")
    size = len(channel.encode("utf-8", "surrogatepass"))
    if size > MAX_CHANNEL[backend]:
        raise ValueError("channel %r is %d bytes; %s allows at most %d" % (channel, size, backend, MAX_CHANNEL[backend]))
    try:
        channel.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("channel %r is not valid UTF-8" % (channel,))
    if channel == "sse_relay" or channel.startswith("sse-relay:"):
        raise ValueError("channel %r is reserved for the relay's event log" % (channel,))
    for ch in channel:
        if ch.isspace() or unicodedata.category(ch) == "Cc" or ch in _FORBIDDEN:
            raise ValueError("channel %r has a character the relay refuses: %r" % (channel, ch))


def payload(data=None, *, event=None, id=None, retry=None):
    """The JSON payload of the relay's contract, with unset fields left out."""
    for name, value in (("event", event), ("id", id)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise ValueError("%s must be a string or an integer, not %r" % (name, value))
        if any(c in str(value) for c in "\r\n\0"):
            raise ValueError("%s must not contain CR, LF or NUL" % name)
    if retry is not None and (isinstance(retry, bool) or not isinstance(retry, int) or retry < 0):
        raise ValueError("retry must be a non-negative integer (milliseconds)")
    fields = {"event": event, "id": id, "data": data, "retry": retry}
    return json.dumps({k: v for k, v in fields.items() if v is not None}, separators=(",", ":"))


def notify(channel, data=None, *, event=None, id=None, retry=None, using="default", on_commit=True):
    """Publish one event on channel; after the transaction on `using` commits by default.

    With SSE_RELAY_HISTORY on Postgres the event is written at once, in the
    transaction on `using`, whatever on_commit says: it goes out when that
    transaction commits and never if it rolls back. Then the return value is
    the event's position in the log, "<tx>-<id>"; otherwise None.
    """
    backend = _backend()
    history = _history()
    check_channel(channel, backend)
    body = payload(data, event=event, id=id, retry=retry)
    size = len(body.encode("utf-8"))
    limit = (MAX_PAYLOAD_HISTORY if history else MAX_PAYLOAD)[backend]
    if size > limit:
        raise ValueError(
            "payload is %d bytes; %s%s carries at most %d: send a key and let the page fetch the rest"
            % (size, backend, " with history" if history else "", limit))

    from django.db import connections, transaction

    if history and backend == "postgres":
        # sse_relay.publish is transactional: the row is the event, and it
        # commits with the data or not at all. Waiting for on_commit would
        # only open a window (a crash after COMMIT) in which it is lost.
        with connections[using].cursor() as cursor:
            cursor.execute("SELECT sse_relay.publish(%s, %s)", [channel, body])
            return cursor.fetchone()[0]

    def send():
        if backend == "redis" and history:
            _redis_log(channel, body, *history)
        elif backend == "redis":
            _redis_publish(channel, body)
        else:
            with connections[using].cursor() as cursor:
                cursor.execute("SELECT pg_notify(%s, %s)", [channel, body])

    if on_commit:
        transaction.on_commit(send, using=using)
    else:
        send()


_redis_client = None


def _redis():
    global _redis_client
    if _redis_client is None:
        try:
            import redis
        except ImportError:
            raise ImportError("SSE_RELAY_BACKEND = 'redis' needs the redis package: pip install 'django-sse-relay[redis]'")
        _redis_client = _redis_from_url(redis, _setting("SSE_RELAY_REDIS_URL", "redis://localhost:6379/0"))
    return _redis_client


def _log_key(channel):
    """The channel's stream on Redis: the relay's broker.RedisLogKey."""
    return "sse-relay:{%s}" % channel


def _redis_log(channel, body, count, max_age_ms):
    """Appends body to channel's stream and announces it, in one FCALL.

    The relay loads the function library when it connects with history on;
    a Redis that has not seen such a relay yet (new, or flushed) gets the
    package's copy of it (redis_function.lua, kept identical to the relay's
    by a Go test) instead of a failed publish.
    """
    import redis
    client = _redis()
    # On a Redis Cluster the relay reads sharded pub/sub: announce with
    # SPUBLISH, on the shard that holds the stream.
    function = "sse_relay_spublish" if hasattr(client, "get_node_from_key") else "sse_relay_publish"
    args = (function, 1, _log_key(channel), body, count, max_age_ms)
    try:
        return client.fcall(*args)
    except redis.ResponseError as e:
        if "function not found" not in str(e).lower():
            raise
    library = (Path(__file__).resolve().parent / "redis_function.lua").read_text(encoding="utf-8")
    client.function_load(library, replace=True)
    return client.fcall(*args)


def _redis_from_url(redis, url):
    """A client for url: redis:// or rediss://, or a Redis Cluster as the relay's broker
    URL names one: redis-cluster://host:port?addr=host2:port2&addr=… (rediss-cluster:// for TLS)."""
    scheme = url.partition("://")[0]
    if scheme.lower() not in ("redis-cluster", "rediss-cluster"):
        return redis.Redis.from_url(url)
    from urllib.parse import parse_qs, urlsplit
    from redis.cluster import ClusterNode, RedisCluster
    parts = urlsplit(url)
    seeds = [ClusterNode(*addr.rsplit(":", 1)) for addr in parse_qs(parts.query).get("addr", [])]
    return RedisCluster.from_url(scheme.lower()[:-len("-cluster")] + "://" + parts.netloc, startup_nodes=seeds)


def _redis_publish(channel, body):
    """PUBLISH on one Redis; SPUBLISH on a Redis Cluster, where the relay reads each
    channel with SSUBSCRIBE on the shard that owns its slot."""
    client = _redis()
    if not hasattr(client, "get_node_from_key"):
        client.publish(channel, body)
        return
    from redis.exceptions import RedisClusterException
    # redis-py 4.3 cannot route SPUBLISH by itself: send it to the channel's
    # primary, and once more after a MOVED (a failover, a resharding) has
    # updated the client's slot map.
    try:
        client.execute_command("SPUBLISH", channel, body, target_nodes=client.get_node_from_key(channel))
    except RedisClusterException:
        client.execute_command("SPUBLISH", channel, body, target_nodes=client.get_node_from_key(channel))


def subscriber_token(channels, ttl=3600, *, publish=None, secret=None, audience=None, issuer=None):
    """An HS256 token for a handler with jwt_secret: channels (exact or * globs) for ttl seconds.

    Without secret=, the secret is settings.SSE_RELAY_JWT_SECRET, and audience
    and issuer, unless passed, are SSE_RELAY_JWT_AUDIENCE and
    SSE_RELAY_JWT_ISSUER (the handler's jwt_audience and jwt_issuer). With
    secret= no setting is read, so no Django is needed; this calls
    django_sse_relay.tokens.subscriber_token.
    """
    # Imported here rather than at the top so that `python3 -m
    # django_sse_relay.tokens` does not find the module already imported.
    from django_sse_relay import tokens
    if secret is None:
        secret = _setting("SSE_RELAY_JWT_SECRET", "")
        if len(secret.encode()) < tokens.MIN_SECRET:
            raise ValueError("SSE_RELAY_JWT_SECRET must be at least %d bytes, as the relay's jwt_secret" % tokens.MIN_SECRET)
        if audience is None:
            audience = _setting("SSE_RELAY_JWT_AUDIENCE", None)
        if issuer is None:
            issuer = _setting("SSE_RELAY_JWT_ISSUER", None)
    return tokens.subscriber_token(channels, ttl, publish=publish, secret=secret, audience=audience, issuer=issuer)


_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def heard(channels, backend=None):
    """The channel names whose events a stream of channels receives.

    Postgres folds unquoted identifiers, so on Postgres a channel with ASCII
    capitals also receives the unquoted NOTIFY of its lowercase form
    (user.Alice gets NOTIFY user.Alice, which arrives as user.alice), and the
    relay opens such a stream only for a token that grants both names. Only
    ASCII letters fold, as in Postgres.
    """
    backend = backend or _backend()
    out = list(channels)
    if backend == "postgres":
        for c in channels:
            folded = c.translate(_ASCII_LOWER)
            if folded not in out:
                out.append(folded)
    return out


def cursor(*channels, using="default"):
    """Where the relay's log is now for channels: a Last-Event-ID from which
    a stream gets only what is published later, and all of it.

    Postgres: sse_relay.head() on the connection `using`, in its current
    transaction (one position for every channel). Redis: the last id each
    channel's stream generated ("0-0" for none), in the order of the
    channels' sorted names, joined by commas. Read it before the data the page shows:
    an event committed between reading the data and reading the cursor
    would be behind the cursor and missing from the page.
    """
    backend = _backend()
    if not channels:
        raise ValueError("cursor needs at least one channel")
    for c in channels:
        check_channel(c, backend)
    if backend == "postgres":
        from django.db import connections
        with connections[using].cursor() as cur:
            cur.execute("SELECT sse_relay.head()")
            return cur.fetchone()[0]
    import redis
    pipe = _redis().pipeline(transaction=False)
    for name in sorted(set(channels)):  # the relay's order: sorted, without repeats
        pipe.xinfo_stream(_log_key(name))
    heads = []
    for info in pipe.execute(raise_on_error=False):
        if isinstance(info, redis.ResponseError) and "no such key" in str(info).lower():
            heads.append("0-0")  # no stream yet
            continue
        if isinstance(info, Exception):
            raise info
        # The last id the stream generated, kept when age trimmed it
        # empty: the relay's head (broker.redisLog.heads).
        id = info["last-generated-id"]
        heads.append(id.decode() if isinstance(id, bytes) else id)
    return ",".join(heads)


def sse_url(*channels, token=False, ttl=3600, last_event_id=None, using="default"):
    """The stream URL for channels, with ?token= when asked for.

    With SSE_RELAY_HISTORY it carries ?last_event_id=, the log's position as
    it renders (cursor(), on the connection `using`), so that what is
    published between the render and the browser's connect reaches the page.
    Pass last_event_id= a cursor read earlier (before the view's queries),
    or False for none.

    The token grants what the stream receives: on Postgres, user.Alice's
    token also grants user.alice (see heard), without which the relay
    answers 403.
    """
    from urllib.parse import quote, urlencode
    for c in channels:
        check_channel(c)
    prefix = _setting("SSE_RELAY_URL_PREFIX", "/events/")
    if len(channels) == 1:
        url = prefix + quote(channels[0], safe="")
        query = {}
    else:
        url, query = prefix, {"channel": ",".join(channels)}
    if token:
        query["token"] = subscriber_token(heard(channels), ttl)
    if last_event_id is None and _history():
        last_event_id = cursor(*channels, using=using)
    if last_event_id:
        query["last_event_id"] = last_event_id
    return url + ("?" + urlencode(query) if query else "")
