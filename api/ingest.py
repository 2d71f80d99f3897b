"""HTTP devices (SPEC §8, §12): telemetry, status and command responses with the device's own credentials, the
same rules as MQTT, batched in the web process (api/http_devices.py); commands by long poll, or in the answer to a
telemetry POST that waits for one (`wait_for_command`, Hono's `hono-ttd`)."""


from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpRequest
from django.utils import timezone
from ninja import Field, Query, Router, Schema, Status
from ninja.errors import AuthenticationError

from api import metrics
from api.errors import errors
from api.http_devices import HttpDevices, http_devices
from core.credentials import device_credentials
from core.errors import CommandUnknown, PayloadInvalid, RateLimited
from core.payloads import decode_json, parse_samples
from core.ratelimit import BucketMap
from core.times import format_ts
from core.transport import Outbound, Rejected, Said
from core.wire import command_response_of
from devices.selectors import command_status_of, device_secret_ok

logger = logging.getLogger("iotgw.api")

router = Router(tags=["ingest"])


# The longest a request waits for a command (a long poll, or `wait_for_command`), in seconds.
MAX_COMMAND_WAIT = 30.0
# The shortest: a command already queued is claimed by this process's dispatcher within it.
MIN_COMMAND_WAIT = 1.0


class DeviceCommand(Schema):
    """A command as the device receives it (SPEC §6)."""

    id: str
    name: str
    params: dict[str, Any]
    expires_at: str


class Ingested(Schema):
    accepted: int
    command: DeviceCommand | None = Field(None, description="with `wait_for_command`: a command for the device, "
                                                            "now `sent`; answer it at its response URL")


class ResponseTaken(Schema):
    id: str
    status: str = Field(..., description="the command's status after the response: succeeded, failed, or the "
                                         "status that made it ignore the response (timed_out, cancelled, …)")


class WaitForCommand(Schema):
    wait_for_command: float = Field(0, ge=0, description=f"seconds to wait for a command after the samples are "
                                                         f"stored (at most {MAX_COMMAND_WAIT:g})")


class Wait(Schema):
    wait: float = Field(0, ge=0, description=f"seconds to wait for a command (at most {MAX_COMMAND_WAIT:g}; "
                                             f"at least {MIN_COMMAND_WAIT:g}: a queued command is taken within it)")


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


_DEVICE_AUTH = {
    "security": [{"DeviceBasic": []}, {"DeviceSecret": []}],
    "description": "Device credentials, not an API token: `Authorization: Basic base64(id:secret)` or "
                   "`Authorization: Bearer <secret>`.",
}


@router.post("/ingest/{device_id}/telemetry", auth=None, openapi_extra=_INGEST_OPENAPI,
             response={200: Ingested, **errors(400, 401, 413, 429)},
             summary="Telemetry over HTTP, with the device's own credentials (Basic id:secret, or Bearer secret)")
async def ingest_telemetry(request: HttpRequest, device_id: str, query: Query[WaitForCommand]):
    """Store the samples (in this process's next batch) and answer after the commit; then, if asked, wait for a
    command (`wait_for_command`, or Hono's `hono-ttd` header) and hand it over in the answer."""
    transport = await _authorised(request, device_id)
    received_at = timezone.now()
    samples = _refused_counted(lambda: parse_samples(
        _body(request), received_at=received_at, max_bytes=settings.IOTGW_MAX_PAYLOAD,
        max_skew=timedelta(seconds=settings.IOTGW_MAX_CLOCK_SKEW)))
    _stored(await transport.store(device_id, [Said(device_id, samples=samples)]))
    metrics.http_samples_ingested.inc(len(samples))
    transport.ingest.count_stored(transport.name, len(samples))
    answer: dict[str, Any] = {"accepted": len(samples)}
    wait = _wait(query.wait_for_command or _hono_ttd(request))
    if wait:
        command = await transport.next_command(device_id, wait)
        if command is not None:
            answer["command"] = _command(command)
    return answer


@router.get("/ingest/{device_id}/commands/next", auth=None, openapi_extra=_DEVICE_AUTH,
            response={200: DeviceCommand, 204: None, **errors(400, 401, 429)},
            summary="Long poll: the device's next command, or 204 when none came within `wait` seconds")
async def next_command(request: HttpRequest, device_id: str, query: Query[Wait]):
    """The poll is the device's presence (online over HTTP); a command is `sent` once it is in the answer."""
    transport = await _authorised(request, device_id)
    _stored(await transport.store(device_id, [Said(device_id, online=True)]))
    command = await transport.next_command(device_id, _wait(query.wait) or MIN_COMMAND_WAIT)
    if command is None:
        return Status(204, None)
    return _command(command)


@router.post("/ingest/{device_id}/commands/{command_id}/response", auth=None,
             openapi_extra={**_DEVICE_AUTH, "requestBody": {"required": True, "content": {"application/json": {
                 "schema": {"type": "object", "required": ["status"], "properties": {
                     "status": {"enum": ["ok", "error"]}, "result": {}, "error": {"type": "string"}}}}}}},
             response={200: ResponseTaken, **errors(400, 401, 404, 413, 429)},
             summary="The device's response to a command it was handed (SPEC §6)")
async def command_response(request: HttpRequest, device_id: str, command_id: str):
    """Applied in this process's next batch, like an MQTT response; answers with the command's status after it."""
    transport = await _authorised(request, device_id)
    try:
        command_uuid = uuid.UUID(command_id)
    except ValueError:
        raise CommandUnknown(f"no such command: {command_id[:80]}") from None
    doc = _refused_counted(lambda: decode_json(_body(request), max_bytes=settings.IOTGW_MAX_PAYLOAD))
    response = _refused_counted(lambda: command_response_of(
        {**doc, "id": str(command_uuid)} if isinstance(doc, dict) else doc))
    status = await sync_to_async(command_status_of)(device_id=device_id, command_id=command_uuid)
    if status is None:
        raise CommandUnknown(f"no such command: {command_id[:80]}")
    _stored(await transport.store(device_id, [Said(device_id, response=response)]))
    status = await sync_to_async(command_status_of)(device_id=device_id, command_id=command_uuid)
    return {"id": str(command_uuid), "status": status}


async def _authorised(request: HttpRequest, device_id: str) -> HttpDevices:
    """The device's credentials and its rate limit, checked; this process's HTTP device transport."""
    secret = _device_secret(request, device_id)
    if secret is None or not await sync_to_async(device_secret_ok)(device_id, secret):
        metrics.http_rejected.labels(reason="unauthorized").inc()
        raise DeviceCredentialsInvalid()
    if not _rate_ok(device_id):
        metrics.http_rejected.labels(reason="rate_limited").inc()
        raise RateLimited(f"device {device_id} sends faster than {settings.IOTGW_HTTP_INGEST_RATE:g} requests/s",
                          retry_after=_ingest_buckets.wait(device_id))
    return http_devices(max_payload=settings.IOTGW_MAX_PAYLOAD, max_clock_skew=settings.IOTGW_MAX_CLOCK_SKEW,
                        max_batch=settings.IOTGW_MAX_BATCH, push_buckets=settings.IOTGW_PUSH_BUCKETS,
                        push_interval=settings.IOTGW_PUSH_INTERVAL)


def _stored(refused: Rejected | None) -> None:
    """Storage refused it: a device disabled or deleted since its credentials were checked is told as then."""
    if refused is None:
        return
    metrics.http_rejected.labels(reason=refused.reason).inc()
    if refused.reason in ("unknown_device", "disabled_device"):
        raise DeviceCredentialsInvalid()
    raise PayloadInvalid(refused.reason, refused.message)


def _body(request: HttpRequest) -> bytes:
    """The body, refused before it is read when its declared length is over the limit."""
    max_bytes = settings.IOTGW_MAX_PAYLOAD
    try:
        declared = int(request.headers.get("Content-Length") or 0)
    except ValueError:
        declared = 0
    if declared > max_bytes:
        raise PayloadInvalid("too_large", f"payload of {declared} bytes is over the {max_bytes}-byte limit")
    return request.body


def _refused_counted(read):
    """Run a parser; a refusal is counted by its reason and answered (400, or 413 for `too_large`)."""
    try:
        return read()
    except PayloadInvalid as exc:
        metrics.http_rejected.labels(reason=exc.reason).inc()
        raise


def _hono_ttd(request: HttpRequest) -> float:
    """Hono's `hono-ttd` header (time till disconnect, seconds), as HTTP devices written for Hono send it."""
    try:
        return max(0.0, float(request.headers.get("hono-ttd") or 0))
    except ValueError:
        return 0.0


def _wait(seconds: float) -> float:
    """A wait capped at MAX_COMMAND_WAIT; 0 (no wait) stays 0."""
    if not seconds or seconds != seconds:
        return 0.0
    return max(MIN_COMMAND_WAIT, min(seconds, MAX_COMMAND_WAIT))


def _command(command: Outbound) -> dict[str, Any]:
    return {"id": str(command.command_id), "name": command.name, "params": command.params,
            "expires_at": format_ts(command.expires_at)}
