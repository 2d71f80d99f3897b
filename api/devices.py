"""Devices on the JSON API (SPEC §8): list, register, read, a new secret, history."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from django.contrib.auth import get_user_model
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils import timezone
from ninja import Field, Query, Router, Schema, Status

from api.errors import errors
from core.errors import DeviceUnknown, NotAuthorized, PayloadInvalid
from core.ids import DEVICE_ID_PATTERN, DEVICE_ID_RE, METRIC_RE
from core.payloads import storable_text
from core.times import format_ts, parse_ts
from devices.aggregates import bucket_for, telemetry_aggregate
from devices.selectors import device_metrics, device_state, devices_page, devices_visible_to, telemetry_history
from devices.services.devices import device_register, device_rotate_secret

logger = logging.getLogger("iotgw.api")

router = Router(tags=["devices"])

MAX_HISTORY = 10_000
MAX_DEVICES_PAGE = 10_000


class DeviceOut(Schema):
    id: str
    name: str
    enabled: bool
    offline_after: int | None = Field(None, description="seconds of silence before it is marked offline; "
                                                        "null: the gateway's default; 0: never")
    online: bool
    last_seen: str | None
    transport: str | None = Field(None, description="the transport it was last seen on: mqtt, http, ws or coap; "
                                                     "null until it is first seen")
    latest: dict[str, Any]
    latest_ts: dict[str, str]
    profile: str = Field("iotgw", description="its device profile (docs/profiles.md)")
    gateway: str | None = Field(None, description="the gateway that speaks for it, for a child")
    last_rejection: dict[str, str] | None = Field(
        None, description="the last message refused for it: reason, message, at (written every heartbeat)")


class MetricOut(Schema):
    label: str = Field("", description="what a chart calls it; empty: its name")
    unit: str = Field("", description="its unit (`°C`, `W`); empty: none known")
    device_class: str = Field("", description="Home Assistant's device class, when discovery said it")
    source: str = Field(..., description="profile (declared by the device's profile), discovery (Home Assistant "
                                         "discovery) or manual (set in the admin)")


class DeviceDetailOut(DeviceOut):
    metrics: dict[str, MetricOut] = Field(default_factory=dict, description="label and unit of its metrics, by name "
                                          "(docs/profiles/home-assistant-discovery.md)")


class DeviceIn(Schema):
    id: str = Field(..., description="^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$; also the device's MQTT username")
    name: str = ""
    owner: str | None = Field(None, description="username of the owner; the caller when omitted")
    groups: list[str] = []
    offline_after: int | None = Field(None, ge=0, le=10 * 365 * 86400,
                                      description="seconds of silence before the device is marked offline; "
                                                  "null: the gateway's default (IOTGW_OFFLINE_AFTER); 0: never")


class DeviceCreated(DeviceOut):
    mqtt_username: str
    secret: str = Field(..., description="the device's MQTT password; shown in this answer only")


class SecretOut(Schema):
    id: str
    mqtt_username: str
    secret: str = Field(..., description="the device's new MQTT password; shown in this answer only")


class Sample(Schema):
    ts: str
    data: dict[str, Any]


class TelemetryPage(Schema):
    device: str
    items: list[Sample]
    next: str | None = Field(None, description="URL of the next page (same filters, after the last ts), or null")


class HistoryQuery(Schema):
    since: str | None = Field(None, description="inclusive; ISO-8601 with offset, or epoch s (below 10^10) or ms")
    until: str | None = Field(None, description="exclusive; ISO-8601 with offset, or epoch s (below 10^10) or ms")
    after: str | None = Field(None, description="exclusive lower bound, for paging (see `next`)")
    metric: str | None = Field(None, description="only samples that carry this metric, and only its value")
    limit: int = Field(1000, ge=1, le=MAX_HISTORY)


MAX_BUCKETS = 10_000


class AggregateQuery(Schema):
    metric: str = Field(..., description="the numeric metric; samples where it is not a number are left out")
    since: str | None = Field(None, description="inclusive, rounded down to a bucket; default: 24 h before `until`. "
                                                "ISO-8601 with offset, or epoch s (below 10^10) or ms")
    until: str | None = Field(None, description="exclusive, rounded up to a bucket; default: now")
    bucket: int | None = Field(None, ge=1, le=366 * 86400,
                               description="bucket size in seconds, counted from the epoch (days: UTC midnight)")
    points: int | None = Field(None, ge=1, le=MAX_BUCKETS,
                               description="without `bucket`: the smallest round bucket giving at most this many "
                                           "buckets (default 600)")


class AggregateBucket(Schema):
    ts: str = Field(..., description="the bucket's start")
    min: float
    max: float
    avg: float
    count: int
    first: float
    first_ts: str
    last: float
    last_ts: str


class AggregatePage(Schema):
    device: str
    metric: str
    since: str = Field(..., description="the range actually covered, widened to whole buckets")
    until: str
    bucket: int = Field(..., description="seconds")
    tier: str = Field(..., description="what was read: `raw`, `minute` or `hour` (the coarsest that fits the bucket)")
    items: list[AggregateBucket] = Field(..., description="the buckets holding samples, oldest first")


class DeviceListQuery(Schema):
    limit: int = Field(1000, ge=1, le=MAX_DEVICES_PAGE, description="devices per page")
    # A device id: the Link header only ever names one, and anything else (a NUL) could reach the database.
    after: str | None = Field(None, max_length=64, pattern=DEVICE_ID_PATTERN,
                              description="exclusive: the last id of the previous page (see the `Link` header)")


def _out(device) -> dict[str, Any]:
    return {**device_state(device), "enabled": device.enabled, "offline_after": device.offline_after,
            "profile": device.profile_id or "iotgw", "gateway": device.gateway_id,
            "last_rejection": device.last_rejection}


def _visible(request: HttpRequest, device_id: str):
    """The device if the caller may see it; a hidden device is as absent as a missing one."""
    if not DEVICE_ID_RE.fullmatch(device_id):  # no such device can exist (and NUL would reach PostgreSQL)
        raise DeviceUnknown(f"no device {device_id[:80]!r}")
    device = devices_visible_to(request.auth).filter(pk=device_id).first()
    if device is None:
        raise DeviceUnknown(f"no device {device_id!r}")
    return device


_LINK_HEADER = {"Link": {"description": 'the next page, when there is one: `<URL>; rel="next"` (RFC 8288)',
                        "schema": {"type": "string"}}}


@router.get("/devices", response={200: list[DeviceOut], **errors(400, 401)},
            openapi_extra={"responses": {200: {"headers": _LINK_HEADER}}},
            summary="Devices the caller may see, ordered by id, in pages")
def device_list(request: HttpRequest, response: HttpResponse, q: Query[DeviceListQuery]):
    """The body stays a plain list (as before paging); the next page's URL is in the `Link` header."""
    devices = devices_page(user=request.auth, after=q.after, limit=q.limit)
    if len(devices) > q.limit:
        devices = devices[: q.limit]
        query = urlencode({"limit": q.limit, "after": devices[-1].id})
        response["Link"] = f'<{request.path}?{query}>; rel="next"'
    return [_out(d) for d in devices]


@router.post("/devices", response={201: DeviceCreated, **errors(400, 401, 403, 409, 413)},
             openapi_extra={"responses": {201: {"headers": {"Location": {
                 "description": "the new device's URL", "schema": {"type": "string"}}}}}},
             summary="Register a device (staff); the secret is shown once")
def device_create(request: HttpRequest, response: HttpResponse, body: DeviceIn):
    if not request.auth.is_staff:
        raise NotAuthorized("only staff may register devices")
    owner = request.auth
    if body.owner is not None:
        owner = get_user_model().objects.filter(username=body.owner).first() if storable_text(body.owner) else None
        if owner is None:
            raise PayloadInvalid("bad_request", f"no user named {body.owner!r}")
    device, secret = device_register(device_id=body.id, name=body.name, owner=owner, groups=body.groups,
                                     offline_after=body.offline_after)
    response["Location"] = reverse("api:device_detail", kwargs={"device_id": device.id})
    return Status(201, {**_out(device), "mqtt_username": device.id, "secret": secret})


@router.post("/devices/{device_id}/secret", response={200: SecretOut, **errors(401, 403, 404)},
             summary="Issue a new secret (staff); shown once, the old one stops working at once")
def device_secret_rotate(request: HttpRequest, device_id: str):
    _visible(request, device_id)
    if not request.auth.is_staff:
        raise NotAuthorized("only staff may issue device secrets")
    secret = device_rotate_secret(device_id=device_id)
    return {"id": device_id, "mqtt_username": device_id, "secret": secret}


@router.get("/devices/{device_id}", response={200: DeviceDetailOut, **errors(401, 404)}, url_name="device_detail",
            summary="One device, with its metrics' labels and units")
def device_detail(request: HttpRequest, device_id: str):
    device = _visible(request, device_id)
    return {**_out(device), "metrics": device_metrics(device)}


def _time(name: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        # isascii: "²" is a digit to isdigit() but not to int().
        return parse_ts(int(value) if value.isascii() and value.isdigit() else value)
    except (PayloadInvalid, ValueError, OverflowError):  # OverflowError: near years 1 and 9999, in UTC
        raise PayloadInvalid("bad_request", f"{name} must be ISO-8601 with an offset, or epoch milliseconds") from None


@router.get("/devices/{device_id}/telemetry", response={200: TelemetryPage, **errors(400, 401, 404)},
            summary="History, ordered by ts, in pages")
def device_telemetry(request: HttpRequest, device_id: str, q: Query[HistoryQuery]):
    _visible(request, device_id)
    if q.metric is not None and not METRIC_RE.fullmatch(q.metric):
        raise PayloadInvalid("bad_request", "metric is not a valid metric name")
    rows = list(telemetry_history(
        device_id=device_id, since=_time("since", q.since), until=_time("until", q.until),
        after=_time("after", q.after), metric=q.metric, limit=q.limit,
    ))
    items = [
        {"ts": format_ts(r.ts), "data": {q.metric: r.data[q.metric]} if q.metric else r.data} for r in rows
    ]
    next_url = None
    if len(rows) == q.limit:
        params = {k: v for k, v in q.dict().items() if v is not None and k != "after"}
        next_url = f"{request.path}?{urlencode({**params, 'after': items[-1]['ts']})}"
    return {"device": device_id, "items": items, "next": next_url}


@router.get("/devices/{device_id}/telemetry/aggregate", response={200: AggregatePage, **errors(400, 401, 404)},
            summary="One numeric metric in buckets: min, max, avg, count, first, last (docs/history.md)")
def device_telemetry_aggregate(request: HttpRequest, device_id: str, q: Query[AggregateQuery]):
    """Reads per-hour or per-minute rollups when the bucket is a multiple of them, raw samples otherwise."""
    _visible(request, device_id)
    if not METRIC_RE.fullmatch(q.metric):
        raise PayloadInvalid("bad_request", "metric is not a valid metric name")
    until = _time("until", q.until) or timezone.now()
    since = _time("since", q.since) or until - timedelta(days=1)
    if since >= until:
        raise PayloadInvalid("bad_request", "since must be before until")
    bucket = q.bucket or bucket_for(until - since, q.points or 600)
    if (until - since).total_seconds() / bucket > MAX_BUCKETS:
        raise PayloadInvalid("bad_request", f"more than {MAX_BUCKETS} buckets: widen the bucket or narrow the range")
    try:
        result = telemetry_aggregate(device_id=device_id, metric=q.metric, since=since, until=until, bucket=bucket)
    except OverflowError:  # widened to whole buckets past the year 9999
        raise PayloadInvalid("bad_request", "the range is too close to the year 9999") from None
    return {"device": device_id, "metric": q.metric, "since": format_ts(result.since), "until": format_ts(result.until),
            "bucket": result.bucket, "tier": result.tier,
            "items": [{"ts": format_ts(b.start), "min": b.min, "max": b.max, "avg": b.avg, "count": b.count,
                       "first": b.first, "first_ts": format_ts(b.first_ts), "last": b.last,
                       "last_ts": format_ts(b.last_ts)} for b in result.buckets]}
