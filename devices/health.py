"""Liveness, readiness and metrics endpoints."""

from __future__ import annotations

import asyncio
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


_schema_current = False


def _schema() -> tuple[bool, str | None]:
    """Whether every migration this code has is applied, and if not, why (checked until it is, then remembered)."""
    global _schema_current
    if _schema_current:
        return True, None
    from django.db.migrations.executor import MigrationExecutor

    try:
        executor = MigrationExecutor(connection)
        plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    except Exception as exc:
        return False, f"cannot read the migrations table: {str(exc).strip()[:200]}"
    if plan:
        names = [f"{m.app_label}.{m.name}" for m, _backwards in plan]
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        return False, f"{len(names)} migration(s) not applied ({shown}): run python manage.py migrate"
    _schema_current = True
    return True, None


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
    """Readiness: the database and its schema, the channel layer and a live bridge heartbeat."""
    database = await sync_to_async(_database_ok)()
    schema, why = await sync_to_async(_schema)() if database else (False, "the database is unreachable")
    checks = {
        "database": database,
        "schema": schema,
        "channel_layer": await _layer_ok(),
        "bridge": await sync_to_async(_bridge_ok)() if schema else False,
    }
    ok = all(checks.values())
    body: dict = {"status": "ok" if ok else "unavailable", "checks": checks}
    if why:
        body["reasons"] = {"schema": why}
    return JsonResponse(body, status=200 if ok else 503)


def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus exposition."""
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)
