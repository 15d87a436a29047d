from django.conf import settings


def sse_relay(request):
    """Adds SSE_RELAY_URL_PREFIX to every template context."""
    return {"SSE_RELAY_URL_PREFIX": getattr(settings, "SSE_RELAY_URL_PREFIX", "/events/")}
