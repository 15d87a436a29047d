from django.contrib.auth import views as auth
from django.urls import path

from django_sse_relay.views import authorize
from orders import views

urlpatterns = [
    path("", views.page, name="page"),
    path("orders/", views.create_order, name="create_order"),
    path("messages/", views.send_message, name="send_message"),
    path("login/", auth.LoginView.as_view(), name="login"),
    path("logout/", auth.LogoutView.as_view(), name="logout"),
    # Caddy's forward_auth asks this before every stream (see the Caddyfile).
    path("sse/authorize", authorize),
]
