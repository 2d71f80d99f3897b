"""The dashboard pages; their live data comes only from the public WebSocket and HTTP APIs."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from devices.selectors import devices_visible_to


@login_required
def fleet(request: HttpRequest) -> HttpResponse:
    """The fleet view: every visible device, live."""
    return render(request, "pages/fleet.html")


@login_required
def device(request: HttpRequest, device_id: str) -> HttpResponse:
    """One device: live charts, state and the command panel; 404 unless the user may see it."""
    found = devices_visible_to(request.user).filter(pk=device_id).only("id", "name").first()
    if found is None:
        raise Http404("no such device")
    return render(request, "pages/device.html", {"device": found})
