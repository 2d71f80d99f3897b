"""Liveness, readiness and metrics endpoints."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.metrics import bridge_timing  # importing it registers the bridge collector
from devices.inprocess import process_ingests
from devices.selectors import BridgeStatus, bridges_known


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


# A CoAP process holds no broker session (nothing queues for it while it is away), so one silent this long is
# forgotten by readiness; until then `checks.coap` says whether one is listening.
COAP_FORGOTTEN_AFTER = 300.0


def _transport(bridge: BridgeStatus) -> str:
    """Which edge wrote a heartbeat: CoAP processes mark theirs (coap/server.py); bridges (MQTT) do not."""
    return str(bridge.counters.get("transport", "mqtt"))


def _bridges() -> tuple[bool, list[str], bool | None]:
    """Whether a live bridge holds a broker connection, the silent bridges whose sessions nobody drains, and
    whether a CoAP process listens (None: none has been seen lately)."""
    try:
        known = bridges_known(**bridge_timing())
    except Exception:
        return False, [], None
    bridges = [b for b in known if _transport(b) == "mqtt"]
    now = timezone.now()
    coap = [b for b in known if _transport(b) == "coap"
            and (now - b.beat_at).total_seconds() < COAP_FORGOTTEN_AFTER]
    return (any(b.live and b.connected for b in bridges), [b.client_id for b in bridges if not b.live],
            any(b.live and b.connected for b in coap) if coap else None)


async def _layer_ok() -> bool:
    layer = get_channel_layer()
    try:
        channel = await layer.new_channel("readyz.")
        await asyncio.wait_for(layer.send(channel, {"type": "readyz"}), 2)
        return (await asyncio.wait_for(layer.receive(channel), 2)).get("type") == "readyz"
    except Exception:
        return False


def _web_ingest() -> bool | None:
    """This process's device pipeline drains and is not full (None: no WebSocket or HTTP device used it yet)."""
    ingests = process_ingests()
    return all(i.running and not i.full for i in ingests) if ingests else None


async def readyz(request: HttpRequest) -> JsonResponse:
    """Readiness: the database and its schema, the channel layer, a live bridge, no silent bridge, and a CoAP
    listener once one has been seen."""
    database = await sync_to_async(_database_ok)()
    schema, why = await sync_to_async(_schema)() if database else (False, "the database is unreachable")
    bridge_ok, silent, coap = await sync_to_async(_bridges)() if schema else (False, [], None)
    checks = {
        "database": database,
        "schema": schema,
        "channel_layer": await _layer_ok(),
        "bridge": bridge_ok,
        "no_silent_bridge": not silent,
    }
    if coap is not None:  # a CoAP listener, once one has been seen (docs/transports/coap.md)
        checks["coap"] = coap
    web = _web_ingest()
    if web is not None:  # WebSocket and HTTP devices' pipeline in this process, once one has used it
        checks["web_ingest"] = web
    ok = all(checks.values())
    body: dict = {"status": "ok" if ok else "unavailable", "checks": checks}
    if why:
        body["reasons"] = {"schema": why}
    if silent:
        body["silent_bridges"] = silent
        body["hint"] = ("the broker keeps queueing a silent bridge's share of the device topics: restart it, "
                        "or retire it with `manage.py dropsession <client id>`, which stores what it holds")
    return JsonResponse(body, status=200 if ok else 503)


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
