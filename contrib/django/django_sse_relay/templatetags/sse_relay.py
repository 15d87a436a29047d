"""{% load sse_relay %} then {% sse_url "orders" %} or {% sse_url "user.42" token=True %}.

With SSE_RELAY_HISTORY the URL carries the log's position as it renders
(?last_event_id=), read on the view's connection (using="default").
last_event_id=cursor passes one the view read first; last_event_id=False, none.
"""
from django import template
from django.utils.safestring import mark_safe

from django_sse_relay import sse_url as _sse_url

register = template.Library()


@register.simple_tag
def sse_url(*channels, token=False, ttl=3600, last_event_id=None, using="default"):
    # Safe as it is: channels and the cursor are percent-encoded and the
    # token is base64url, so the URL has no quote or angle bracket. Escaping
    # would turn & into &amp;, which breaks the URL inside <script>.
    return mark_safe(_sse_url(*channels, token=token, ttl=ttl, last_event_id=last_event_id, using=using))
