"""Publish events to browsers through caddy-sse-relay.

    from django_sse_relay import notify
    notify("orders", {"id": order.pk}, event="order.created")

On Postgres (the default) this runs ``SELECT pg_notify(%s, %s)`` on Django's own
connection once the surrounding transaction commits, so a rolled-back change is
never announced. With ``SSE_RELAY_BACKEND = "redis"`` it publishes to
``SSE_RELAY_REDIS_URL`` instead, also after commit.

Django is imported where it is used, not here: importing the package, as a
service that only mints tokens does (see django_sse_relay.tokens), needs
neither Django nor its settings.
"""
import json
import string
import unicodedata

__all__ = ["notify", "payload", "subscriber_token", "check_channel", "heard", "MAX_PAYLOAD"]

#: Postgres NOTIFY payloads must be shorter than 8000 bytes.
MAX_PAYLOAD = {"postgres": 7999, "redis": 64 * 1024}
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
    """Publish one event on channel; after the transaction on `using` commits by default."""
    backend = _backend()
    check_channel(channel, backend)
    body = payload(data, event=event, id=id, retry=retry)
    size = len(body.encode("utf-8"))
    if size > MAX_PAYLOAD[backend]:
        raise ValueError(
            "payload is %d bytes; %s carries at most %d: send a key and let the page fetch the rest"
            % (size, backend, MAX_PAYLOAD[backend]))

    from django.db import connections, transaction

    def send():
        if backend == "redis":
            _redis().publish(channel, body)
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
        _redis_client = redis.Redis.from_url(_setting("SSE_RELAY_REDIS_URL", "redis://localhost:6379/0"))
    return _redis_client


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


def sse_url(*channels, token=False, ttl=3600):
    """The stream URL for channels, with ?token= when asked for.

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
    return url + ("?" + urlencode(query) if query else "")
