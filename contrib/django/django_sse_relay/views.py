"""The view Caddy's forward_auth asks before the relay opens a stream.

    # urls.py
    from django_sse_relay.views import authorize
    urlpatterns = [path("sse/authorize", authorize), ...]

    # settings.py
    SSE_RELAY_CHANNELS = "orders.sse.channels_for"   # user -> channel names

    # Caddyfile
    forward_auth django:8000 {
        uri /sse/authorize
        copy_headers X-Sse-Channels
    }
    sse_relay /events/* {
        channels {http.request.header.X-Sse-Channels}
    }

Django's own session decides on every connect and reconnect: a signed-out
browser gets 401 (and forward_auth hands that to it, so the relay never
runs), a signed-in one 200 with X-Sse-Channels naming what it may read.
"""
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpResponse
from django.utils.module_loading import import_string
from django.views.decorators.http import require_safe

from django_sse_relay import _setting, check_channel

__all__ = ["authorize", "channels_for"]


def channels_for(user):
    """The channels user may read: SSE_RELAY_CHANNELS called with user.

    The setting is a callable or its dotted path; it returns an iterable of
    channel names, each one the relay accepts (check_channel).
    """
    name = _setting("SSE_RELAY_CHANNELS", None)
    if not name:
        raise ImproperlyConfigured(
            'django_sse_relay.views.authorize needs SSE_RELAY_CHANNELS, a callable or its dotted path '
            '("orders.sse.channels_for") that returns the channels a user may read')
    func = import_string(name) if isinstance(name, str) else name
    channels = list(func(user))
    for channel in channels:
        check_channel(channel)
    return channels


@require_safe
def authorize(request):
    """200 with X-Sse-Channels for a signed-in user; 401 when signed out.

    A user with no channels gets 200 without the header, which the relay
    answers with 204: the browser stops reconnecting. forward_auth sends the
    browser's cookies, so this sees the browser's session.
    """
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        response = HttpResponse(status=401)
    else:
        response = HttpResponse(status=200)
        channels = channels_for(user)
        if channels:
            # check_channel refuses commas, so the list splits back as it was.
            response["X-Sse-Channels"] = ",".join(channels)
    # Per session and per moment: no cache may answer for Django.
    response["Cache-Control"] = "private, no-store"
    return response
