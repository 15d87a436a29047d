from django.shortcuts import render
from django.urls import path


def page(request):
    return render(request, "page.html", {"channel": request.GET.get("channel", "rendered")})


urlpatterns = [path("page/", page)]
