"""A Django project for the browser tests (e2e/history_browser_test.go): one
view that renders stream URLs with {% sse_url %}, behind the same Caddy as
the relay, on the test Postgres (SSE_RELAY_TEST_PG_URL)."""
import os
from pathlib import Path
from urllib.parse import urlparse

pg = urlparse(os.environ["SSE_RELAY_TEST_PG_URL"])

SECRET_KEY = "relaysite-only-for-tests"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1"]
ROOT_URLCONF = "relaysite.urls"
INSTALLED_APPS = ["django_sse_relay"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": pg.path.lstrip("/") or "postgres",
        "USER": pg.username or "postgres",
        "PASSWORD": pg.password or "",
        "HOST": pg.hostname,
        "PORT": pg.port or 5432,
        # The view, and so the cursor its template reads, runs in one transaction.
        "ATOMIC_REQUESTS": True,
    },
}
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates",
              "DIRS": [Path(__file__).resolve().parent / "templates"]}]
USE_TZ = True
# The relay's `history 1000`.
SSE_RELAY_HISTORY = {"count": 1000}
