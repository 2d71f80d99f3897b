"""Liveness, readiness and metrics endpoints."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
from datetime import timedelta

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from devices import metrics  # noqa: F401  (registers the bridge collector)
from devices.models import BridgeHeartbeat


def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness: the process answers."""
    return JsonResponse({"status": "ok"})


def _database_ok() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except Exception:
        return False


def _bridge_ok() -> bool:
    fresh = timezone.now() - timedelta(seconds=max(3 * settings.IOTGW_HEARTBEAT_SECONDS, 10))
    try:
        return BridgeHeartbeat.objects.filter(beat_at__gte=fresh, connected=True).exists()
    except Exception:
        return False


async def _layer_ok() -> bool:
    layer = get_channel_layer()
    try:
        channel = await layer.new_channel("readyz.")
        await asyncio.wait_for(layer.send(channel, {"type": "readyz"}), 2)
        return (await asyncio.wait_for(layer.receive(channel), 2)).get("type") == "readyz"
    except Exception:
        return False


async def readyz(request: HttpRequest) -> JsonResponse:
    """Readiness: the database, the channel layer and a live bridge heartbeat."""
    checks = {
        "database": await sync_to_async(_database_ok)(),
        "channel_layer": await _layer_ok(),
        "bridge": await sync_to_async(_bridge_ok)(),
    }
    ok = all(checks.values())
    return JsonResponse({"status": "ok" if ok else "unavailable", "checks": checks}, status=200 if ok else 503)


def _scrape_allowed(request: HttpRequest) -> bool:
    """With IOTGW_METRICS_TOKEN set: `Bearer <token>`, or HTTP Basic with the token as the password."""
    expected = settings.IOTGW_METRICS_TOKEN
    if not expected:
        return True
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    value = value.strip()
    if scheme.lower() == "basic":
        try:
            value = base64.b64decode(value, validate=True).decode().partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            return False
    elif scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(value.encode(), expected.encode())


def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus exposition; behind IOTGW_METRICS_TOKEN when it is set."""
    if not _scrape_allowed(request):
        response = HttpResponse("metrics need the scrape token\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="iotgw metrics", Basic realm="iotgw metrics"'
        return response
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)
