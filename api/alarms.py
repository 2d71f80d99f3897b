"""Alarms and alarm rules on the JSON API (docs/alarms.md): history with filters and paging, acknowledge, clear,
rules (staff writes)."""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlencode

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from ninja import Field, Query, Router, Schema, Status

from alarms.live import alarm_frames, alarms_announce
from alarms.models import AlarmRule
from alarms.rules import KINDS, SEVERITIES
from alarms.selectors import alarm_events, alarm_get, alarm_state, alarms_page, rules_visible
from alarms.services import Change, alarm_acknowledge, alarm_clear, rule_delete, rule_save
from api.devices import _time
from api.errors import errors
from core.errors import AlarmUnknown, NotAuthorized, PayloadInvalid
from core.ids import DEVICE_ID_RE
from core.times import format_ts

router = Router(tags=["alarms"])

MAX_PAGE = 1000
Severity = Literal["critical", "major", "minor", "warning", "info"]
Kind = Literal["above", "below", "outside", "inactivity", "offline", "command_failed"]
assert set(SEVERITIES) == set(Severity.__args__) and set(KINDS) == set(Kind.__args__)  # type: ignore[attr-defined]


class AlarmOut(Schema):
    id: int
    device: str
    rule: int | None = Field(None, description="the rule's id; null once the rule is deleted")
    rule_name: str
    kind: str
    severity: str = Field(..., description="critical, major, minor, warning or info")
    state: str = Field(..., description="active, acknowledged or cleared")
    value: float | None = Field(None, description="the value that raised it (or retriggered it last)")
    message: str
    first_seen: str
    last_seen: str
    retriggers: int
    acknowledged_at: str | None = None
    acknowledged_by: str | None = None
    ack_note: str
    cleared_at: str | None = None
    cleared_by: str | None = None


class EventOut(Schema):
    kind: str = Field(..., description="raised, acknowledged, retriggered or cleared")
    at: str
    by: str | None = None
    note: str
    value: float | None = None


class AlarmDetail(AlarmOut):
    events: list[EventOut]


class AlarmPage(Schema):
    items: list[AlarmOut]
    next: str | None = Field(None, description="URL of the next page (same filters), or null")


class AlarmQuery(Schema):
    state: Literal["open", "active", "acknowledged", "cleared"] | None = Field(
        None, description="open: active or acknowledged")
    severity: Severity | None = None
    device: str | None = Field(None, max_length=64)
    rule: int | None = Field(None, ge=1, le=2**63 - 1)
    since: str | None = Field(None, description="first seen at or after; ISO-8601 with offset, or epoch s or ms")
    until: str | None = Field(None, description="first seen before; ISO-8601 with offset, or epoch s or ms")
    after: int | None = Field(None, ge=1, le=2**63 - 1, description="exclusive: the last id of the previous page")
    limit: int = Field(100, ge=1, le=MAX_PAGE)


class NoteIn(Schema):
    note: str = Field("", max_length=1000)


class RuleIn(Schema):
    name: str = Field(..., min_length=1, max_length=200)
    enabled: bool = True
    kind: Kind
    severity: Severity = "major"
    device: str | None = Field(None, max_length=64, description="the one device it watches")
    group: str | None = Field(None, max_length=150, description="the group (by name) whose devices it watches; "
                                                                  "neither device nor group: every device")
    metric: str = Field("", max_length=64, description="above, below, outside: the metric watched")
    low: float | None = Field(None, description="below, outside: raises under this")
    high: float | None = Field(None, description="above, outside: raises over this")
    low_clear: float | None = Field(None, description="clears at or over this (≥ low; default low)")
    high_clear: float | None = Field(None, description="clears at or under this (≤ high; default high)")
    duration: float = Field(0.0, ge=0, description="seconds the condition holds before it raises "
                                                   "(threshold: for; inactivity: the silence; offline: offline for)")
    command: str = Field("", max_length=64, description="command_failed: only this command; empty: any")


class RuleOut(RuleIn):
    id: int
    created_at: str
    updated_at: str


def _rule_out(rule: AlarmRule) -> dict[str, Any]:
    return {"id": rule.pk, "name": rule.name, "enabled": rule.enabled, "kind": rule.kind, "severity": rule.severity,
            "device": rule.device_id, "group": rule.group.name if rule.group_id else None,  # type: ignore[union-attr]
            "metric": rule.metric, "low": rule.low, "high": rule.high, "low_clear": rule.low_clear,
            "high_clear": rule.high_clear, "duration": rule.duration, "command": rule.command,
            "created_at": format_ts(rule.created_at), "updated_at": format_ts(rule.updated_at)}


def _announce(change: Change) -> None:
    frames = alarm_frames([change])
    async_to_sync(alarms_announce)(get_channel_layer(), frames, buckets=settings.IOTGW_PUSH_BUCKETS)


@router.get("/alarms", response={200: AlarmPage, **errors(400, 401)}, summary="Alarms, newest first, in pages")
def alarm_list(request: HttpRequest, q: Query[AlarmQuery]):
    """Alarms of the devices the caller may see, filtered; `next` carries the same filters on."""
    if q.device is not None and not DEVICE_ID_RE.fullmatch(q.device):
        raise PayloadInvalid("bad_request", "device is not a device id")
    rows = alarms_page(user=request.auth, state=q.state, severity=q.severity, device_id=q.device, rule_id=q.rule,
                       since=_time("since", q.since), until=_time("until", q.until), after=q.after, limit=q.limit)
    next_url = None
    if len(rows) > q.limit:
        rows = rows[: q.limit]
        params = {k: v for k, v in q.dict().items() if v is not None and k != "after"}
        next_url = f"{request.path}?{urlencode({**params, 'after': rows[-1].pk})}"
    return {"items": [alarm_state(a) for a in rows], "next": next_url}


def _alarm_id(alarm_id: str) -> int:
    if not alarm_id.isascii() or not alarm_id.isdigit() or len(alarm_id) > 18:
        raise AlarmUnknown(f"no alarm {alarm_id[:80]!r}")
    return int(alarm_id)


@router.get("/alarms/{alarm_id}", response={200: AlarmDetail, **errors(401, 404)}, url_name="alarm_detail",
            summary="One alarm with every transition")
def alarm_detail(request: HttpRequest, alarm_id: str):
    alarm = alarm_get(user=request.auth, alarm_id=_alarm_id(alarm_id))
    return {**alarm_state(alarm), "events": alarm_events(alarm)}


@router.post("/alarms/{alarm_id}/acknowledge", response={200: AlarmOut, **errors(400, 401, 403, 404, 409, 413)},
             summary="Acknowledge an active alarm, with a note")
def alarm_acknowledge_view(request: HttpRequest, alarm_id: str, body: NoteIn):
    change = alarm_acknowledge(user=request.auth, alarm_id=_alarm_id(alarm_id), note=body.note)
    _announce(change)
    return alarm_state(change.alarm)


@router.post("/alarms/{alarm_id}/clear", response={200: AlarmOut, **errors(400, 401, 403, 404, 409, 413)},
             summary="Clear an open alarm by hand, with a note")
def alarm_clear_view(request: HttpRequest, alarm_id: str, body: NoteIn):
    change = alarm_clear(user=request.auth, alarm_id=_alarm_id(alarm_id), note=body.note)
    _announce(change)
    return alarm_state(change.alarm)


@router.get("/alarm-rules", response={200: list[RuleOut], **errors(401)}, summary="Alarm rules the caller may read")
def rule_list(request: HttpRequest):
    return [_rule_out(r) for r in rules_visible(user=request.auth).select_related("group")[:10_000]]


def _staff(request: HttpRequest) -> None:
    if not request.auth.is_staff:
        raise NotAuthorized("only staff may change alarm rules")


def _rule(request: HttpRequest, rule_id: str) -> AlarmRule:
    rule = None
    if rule_id.isascii() and rule_id.isdigit() and len(rule_id) <= 18:
        rule = rules_visible(user=request.auth).select_related("group").filter(pk=int(rule_id)).first()
    if rule is None:
        raise AlarmUnknown(f"no alarm rule {rule_id[:80]!r}")
    return rule


def _fields(body: RuleIn) -> dict[str, Any]:
    fields = body.dict()
    return {"device_id": fields.pop("device"), "group": fields.pop("group"), **fields}


@router.post("/alarm-rules", response={201: RuleOut, **errors(400, 401, 403, 413)},
             openapi_extra={"responses": {201: {"headers": {"Location": {
                 "description": "the new rule's URL", "schema": {"type": "string"}}}}}},
             summary="Create an alarm rule (staff); every bridge applies it within IOTGW_ALARM_POLL_SECONDS")
def rule_create(request: HttpRequest, response: HttpResponse, body: RuleIn):
    _staff(request)
    rule = rule_save(**_fields(body))
    response["Location"] = reverse("api:alarm_rule_detail", kwargs={"rule_id": str(rule.pk)})
    return Status(201, _rule_out(rule))


@router.get("/alarm-rules/{rule_id}", response={200: RuleOut, **errors(401, 404)}, url_name="alarm_rule_detail",
            summary="One alarm rule")
def rule_detail(request: HttpRequest, rule_id: str):
    return _rule_out(_rule(request, rule_id))


@router.put("/alarm-rules/{rule_id}", response={200: RuleOut, **errors(400, 401, 403, 404, 413)},
            summary="Replace an alarm rule (staff)")
def rule_replace(request: HttpRequest, rule_id: str, body: RuleIn):
    rule = _rule(request, rule_id)
    _staff(request)
    return _rule_out(rule_save(rule=rule, **_fields(body)))


@router.delete("/alarm-rules/{rule_id}", response={204: None, **errors(401, 403, 404)},
               summary="Delete an alarm rule (staff); its open alarms are cleared, their history kept")
def rule_remove(request: HttpRequest, rule_id: str):
    rule = _rule(request, rule_id)
    _staff(request)
    rule_delete(rule=rule)
    return Status(204, None)
