import os
import subprocess
import sys

#: contrib/django, where a fresh interpreter finds django_sse_relay.
HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_without_django(code, *args):
    """Runs code in a fresh interpreter where importing django fails."""
    blocked = "import sys; sys.modules['django'] = None\n"
    return subprocess.run([sys.executable, "-c", blocked + code] + list(args), cwd=HERE,
                          capture_output=True, text=True, timeout=60)
