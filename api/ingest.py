"""HTTP ingest (SPEC §8): telemetry with the device's own credentials, the same rules and service as MQTT."""


from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.http import HttpRequest
from django.utils import timezone
from ninja import Router, Schema
from ninja.errors import AuthenticationError

from api import metrics
from api.rest import errors
from core.credentials import device_credentials
from core.errors import PayloadInvalid, RateLimited
from core.logs import FailureLog
from core.payloads import parse_samples
from core.push import PushBatch, push_send
from core.ratelimit import BucketMap
from devices.selectors import device_secret_ok
from devices.services.telemetry import Inbound, telemetry_ingest

logger = logging.getLogger("iotgw.api")

router = Router(tags=["ingest"])


class Ingested(Schema):
    accepted: int


class DeviceCredentialsInvalid(AuthenticationError):
    """Missing or wrong device credentials (the same answer for an unknown or disabled device)."""

    challenge = 'Basic realm="iotgw devices"'

    def __init__(self) -> None:
        super().__init__(401, "device credentials required: HTTP Basic id:secret, or Bearer <secret>")


_ingest_buckets: BucketMap | None = None


def _device_secret(request: HttpRequest, device_id: str) -> str | None:
    """The secret from `Authorization: Basic base64(id:secret)` or `Bearer <secret>`."""
    credentials = device_credentials(request.headers.get("Authorization"), device_id=device_id)
    return credentials[1] if credentials is not None else None


def _rate_ok(device_id: str) -> bool:
    global _ingest_buckets
    if _ingest_buckets is None:
        _ingest_buckets = BucketMap(rate=settings.IOTGW_HTTP_INGEST_RATE, burst=settings.IOTGW_HTTP_INGEST_BURST)
    return _ingest_buckets.take(device_id)


_SAMPLE_SCHEMA = {
    "type": "object",
    "description": "optional `ts` (ISO-8601 with offset, or epoch seconds below 10^10, else epoch ms; "
                   "from 1970 to IOTGW_MAX_CLOCK_SKEW ahead) and one or more metrics",
    "additionalProperties": {"type": ["number", "boolean", "string", "null"]},
}
_INGEST_OPENAPI = {
    "security": [{"DeviceBasic": []}, {"DeviceSecret": []}],
    "requestBody": {"required": True, "content": {"application/json": {"schema": {
        "oneOf": [_SAMPLE_SCHEMA, {"type": "array", "minItems": 1, "items": _SAMPLE_SCHEMA}]}}}},
    "description": "Device credentials, not an API token: `Authorization: Basic base64(id:secret)` or "
                   "`Authorization: Bearer <secret>`. Same payload and rules as MQTT telemetry (SPEC §4).",
}


@router.post("/ingest/{device_id}/telemetry", auth=None, openapi_extra=_INGEST_OPENAPI,
             response={200: Ingested, **errors(400, 401, 413, 429)},
             summary="Telemetry over HTTP, with the device's own credentials (Basic id:secret, or Bearer secret)")
async def ingest_telemetry(request: HttpRequest, device_id: str):
    # The answer goes out right after the commit; the live push follows it, bounded in time (a frozen
    # Redis used to hold the answer for the push's 9-30 s, and devices that retried stored samples twice).
    try:
        answer, push = await sync_to_async(_ingest)(request, device_id)
    except PayloadInvalid as exc:
        metrics.http_rejected.labels(reason=exc.reason).inc()
        raise
    _push_later(push)
    return answer


def _ingest(request: HttpRequest, device_id: str) -> tuple[dict[str, int], PushBatch]:
    secret = _device_secret(request, device_id)
    if secret is None or not device_secret_ok(device_id, secret):
        metrics.http_rejected.labels(reason="unauthorized").inc()
        raise DeviceCredentialsInvalid()
    if not _rate_ok(device_id):
        metrics.http_rejected.labels(reason="rate_limited").inc()
        raise RateLimited(f"device {device_id} sends faster than {settings.IOTGW_HTTP_INGEST_RATE:g} requests/s",
                          retry_after=_ingest_buckets.wait(device_id))
    max_bytes = settings.IOTGW_MAX_PAYLOAD
    try:
        declared = int(request.headers.get("Content-Length") or 0)
    except ValueError:
        declared = 0
    if declared > max_bytes:  # refused before the body is read
        raise PayloadInvalid("too_large", f"payload of {declared} bytes is over the {max_bytes}-byte limit")
    received_at = timezone.now()
    samples = parse_samples(request.body, received_at=received_at, max_bytes=max_bytes,
                            max_skew=timedelta(seconds=settings.IOTGW_MAX_CLOCK_SKEW))
    outcome = telemetry_ingest(items=[Inbound(device_id=device_id, samples=samples)], received_at=received_at,
                               transports={device_id: "http"})
    if outcome.rejected:  # disabled or deleted since its credentials were checked: the same 401 as then
        metrics.http_rejected.labels(reason=outcome.rejected[0]).inc()
        raise DeviceCredentialsInvalid()
    metrics.http_samples_ingested.inc(len(samples))
    push = PushBatch(buckets=settings.IOTGW_PUSH_BUCKETS)
    for sample in outcome.samples.get(0, samples):
        push.telemetry(device_id, sample)
    for changed_id, online, ts in outcome.status_changes:
        push.status(changed_id, online, ts)
    return {"accepted": len(samples)}, push


# Pushes still under way in this process; past the cap a push is dropped (they are best-effort, and this
# bounds what a frozen Redis can hold here to MAX_PENDING_PUSHES x PUSH_TIMEOUT).
MAX_PENDING_PUSHES = 200
_pending_pushes: set[asyncio.Task] = set()
_push_failures = FailureLog("HTTP ingest: push to dashboards failed", log=logger)


def _push_later(push: PushBatch) -> None:
    """Live pushes to dashboards, as the bridge does, on this event loop after the answer; best-effort."""
    if not push:
        return
    if len(_pending_pushes) >= MAX_PENDING_PUSHES:
        _push_failures.failed(RuntimeError(f"{MAX_PENDING_PUSHES} pushes already waiting; this one is dropped"))
        return
    task = asyncio.get_running_loop().create_task(_push(push))
    _pending_pushes.add(task)
    task.add_done_callback(_pending_pushes.discard)


async def _push(push: PushBatch) -> None:
    try:
        await push_send(get_channel_layer(), push)
    except Exception as exc:  # storage already happened
        _push_failures.failed(exc)
    else:
        _push_failures.recovered()
