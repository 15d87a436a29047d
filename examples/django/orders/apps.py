from django.apps import AppConfig


class OrdersConfig(AppConfig):
    name = "orders"

    def ready(self):
        from orders import sse  # noqa: F401 (connects the sign-out announcement)
