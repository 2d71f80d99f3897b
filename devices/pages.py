"""The dashboard pages; they use only the public WebSocket and HTTP APIs."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


@login_required
def fleet(request: HttpRequest) -> HttpResponse:
    """The fleet view: every visible device, live."""
    return render(request, "devices/fleet.html")
