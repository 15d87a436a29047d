from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.views.decorators.http import require_POST

from django_sse_relay import notify
from orders.models import Message, Order
from orders.sse import inbox


class RolledBack(Exception):
    """Raised to roll back the order the form asked to roll back."""


@login_required
def page(request):
    # Querysets are lazy: the template reads them after {% sse_url %} has
    # read the log's position, so an event committed in between is behind
    # the page's cursor and still reaches it.
    return render(request, "orders/page.html", {
        "orders": Order.objects.select_related("created_by").order_by("-pk")[:50],
        "messages": Message.objects.filter(recipient=request.user).select_related("sender").order_by("-pk")[:50],
        "inbox": inbox(request.user),
        "others": get_user_model().objects.exclude(pk=request.user.pk).order_by("username"),
    })


def answer(request, notice):
    """htmx's forms get a notice; a form posted without htmx goes back to the page."""
    if request.headers.get("HX-Request"):
        return HttpResponse(notice)
    return redirect("page")


@login_required
@require_POST
def create_order(request):
    description = request.POST.get("description", "").strip()[:200]
    if not description:
        return answer(request, "An order needs a description.")
    try:
        with transaction.atomic():
            order = Order.objects.create(description=description, created_by=request.user)
            # In the transaction: the event is a row of the relay's log,
            # committed with the order or rolled back with it.
            notify("orders", render_to_string("orders/_order.html", {"order": order}), event="order.created")
            if "rollback" in request.POST:
                raise RolledBack
    except RolledBack:
        return answer(request, "Rolled back: neither the order nor its event was kept.")
    return answer(request, "Order %d saved." % order.pk)


@login_required
@require_POST
def send_message(request):
    recipient = get_object_or_404(get_user_model(), username=request.POST.get("recipient", ""))
    text = request.POST.get("text", "").strip()[:500]
    if not text:
        return answer(request, "A message needs some text.")
    with transaction.atomic():
        message = Message.objects.create(sender=request.user, recipient=recipient, text=text)
        notify(inbox(recipient), render_to_string("orders/_message.html", {"message": message}),
               event="message.received")
    return answer(request, "Sent to %s." % recipient.username)
