"""{% load sse_relay %} then {% sse_url "orders" %} or {% sse_url "user.42" token=True %}."""
from django import template

from django_sse_relay import sse_url as _sse_url

register = template.Library()


@register.simple_tag
def sse_url(*channels, token=False, ttl=3600):
    return _sse_url(*channels, token=token, ttl=ttl)
