import base64
import hashlib
import hmac
import json
import subprocess
import sys
import time
import unittest

from django.test.utils import override_settings

import django_sse_relay
from django_sse_relay import tokens
from tests import HERE, run_without_django

SECRET = "0123456789abcdef0123456789abcdef-tokens"


def decode(token, secret):
    """The claims of token after checking its HS256 signature."""
    header, body, sig = token.split(".")
    want = hmac.new(secret.encode(), (header + "." + body).encode(), hashlib.sha256).digest()
    if base64.urlsafe_b64decode(sig + "==") != want:
        raise AssertionError("bad signature")
    return json.loads(base64.urlsafe_b64decode(body + "=="))


class TokensModuleTests(unittest.TestCase):
    def test_without_django(self):
        """tokens is the one Python minter, and it needs no Django."""
        out = run_without_django(
            "from django_sse_relay.tokens import subscriber_token\n"
            "print(subscriber_token(['user.42', 'tenant.7.*'], 60, secret=%r))" % SECRET)
        self.assertEqual(out.returncode, 0, out.stderr)
        claims = decode(out.stdout.strip(), SECRET)
        self.assertEqual(claims["channels"], ["user.42", "tenant.7.*"])
        self.assertTrue(time.time() < claims["exp"] <= time.time() + 61)

    def test_command_line(self):
        """python3 -m django_sse_relay.tokens SECRET CHANNELS [TTL] prints a token and nothing else."""
        out = subprocess.run([sys.executable, "-m", "django_sse_relay.tokens", SECRET, "user.42,tenant.7.*", "60",
                              "--publish", "news"], cwd=HERE, capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(out.stderr, "")
        claims = decode(out.stdout.strip(), SECRET)
        self.assertEqual(claims["channels"], ["user.42", "tenant.7.*"])
        self.assertEqual(claims["publish"], ["news"])
        self.assertTrue(time.time() < claims["exp"] <= time.time() + 61)

    def test_command_line_refuses(self):
        for args in (["short", "a"], [SECRET, ","], [SECRET, "a", "0"], [SECRET]):
            out = subprocess.run([sys.executable, "-m", "django_sse_relay.tokens"] + args, cwd=HERE,
                                 capture_output=True, text=True, timeout=60)
            self.assertEqual(out.returncode, 2, args)
            self.assertEqual(out.stdout, "", args)

    def test_audience_and_issuer(self):
        """For a handler with jwt_audience and jwt_issuer; left out when not asked for."""
        claims = decode(tokens.subscriber_token(["a"], secret=SECRET, audience="sse-relay", issuer="https://app.example.com"), SECRET)
        self.assertEqual((claims["aud"], claims["iss"]), ("sse-relay", "https://app.example.com"))
        self.assertNotIn("aud", decode(tokens.subscriber_token(["a"], secret=SECRET), SECRET))
        out = subprocess.run([sys.executable, "-m", "django_sse_relay.tokens", SECRET, "a", "--audience", "sse-relay",
                              "--issuer", "https://app.example.com"], cwd=HERE, capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        claims = decode(out.stdout.strip(), SECRET)
        self.assertEqual((claims["aud"], claims["iss"]), ("sse-relay", "https://app.example.com"))

    def test_secret_is_required(self):
        with self.assertRaises(TypeError):
            tokens.subscriber_token(["a"])
        with self.assertRaises(ValueError):
            tokens.subscriber_token(["a"], secret="x" * 31)


class SettingsSecretTests(unittest.TestCase):
    def test_audience_and_issuer_from_settings(self):
        with override_settings(SSE_RELAY_JWT_SECRET=SECRET, SSE_RELAY_JWT_AUDIENCE="sse-relay",
                               SSE_RELAY_JWT_ISSUER="https://app.example.com"):
            claims = decode(django_sse_relay.subscriber_token(["a"]), SECRET)
            self.assertEqual((claims["aud"], claims["iss"]), ("sse-relay", "https://app.example.com"))
            claims = decode(django_sse_relay.subscriber_token(["a"], audience="other"), SECRET)
            self.assertEqual(claims["aud"], "other")
            # secret= reads no setting, as without Django.
            other = "another-secret-another-secret-42"
            self.assertNotIn("aud", decode(django_sse_relay.subscriber_token(["a"], secret=other), other))
        with override_settings(SSE_RELAY_JWT_SECRET=SECRET):
            self.assertNotIn("aud", decode(django_sse_relay.subscriber_token(["a"]), SECRET))

    def test_settings_only_when_no_secret_passed(self):
        with override_settings(SSE_RELAY_JWT_SECRET=SECRET):
            decode(django_sse_relay.subscriber_token(["a"]), SECRET)
            other = "another-secret-another-secret-42"
            decode(django_sse_relay.subscriber_token(["a"], secret=other), other)
        with override_settings(SSE_RELAY_JWT_SECRET="short"):
            with self.assertRaises(ValueError) as cm:
                django_sse_relay.subscriber_token(["a"])
            self.assertIn("SSE_RELAY_JWT_SECRET", str(cm.exception))
