"""The dashboard pages; their live data comes only from the public WebSocket and HTTP APIs."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from devices.selectors import device_metrics, devices_visible_to
from notify.selectors import channels_all, target_shown


@login_required
def fleet(request: HttpRequest) -> HttpResponse:
    """The fleet view: every visible device, live."""
    return render(request, "pages/fleet.html")


@login_required
def device(request: HttpRequest, device_id: str) -> HttpResponse:
    """One device: live charts (labelled, with units), state and the command panel; 404 unless the user may see it."""
    found = (devices_visible_to(request.user).filter(pk=device_id)
             .only("id", "name", "profile", "gateway", "child_name", "last_rejection", "latest").first())
    if found is None:
        raise Http404("no such device")
    return render(request, "pages/device.html", {"device": found, "metrics": device_metrics(found)})


@login_required
def alarms(request: HttpRequest) -> HttpResponse:
    """Open alarms across the visible fleet, sortable by severity and age, and the rules (a form for staff)."""
    return render(request, "pages/alarms.html")


@login_required
def notifications(request: HttpRequest) -> HttpResponse:
    """Notification channels with a test-send button each (staff): the answer of POST …/test, shown."""
    if not request.user.is_staff:
        raise PermissionDenied("only staff may manage notifications")
    channels = [{"id": c.pk, "name": c.name, "kind": c.kind, "target": target_shown(c), "enabled": c.enabled}
                for c in channels_all()]
    return render(request, "pages/notifications.html", {"channels": channels})
