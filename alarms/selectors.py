"""Reads of alarms: what a user may see, history pages, and what the engine loads (rules, open alarms, changes)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.contrib.auth.models import User
from django.db.models import QuerySet

from alarms.models import Alarm, AlarmEvent, AlarmRule, AlarmRuleVersion
from core.errors import AlarmUnknown
from core.times import format_ts
from devices.models import Device
from devices.selectors import devices_visible_to

OPEN_STATES = (Alarm.ACTIVE, Alarm.ACKNOWLEDGED)


def alarms_visible_to(user: User) -> QuerySet[Alarm]:
    """Alarms of the devices a user may see."""
    if user.is_authenticated and user.is_active and user.is_staff:
        return Alarm.objects.all()
    return Alarm.objects.filter(device__in=devices_visible_to(user))


def alarms_page(*, user: User, state: str | None = None, severity: str | None = None, device_id: str | None = None,
                rule_id: int | None = None, since: datetime | None = None, until: datetime | None = None,
                after: int | None = None, limit: int = 100) -> list[Alarm]:
    """Up to `limit` + 1 visible alarms, newest first (by id), filtered; `after` is the last id of the page before."""
    qs = alarms_visible_to(user).select_related("acknowledged_by", "cleared_by")
    if state == "open":
        qs = qs.filter(state__in=OPEN_STATES)
    elif state is not None:
        qs = qs.filter(state=state)
    if severity is not None:
        qs = qs.filter(severity=severity)
    if device_id is not None:
        qs = qs.filter(device_id=device_id)
    if rule_id is not None:
        qs = qs.filter(rule_id=rule_id)
    if since is not None:
        qs = qs.filter(first_seen__gte=since)
    if until is not None:
        qs = qs.filter(first_seen__lt=until)
    if after is not None:
        qs = qs.filter(pk__lt=after)
    return list(qs.order_by("-pk")[: limit + 1])


def alarm_get(*, user: User, alarm_id: int) -> Alarm:
    """One visible alarm, or AlarmUnknown."""
    alarm = alarms_visible_to(user).select_related("acknowledged_by", "cleared_by").filter(pk=alarm_id).first()
    if alarm is None:
        raise AlarmUnknown(f"no alarm {alarm_id}")
    return alarm


def alarm_events(alarm: Alarm) -> list[dict[str, Any]]:
    """An alarm's transitions, oldest first."""
    return [{"kind": e.kind, "at": format_ts(e.at), "by": e.by.username if e.by else None, "note": e.note,
             "value": e.value} for e in alarm.events.select_related("by").order_by("pk")]


def alarm_state(alarm: Alarm) -> dict[str, Any]:
    """An alarm's public state: what the API answers and the `alarm` frame carries."""
    return {
        "id": alarm.pk,
        "device": alarm.device_id,
        "rule": alarm.rule_id,
        "rule_name": alarm.rule_name,
        "kind": alarm.kind,
        "severity": alarm.severity,
        "state": alarm.state,
        "value": alarm.value,
        "message": alarm.message,
        "first_seen": format_ts(alarm.first_seen),
        "last_seen": format_ts(alarm.last_seen),
        "retriggers": alarm.retriggers,
        "acknowledged_at": format_ts(alarm.acknowledged_at) if alarm.acknowledged_at else None,
        "acknowledged_by": alarm.acknowledged_by.username if alarm.acknowledged_by_id else None,  # type: ignore[union-attr]
        "ack_note": alarm.ack_note,
        "cleared_at": format_ts(alarm.cleared_at) if alarm.cleared_at else None,
        "cleared_by": alarm.cleared_by.username if alarm.cleared_by_id else None,  # type: ignore[union-attr]
    }


def alarms_open_of(device_ids: Iterable[str], *, limit: int = 1000) -> list[dict[str, Any]]:
    """The open alarms of some devices (a dashboard's snapshot of them), newest first, at most `limit`."""
    rows = Alarm.objects.filter(device_id__in=list(device_ids), state__in=OPEN_STATES).select_related(
        "acknowledged_by", "cleared_by").order_by("-pk")[:limit]
    return [alarm_state(a) for a in rows]


def alarm_counts_open(user: User) -> dict[str, int]:
    """Open alarms per device among those the user may see (the fleet page's column)."""
    counts: dict[str, int] = {}
    for device_id in alarms_visible_to(user).filter(state__in=OPEN_STATES).values_list("device_id", flat=True):
        counts[device_id] = counts.get(device_id, 0) + 1
    return counts


def rules_visible(*, user: User) -> QuerySet[AlarmRule]:
    """Rules a user may read: all for staff; otherwise those of their devices, their groups, and fleet-wide ones."""
    if user.is_staff:
        return AlarmRule.objects.all()
    from django.db.models import Q

    return AlarmRule.objects.filter(Q(device__in=devices_visible_to(user)) | Q(group__in=user.groups.all())
                                    | Q(device__isnull=True, group__isnull=True)).distinct()


# --- what the engine loads --------------------------------------------------------------------

def rule_version() -> int:
    """The rules' version counter (bumped in the transaction of every rule change)."""
    row = AlarmRuleVersion.objects.filter(pk=1).values_list("version", flat=True).first()
    return row or 0


@dataclass(slots=True)
class RuleLoad:
    """Everything the engine evaluates with, read in one go: enabled rules and their groups' members."""

    version: int
    rules: list[AlarmRule]
    members: dict[int, set[str]] = field(default_factory=dict)


def rules_load() -> RuleLoad:
    """The enabled rules and, for group rules, the devices of each group."""
    version = rule_version()
    rules = list(AlarmRule.objects.filter(enabled=True).order_by("pk"))
    groups = {r.group_id for r in rules if r.group_id is not None}
    members: dict[int, set[str]] = {g: set() for g in groups}
    if groups:
        through = Device.groups.through
        for device_id, group_id in through.objects.filter(group_id__in=groups).values_list("device_id", "group_id"):
            members[group_id].add(device_id)
    return RuleLoad(version, rules, members)


def alarms_open_keys() -> tuple[dict[tuple[int, str], int], int]:
    """Every open alarm as (rule, device) → alarm id, and the newest event id (where to follow changes from)."""
    last = AlarmEvent.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    rows = Alarm.objects.filter(state__in=OPEN_STATES, rule__isnull=False).values_list("rule_id", "device_id", "pk")
    return {(r, d): a for r, d, a in rows}, last


def alarm_changes_since(last_id: int, *, limit: int = 10_000) -> tuple[int, list[tuple[int, str, int, str]]]:
    """Alarms with transitions after event `last_id`: (newest event id, [(rule, device, alarm, state now)])."""
    rows = list(AlarmEvent.objects.filter(pk__gt=last_id, alarm__rule__isnull=False).order_by("pk")
                .values_list("pk", "alarm__rule_id", "alarm__device_id", "alarm_id", "alarm__state")[:limit])
    if not rows:
        return last_id, []
    return rows[-1][0], [(r, d, a, s) for _, r, d, a, s in rows]


def devices_presence(device_ids: Iterable[str] | None) -> list[tuple[str, datetime | None, bool]]:
    """(id, last_seen, online) of the enabled devices among `device_ids` (None: all): the sweep's one read."""
    qs = Device.objects.filter(enabled=True)
    if device_ids is not None:
        qs = qs.filter(pk__in=list(device_ids))
    return list(qs.values_list("id", "last_seen", "online"))


def alarm_metrics() -> tuple[dict[str, int], dict[str, int]]:
    """(transitions stored per kind, open alarms per severity): two GROUP BYs for /metrics."""
    from django.db.models import Count

    kinds = dict(AlarmEvent.objects.values_list("kind").annotate(n=Count("pk")).order_by())
    severities = dict(Alarm.objects.filter(state__in=OPEN_STATES).values_list("severity").annotate(n=Count("pk"))
                      .order_by())
    return kinds, severities
