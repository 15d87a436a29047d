"""Who reads which channel, and the events that are not a model's.

Every page reads the shared "orders" channel and its user's own inbox; Caddy
learns that from django_sse_relay.views.authorize, which calls
channels_for (settings.SSE_RELAY_CHANNELS) on each connect.
"""
from django.contrib.auth.signals import user_logged_out
from django.dispatch import receiver

from django_sse_relay import notify


def inbox(user):
    """A user's own channel: lowercase, as per-user channels on Postgres should be."""
    return "inbox.%d" % user.pk


def channels_for(user):
    return ["orders", inbox(user)]


@receiver(user_logged_out)
def signed_out(sender, request, user, **kwargs):
    """A stream stays open after its session ends: forward_auth asked only when
    it connected. So tell the user's pages; each asks again whether its
    session still may read (a HEAD of the stream), and one whose session
    ended stops (see page.html)."""
    if user is not None:
        # Django sends this signal before it ends the session: end it first,
        # or a page could ask while the session still opens streams.
        request.session.flush()
        notify(inbox(user), "signed out", event="signed-out")
