from django.core.exceptions import ImproperlyConfigured
from django.test import RequestFactory, SimpleTestCase
from django.test.utils import override_settings

from django_sse_relay.views import authorize


class User:
    """What authorize reads of request.user: django.contrib.auth's users and
    AnonymousUser have is_authenticated; the suite does not install the auth
    app, whose tables it would need."""

    def __init__(self, pk, authenticated=True):
        self.pk = pk
        self.is_authenticated = authenticated


def channels_for(user):
    """The SSE_RELAY_CHANNELS of these tests: the shared feed and the user's inbox."""
    return ["orders", "inbox.%d" % user.pk] if user.pk else []


def bad_channels(user):
    return ["orders", "a,b"]


@override_settings(SSE_RELAY_CHANNELS="tests.test_views.channels_for")
class AuthorizeTests(SimpleTestCase):
    def get(self, user, method="get"):
        request = getattr(RequestFactory(), method)("/sse/authorize")
        if user is not None:
            request.user = user
        return authorize(request)

    def test_signed_in_gets_its_channels(self):
        response = self.get(User(42))
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response["X-Sse-Channels"], "orders,inbox.42")
        self.assertEqual(response["Cache-Control"], "private, no-store")

    def test_signed_out_gets_401(self):
        for user in (User(42, authenticated=False), None):
            response = self.get(user)
            self.assertEqual(response.status_code, 401)
            self.assertFalse(response.has_header("X-Sse-Channels"))

    def test_no_channels_no_header(self):
        """The relay answers a stream without channels with 204, which stops EventSource."""
        response = self.get(User(0))
        self.assertEqual(response.status_code, 200)
        self.assertFalse(response.has_header("X-Sse-Channels"))

    def test_head_and_only_safe_methods(self):
        self.assertEqual(self.get(User(42), "head").status_code, 200)
        self.assertEqual(self.get(User(42), "post").status_code, 405)

    def test_setting_as_callable(self):
        with override_settings(SSE_RELAY_CHANNELS=lambda user: ["user.%d" % user.pk]):
            self.assertEqual(self.get(User(7))["X-Sse-Channels"], "user.7")

    def test_a_channel_the_relay_refuses_is_an_error(self):
        """A comma would split into two channels, one the user was never given."""
        with override_settings(SSE_RELAY_CHANNELS="tests.test_views.bad_channels"):
            with self.assertRaises(ValueError):
                self.get(User(7))

    def test_without_the_setting(self):
        with override_settings(SSE_RELAY_CHANNELS=None):
            with self.assertRaises(ImproperlyConfigured):
                self.get(User(7))
