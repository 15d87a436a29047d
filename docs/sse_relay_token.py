"""Mint a caddy-sse-relay subscriber token (HS256) with the standard library.

    token = subscriber_token(settings.SSE_RELAY_JWT_SECRET, ["user.42", "tenant.7.*"], ttl=3600)
    url = f"/events/?channel=user.42&token={token}"

The secret is the handler's jwt_secret (at least 32 bytes). Grants are exact
channel names or * globs. Pass publish=[...] to mint a publisher token.
"""
import base64
import hashlib
import hmac
import json
import time


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def subscriber_token(secret: str, channels, ttl: int = 3600, publish=None) -> str:
    header = {"alg": "HS256", "typ": "JWT"}
    claims = {"channels": list(channels), "exp": int(time.time()) + int(ttl)}
    if publish:
        claims["publish"] = list(publish)
    signing_input = _b64(json.dumps(header, separators=(",", ":")).encode()) + "." + \
        _b64(json.dumps(claims, separators=(",", ":")).encode())
    signature = hmac.new(secret.encode(), signing_input.encode("ascii"), hashlib.sha256).digest()
    return signing_input + "." + _b64(signature)


if __name__ == "__main__":
    import sys
    print(subscriber_token(sys.argv[1], sys.argv[2].split(","), int(sys.argv[3]) if len(sys.argv) > 3 else 3600))
