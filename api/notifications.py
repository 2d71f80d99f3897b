"""Notifications on the JSON API (docs/notifications.md): channels, subscriptions, the delivery log; staff only."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from django.conf import settings
from django.db.models import Q
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from ninja import Field, Query, Router, Schema, Status

from api.errors import errors
from core.errors import ChannelUnknown, NotAuthorized, PayloadInvalid
from core.times import format_ts
from notify.models import Channel, Delivery, Subscription
from notify.registry import MAX_QUIET, MAX_REPEAT, channel_create, subscription_create
from notify.selectors import target_shown
from notify.services import channel_test_send

router = Router(tags=["notifications"])

MAX_PAGE = 1000
MAX_ID = 2**63 - 1  # a bigint: larger ids would reach PostgreSQL as an error
_LOCATION = {"Location": {"description": "the new object's URL", "schema": {"type": "string"}}}


class ChannelIn(Schema):
    name: str = Field(..., description="unique, 1-100 characters")
    kind: str = Field(..., description="webhook, email or apprise")
    target: str = Field(..., description="the webhook's URL, comma-separated e-mail addresses, or an Apprise URL")
    secret: str | None = Field(None, description="webhook only: the HMAC-SHA256 key; omitted, one is made")
    enabled: bool = True


class ChannelOut(Schema):
    id: int
    name: str
    kind: str
    target: str = Field(..., description="an Apprise URL holds its service's token: only its scheme is shown")
    enabled: bool
    created_at: str


class ChannelCreated(ChannelOut):
    secret: str | None = Field(None, description="the webhook's signing key; shown in this answer only")
    target_full: str = Field(..., description="the target as given; shown in this answer only")


class TestOut(Schema):
    ok: bool
    delivery: str = Field(..., description="the test delivery's id (X-Iotgw-Delivery), in the delivery log")
    status_code: int | None = None
    error: str
    latency_ms: float


class SubscriptionIn(Schema):
    channel: int = Field(..., ge=1, le=MAX_ID)
    user: str | None = Field(None, description="the subscriber's username (or give `group`)")
    group: str | None = Field(None, description="the subscriber group's name (or give `user`)")
    min_severity: str = Field("warning", description="critical, major, minor, warning or info")
    scope: str = Field("all", description="all, devices (give `devices`) or group (give `device_group`)")
    devices: list[str] = []
    device_group: str | None = None
    kinds: list[str] = Field([], description="of raised, acknowledged, cleared, retriggered, reminder; empty: all")
    repeat_every: int | None = Field(None, ge=1, le=MAX_REPEAT,
                                     description="seconds between reminders while an alarm stays active")
    quiet_period: int = Field(0, ge=0, le=MAX_QUIET,
                              description="seconds after a clear in which a new raise of it is held back")
    enabled: bool = True


class SubscriptionOut(Schema):
    id: int
    channel: int
    user: str | None
    group: str | None
    min_severity: str
    scope: str
    devices: list[str]
    device_group: str | None
    kinds: list[str]
    repeat_every: int | None
    quiet_period: int
    enabled: bool


class AttemptOut(Schema):
    at: str
    ok: bool
    status_code: int | None
    error: str
    latency_ms: float


class DeliveryOut(Schema):
    id: str
    channel: int
    key: str
    kind: str
    severity: str
    device: str
    title: str
    status: str = Field(..., description="pending, sent or failed")
    attempts: int
    next_attempt_at: str | None = Field(None, description="when a pending delivery is tried next")
    status_code: int | None
    error: str
    created_at: str
    finished_at: str | None
    log: list[AttemptOut] = Field(..., description="its tries, oldest first (the last 20)")


class DeliveryPage(Schema):
    items: list[DeliveryOut]
    next: str | None = Field(None, description="URL of the next (older) page, or null")


class DeliveryQuery(Schema):
    channel: int | None = Field(None, ge=1, le=MAX_ID)
    status: Literal["pending", "sent", "failed"] | None = None
    key: str | None = Field(None, max_length=200, description='an alarm\'s key, e.g. "alarm:42"')
    limit: int = Field(100, ge=1, le=MAX_PAGE)
    after: str | None = Field(None, max_length=64, description="exclusive: the last id of the previous page")


def _staff(request: HttpRequest) -> None:
    if not request.auth.is_staff:
        raise NotAuthorized("only staff may manage notifications")


def _channel(channel_id: int) -> Channel:
    channel = Channel.objects.filter(pk=channel_id).first() if 0 < channel_id <= MAX_ID else None
    if channel is None:
        raise ChannelUnknown(f"no channel {channel_id}")
    return channel


def _channel_out(c: Channel) -> dict[str, Any]:
    return {"id": c.pk, "name": c.name, "kind": c.kind, "target": target_shown(c), "enabled": c.enabled,
            "created_at": format_ts(c.created_at)}


@router.get("/notifications/channels", response={200: list[ChannelOut], **errors(401, 403)},
            summary="Notification channels (staff)")
def channel_list(request: HttpRequest):
    _staff(request)
    return [_channel_out(c) for c in Channel.objects.order_by("name")[:MAX_PAGE]]


@router.post("/notifications/channels", response={201: ChannelCreated, **errors(400, 401, 403, 409, 413)},
             openapi_extra={"responses": {201: {"headers": _LOCATION}}},
             summary="Add a channel (staff); its secret is shown once")
def channel_add(request: HttpRequest, response: HttpResponse, body: ChannelIn):
    _staff(request)
    channel = channel_create(**body.dict(), allowed_hosts=settings.IOTGW_NOTIFY_HOSTS)
    response["Location"] = reverse("api:notify_channel", kwargs={"channel_id": channel.pk})
    return Status(201, {**_channel_out(channel), "secret": channel.secret or None, "target_full": channel.target})


@router.get("/notifications/channels/{channel_id}", response={200: ChannelOut, **errors(401, 403, 404)},
            url_name="notify_channel", summary="One channel (staff); never its secret")
def channel_read(request: HttpRequest, channel_id: int):
    _staff(request)
    return _channel_out(_channel(channel_id))


@router.post("/notifications/channels/{channel_id}/test", response={200: TestOut, **errors(401, 403, 404)},
             summary="Send a test notification through the channel now (staff), and say how it went")
def channel_test(request: HttpRequest, channel_id: int):
    """The answer says whether it went out; the try is in the delivery log too. A failed test is not retried."""
    _staff(request)
    delivery, outcome = channel_test_send(channel=_channel(channel_id), timeout=settings.IOTGW_NOTIFY_TIMEOUT,
                                          from_email=settings.DEFAULT_FROM_EMAIL or "",
                                          allowed_hosts=settings.IOTGW_NOTIFY_HOSTS)
    return {"ok": outcome.ok, "delivery": str(delivery.pk), "status_code": outcome.status_code,
            "error": outcome.error, "latency_ms": outcome.latency_ms}


def _subscription_out(s: Subscription) -> dict[str, Any]:
    return {"id": s.pk, "channel": s.channel_id, "user": s.user.get_username() if s.user else None,
            "group": s.group.name if s.group else None, "min_severity": s.min_severity, "scope": s.scope,
            "devices": [d.pk for d in s.devices.all()], "device_group": s.device_group.name if s.device_group else None,
            "kinds": s.kinds, "repeat_every": s.repeat_every, "quiet_period": s.quiet_period, "enabled": s.enabled}


@router.get("/notifications/subscriptions", response={200: list[SubscriptionOut], **errors(401, 403)},
            summary="Subscriptions (staff)")
def subscription_list(request: HttpRequest):
    _staff(request)
    subs = Subscription.objects.select_related("user", "group", "device_group").prefetch_related("devices")
    return [_subscription_out(s) for s in subs.order_by("pk")[:MAX_PAGE]]


@router.post("/notifications/subscriptions", response={201: SubscriptionOut, **errors(400, 401, 403, 413)},
             summary="Subscribe a user or a group to a channel (staff)")
def subscription_add(request: HttpRequest, body: SubscriptionIn):
    _staff(request)
    fields = body.dict()
    return Status(201, _subscription_out(subscription_create(channel_id=fields.pop("channel"), **fields)))


def _delivery_out(d: Delivery) -> dict[str, Any]:
    e = d.event
    return {"id": str(d.pk), "channel": d.channel_id, "key": d.key, "kind": e.kind, "severity": e.severity,
            "device": e.device_id, "title": e.title, "status": d.status, "attempts": d.attempts,
            "next_attempt_at": format_ts(d.next_attempt_at) if d.status == Delivery.PENDING else None,
            "status_code": d.status_code, "error": d.error, "created_at": format_ts(d.created_at),
            "finished_at": format_ts(d.finished_at) if d.finished_at else None,
            "log": [{"at": format_ts(a.at), "ok": a.ok, "status_code": a.status_code, "error": a.error,
                     "latency_ms": a.latency_ms} for a in list(d.log.all())[-20:]]}


@router.get("/notifications/deliveries", response={200: DeliveryPage, **errors(400, 401, 403)},
            summary="The delivery log (staff), newest first, with each delivery's tries")
def delivery_list(request: HttpRequest, q: Query[DeliveryQuery]):
    _staff(request)
    qs = Delivery.objects.select_related("event").prefetch_related("log").order_by("-created_at", "-pk")
    if q.channel is not None:
        qs = qs.filter(channel_id=q.channel)
    if q.status is not None:
        qs = qs.filter(status=q.status)
    if q.key is not None:
        qs = qs.filter(key=q.key.replace("\x00", ""))
    if q.after is not None:
        qs = qs.filter(_older_than(q.after))
    page = list(qs[: q.limit + 1])
    more = len(page) > q.limit
    page = page[: q.limit]
    following = None
    if more:
        query = request.GET.copy()
        query["after"] = str(page[-1].pk)
        following = f"{request.path}?{query.urlencode()}"
    return {"items": [_delivery_out(d) for d in page], "next": following}


def _older_than(after: str) -> Q:
    """Deliveries after the cursor in the log's order (newest first); an unknown cursor is a bad request."""
    try:
        cursor = Delivery.objects.filter(pk=uuid.UUID(after)).values_list("created_at", flat=True).first()
    except ValueError:
        cursor = None
    if cursor is None:
        raise PayloadInvalid("bad_request", "after: not the id of a delivery")
    at: datetime = cursor
    return Q(created_at__lt=at) | Q(created_at=at, pk__lt=after)
