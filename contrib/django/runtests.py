"""Run the package's tests: python3 runtests.py

Environment: SSE_RELAY_TEST_PG_URL (a Postgres the tests may use, required),
SSE_RELAY_TEST_BASE (a Caddy with sse_relay on that Postgres at /events/*, for the
end-to-end tests), SSE_RELAY_TEST_REDIS_URL and SSE_RELAY_TEST_REDIS_BASE (the same on
Redis), SSE_RELAY_TEST_JWT_BASE (one on that Postgres with jwt_secret set to
SSE_RELAY_JWT_SECRET below),
Redis), SSE_RELAY_TEST_REDIS_CLUSTER_URL and SSE_RELAY_TEST_REDIS_CLUSTER_BASE (the same on
a Redis Cluster, its URL as the relay's broker URL: redis-cluster://host:port?addr=…).
"""
import os
import sys
import unittest
from urllib.parse import urlparse

import django
from django.conf import settings

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)

pg = urlparse(os.environ["SSE_RELAY_TEST_PG_URL"])
database = {
    "ENGINE": "django.db.backends.postgresql",
    "NAME": pg.path.lstrip("/") or "postgres",
    "USER": pg.username or "postgres",
    "PASSWORD": pg.password or "",
    "HOST": pg.hostname,
    "PORT": pg.port or 5432,
}
settings.configure(
    # "other" is a second connection, for notify(using=...); "lite" is a
    # database the log's migration must leave alone.
    DATABASES={"default": database, "other": dict(database),
               "lite": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    INSTALLED_APPS=["django_sse_relay", "tests.testapp"],
    TEMPLATES=[{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}],
    SSE_RELAY_JWT_SECRET="0123456789abcdef0123456789abcdef-python",
    USE_TZ=True,
)
django.setup()

if __name__ == "__main__":
    print("Django %s" % django.get_version())
    # psycopg 3 when Django (4.2 or later) finds it, else psycopg2.
    from django.db import connection
    print("driver %s %s" % (connection.Database.__name__, connection.Database.__version__.split()[0]))
    # The log's schema through the package's own migration, as a project
    # gets it.
    from django.core.management import call_command
    call_command("migrate", "django_sse_relay", verbosity=0)
    suite = unittest.defaultTestLoader.discover(os.path.join(here, "tests"), top_level_dir=here)
    result = unittest.TextTestRunner(verbosity=2).run(suite)
    print("%d passed, %d failed" % (result.testsRun - len(result.failures) - len(result.errors) - len(result.skipped),
                                    len(result.failures) + len(result.errors)))
    sys.exit(0 if result.wasSuccessful() else 1)
