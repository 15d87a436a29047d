"""Mint caddy-sse-relay tokens (HS256) with the standard library alone.

Nothing here imports Django, so a service that only hands out tokens can use
it without Django installed or configured:

    from django_sse_relay.tokens import subscriber_token
    token = subscriber_token(["user.42", "tenant.7.*"], ttl=3600, secret=SECRET)

or from a shell, printing the token:

    python3 -m django_sse_relay.tokens SECRET user.42,tenant.7.* [TTL]

In a Django project, django_sse_relay.subscriber_token is the same function
with the secret taken from settings.SSE_RELAY_JWT_SECRET.
"""
import argparse
import base64
import hashlib
import hmac
import json
import sys
import time

__all__ = ["subscriber_token", "MIN_SECRET"]

#: The relay refuses a shorter jwt_secret, so a token signed with one could
#: never be verified.
MIN_SECRET = 32


def _b64(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def subscriber_token(channels, ttl=3600, *, publish=None, secret, audience=None, issuer=None):
    """An HS256 token for a handler with jwt_secret: channels (exact or * globs) for ttl seconds.

    publish, when given, names the channels the token may also publish on;
    audience and issuer set the aud and iss claims that a handler with
    jwt_audience or jwt_issuer requires.
    """
    key = secret.encode()
    if len(key) < MIN_SECRET:
        raise ValueError("the secret is %d bytes; the relay's jwt_secret needs at least %d" % (len(key), MIN_SECRET))
    claims = {"channels": list(channels), "exp": int(time.time()) + int(ttl)}
    if publish:
        claims["publish"] = list(publish)
    if audience:
        claims["aud"] = audience
    if issuer:
        claims["iss"] = issuer
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    body = _b64(json.dumps(claims, separators=(",", ":")).encode())
    signature = hmac.new(key, (header + "." + body).encode("ascii"), hashlib.sha256).digest()
    return header + "." + body + "." + _b64(signature)


def _split(value):
    return [c for c in (part.strip() for part in value.split(",")) if c]


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python3 -m django_sse_relay.tokens",
        description="Print a caddy-sse-relay subscriber token (HS256).")
    parser.add_argument("secret", help="the handler's jwt_secret, at least %d bytes" % MIN_SECRET)
    parser.add_argument("channels", type=_split, help="comma-separated channels the token may read (exact or * globs)")
    parser.add_argument("ttl", type=int, nargs="?", default=3600, help="seconds the token is valid (default 3600)")
    parser.add_argument("--publish", type=_split, default=None, metavar="CHANNELS",
                        help="comma-separated channels the token may publish on")
    parser.add_argument("--audience", default=None, help="the aud claim, for a handler with jwt_audience")
    parser.add_argument("--issuer", default=None, help="the iss claim, for a handler with jwt_issuer")
    args = parser.parse_args(argv)
    if not args.channels and not args.publish:
        parser.error("name at least one channel")
    if args.ttl <= 0:
        parser.error("TTL must be a positive number of seconds")
    try:
        token = subscriber_token(args.channels, args.ttl, publish=args.publish, secret=args.secret,
                                 audience=args.audience, issuer=args.issuer)
    except ValueError as e:
        parser.error(str(e))
    print(token)


if __name__ == "__main__":
    sys.exit(main())
