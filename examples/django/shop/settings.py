"""Settings of the example shop: a shared list of orders and a per-user inbox,
published through caddy-sse-relay's event log on the same Postgres.

The launcher (`make example`, examples/django/example.go) sets the
environment: EXAMPLE_DATABASE_URL, EXAMPLE_SECRET_KEY and EXAMPLE_STATIC.
"""
import os
from pathlib import Path
from urllib.parse import urlparse

HERE = Path(__file__).resolve().parent.parent
REPO = HERE.parent.parent

db = urlparse(os.environ["EXAMPLE_DATABASE_URL"])

SECRET_KEY = os.environ["EXAMPLE_SECRET_KEY"]
DEBUG = False
ALLOWED_HOSTS = ["localhost", "127.0.0.1"]
# Caddy sets X-Forwarded-Proto itself (it trusts no proxy in front of it),
# so Django knows an https:// page for its CSRF checks.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.staticfiles",
    "django_sse_relay",  # notify(), {% sse_url %}, views.authorize, the log's migration
    "orders",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
ROOT_URLCONF = "shop.urls"
WSGI_APPLICATION = "shop.wsgi.application"
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": [
        "django.template.context_processors.request",
        "django.contrib.auth.context_processors.auth",
    ]},
}]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": db.path.lstrip("/") or "postgres",
        "USER": db.username or "postgres",
        "PASSWORD": db.password or "",
        "HOST": db.hostname,
        "PORT": db.port or 5432,
    },
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "page"
LOGOUT_REDIRECT_URL = "login"

# Caddy serves what collectstatic gathers here: npm's htmx and its SSE
# extension, and the relay's resume script.
STATIC_URL = "/static/"
STATIC_ROOT = os.environ["EXAMPLE_STATIC"]
STATICFILES_DIRS = [
    ("htmx", HERE / "node_modules/htmx.org/dist"),
    ("htmx-ext-sse", HERE / "node_modules/htmx-ext-sse/dist"),
    ("sse-relay", REPO / "contrib/htmx"),
]

# The Caddyfile's `history 10000 24h`: notify() writes each event in the
# caller's transaction, and {% sse_url %} renders the log's position.
SSE_RELAY_HISTORY = {"count": 10000, "max_age": 86400}
# What django_sse_relay.views.authorize (forward_auth) lets a user read.
SSE_RELAY_CHANNELS = "orders.sse.channels_for"

# Errors go to gunicorn's output (the stack's gunicorn.log).
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django": {"handlers": ["console"], "level": "WARNING"}},
}
