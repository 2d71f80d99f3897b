"""Writes of alarms: every transition goes through `transition`, in the transaction of the alarm change.

`transition` is the one place an alarm changes state and its `AlarmEvent` row is stored;
whatever must happen with a transition in the same transaction (a notification outbox row)
is added there. Raising relies on the partial unique index: a second open alarm for one
(rule, device), from another bridge or a redelivered batch, is refused by the database and
is a no-op here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.db.models import Case, DateTimeField, F, Value, When
from django.db.models.functions import Greatest
from django.utils import timezone

from alarms.models import Alarm, AlarmEvent, AlarmRule
from core.errors import AlarmUnknown, Conflict, PayloadInvalid
from core.payloads import storable_text
from core.times import format_ts
from devices.selectors import devices_visible_to
from notify.services import enqueue

MAX_NOTE = 1000
KIND_STATE = {AlarmEvent.RAISED: Alarm.ACTIVE, AlarmEvent.RETRIGGERED: Alarm.ACTIVE,
              AlarmEvent.ACKNOWLEDGED: Alarm.ACKNOWLEDGED, AlarmEvent.CLEARED: Alarm.CLEARED}


def transition(*, alarm: Alarm, kind: str, at: datetime, by: User | None = None, note: str = "",
               value: float | None = None) -> AlarmEvent:
    """Apply one transition to `alarm` (saved, or new for `raised`) and store its event; inside a transaction."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("an alarm transition runs inside the transaction of its change")
    alarm.state = KIND_STATE[kind]
    fields = ["state"]
    if kind in (AlarmEvent.RAISED, AlarmEvent.RETRIGGERED):
        alarm.last_seen = at
        fields.append("last_seen")
        if value is not None:
            alarm.value = value
            fields.append("value")
    if kind == AlarmEvent.RETRIGGERED:
        alarm.retriggers += 1
        alarm.acknowledged_at, alarm.acknowledged_by, alarm.ack_note = None, None, ""
        fields += ["retriggers", "acknowledged_at", "acknowledged_by", "ack_note"]
    elif kind == AlarmEvent.ACKNOWLEDGED:
        alarm.acknowledged_at, alarm.acknowledged_by, alarm.ack_note = at, by, note
        fields += ["acknowledged_at", "acknowledged_by", "ack_note"]
    elif kind == AlarmEvent.CLEARED:
        alarm.cleared_at, alarm.cleared_by = at, by
        fields += ["cleared_at", "cleared_by"]
    if kind == AlarmEvent.RAISED:
        alarm.first_seen = at
        alarm.save(force_insert=True)
    else:
        alarm.save(update_fields=fields)
    event = AlarmEvent.objects.create(alarm=alarm, kind=kind, at=at, by=by, note=note, value=value)
    _notify(alarm, event)
    return event


def _notify(alarm: Alarm, event: AlarmEvent) -> None:
    """The transition's notifications, in its transaction: the outbox commits with the alarm change or not at all."""
    by = event.by.get_username() if event.by is not None else None
    enqueue(key=f"alarm:{alarm.pk}", kind=event.kind, severity=alarm.severity, device_id=alarm.device_id,
            title=f"{alarm.rule_name} on {alarm.device_id}", body=alarm.message, at=event.at,
            data={"alarm": alarm.pk, "rule": alarm.rule_id, "rule_kind": alarm.kind, "state": alarm.state,
                  "value": alarm.value if event.value is None else event.value, "by": by, "note": event.note,
                  "retriggers": alarm.retriggers, "first_seen": format_ts(alarm.first_seen)})


@dataclass(frozen=True, slots=True)
class Change:
    """An alarm after a transition, for the caller to announce once the transaction has committed."""

    alarm: Alarm
    event: AlarmEvent


def alarm_raise(*, rule: AlarmRule, device_id: str, at: datetime, value: float | None = None,
                message: str = "") -> Change | None:
    """Open an alarm of `rule` on a device; None when one is open already (another bridge, a redelivery)."""
    alarm = Alarm(rule=rule, device_id=device_id, rule_name=rule.name, kind=rule.kind, severity=rule.severity,
                  message=message[:300], first_seen=at, last_seen=at)
    try:
        with transaction.atomic():
            event = transition(alarm=alarm, kind=AlarmEvent.RAISED, at=at, value=value)
    except IntegrityError:
        return None  # the partial unique index: this (rule, device) has an open alarm
    return Change(alarm, event)


def alarm_retrigger(*, rule_id: int, device_id: str, at: datetime, value: float | None = None) -> Change | None:
    """The condition of an open alarm began again: count it and make it active; None when none is open."""
    with transaction.atomic():
        alarm = _open(rule_id, device_id)
        if alarm is None:
            return None
        return Change(alarm, transition(alarm=alarm, kind=AlarmEvent.RETRIGGERED, at=at, value=value))


def alarm_clear_condition(*, rule_id: int, device_id: str, at: datetime, value: float | None = None,
                          note: str = "the condition ended") -> Change | None:
    """Clear the open alarm of (rule, device) because its condition ended; None when none is open."""
    with transaction.atomic():
        alarm = _open(rule_id, device_id)
        if alarm is None:
            return None
        return Change(alarm, transition(alarm=alarm, kind=AlarmEvent.CLEARED, at=at, note=note, value=value))


def alarms_touch(*, seen: dict[int, datetime]) -> int:
    """Move `last_seen` of open alarms whose condition is still observed, never backwards; one statement, no event."""
    if not seen:
        return 0
    when = Case(*[When(pk=pk, then=Value(at)) for pk, at in seen.items()], output_field=DateTimeField())
    return Alarm.objects.filter(pk__in=list(seen)).exclude(state=Alarm.CLEARED).update(
        last_seen=Greatest(F("last_seen"), when))


def alarm_acknowledge(*, user: User, alarm_id: int, note: str = "") -> Change:
    """An operator has seen an open alarm: `active` → `acknowledged`, with who, when and a note."""
    note = _note(note)
    with transaction.atomic():
        alarm = _visible_locked(user, alarm_id)
        if alarm.state != Alarm.ACTIVE:
            raise Conflict(f"alarm is {alarm.state}; only an active alarm can be acknowledged")
        return Change(alarm, transition(alarm=alarm, kind=AlarmEvent.ACKNOWLEDGED, at=timezone.now(), by=user,
                                        note=note))


def alarm_clear(*, user: User, alarm_id: int, note: str = "") -> Change:
    """Clear an open alarm by hand; a condition that still holds raises a new one."""
    note = _note(note)
    with transaction.atomic():
        alarm = _visible_locked(user, alarm_id)
        if alarm.state == Alarm.CLEARED:
            raise Conflict("alarm is cleared already")
        return Change(alarm, transition(alarm=alarm, kind=AlarmEvent.CLEARED, at=timezone.now(), by=user,
                                        note=note))


def alarms_clear_of_rule(*, rule_id: int, note: str) -> list[Change]:
    """Clear every open alarm of a rule (it is being deleted)."""
    now = timezone.now()
    with transaction.atomic():
        alarms = list(Alarm.objects.select_for_update().filter(rule_id=rule_id).exclude(state=Alarm.CLEARED))
        return [Change(a, transition(alarm=a, kind=AlarmEvent.CLEARED, at=now, note=note)) for a in alarms]


def _open(rule_id: int, device_id: str) -> Alarm | None:
    return (Alarm.objects.select_for_update().filter(rule_id=rule_id, device_id=device_id)
            .exclude(state=Alarm.CLEARED).first())


def _visible_locked(user: User, alarm_id: int) -> Alarm:
    visible = Alarm.objects.filter(pk=alarm_id, device__in=devices_visible_to(user)).exists()
    alarm = Alarm.objects.select_for_update().filter(pk=alarm_id).first() if visible else None
    if alarm is None:
        raise AlarmUnknown(f"no alarm {alarm_id}")
    return alarm


def _note(note: str) -> str:
    if not isinstance(note, str) or len(note) > MAX_NOTE or not storable_text(note):
        raise PayloadInvalid("bad_request", f"note must be text of at most {MAX_NOTE} characters without NUL")
    return note


def rule_bump() -> None:
    """Tell every bridge the rules changed (in the caller's transaction): they reload within a poll."""
    from alarms.models import AlarmRuleVersion

    updated = AlarmRuleVersion.objects.filter(pk=1).update(version=F("version") + 1)
    if not updated:
        AlarmRuleVersion.objects.get_or_create(pk=1, defaults={"version": 1})


__all__ = ["AlarmUnknown", "Change", "alarm_acknowledge", "alarm_clear", "alarm_clear_condition", "alarm_raise",
           "alarm_retrigger", "alarms_clear_of_rule", "alarms_touch", "rule_bump", "transition"]


# --- rules ----------------------------------------------------------------------------------

RULE_FIELDS = ("name", "enabled", "kind", "severity", "metric", "low", "high", "low_clear", "high_clear", "duration",
               "command")


def rule_save(*, rule: AlarmRule | None = None, device_id: str | None = None, group: str | None = None,
              **fields: object) -> AlarmRule:
    """Create (or replace the fields of) a rule, checked as every save is; the bridges reload it within a poll."""
    from django.contrib.auth.models import Group

    from devices.models import Device

    name = fields.get("name")
    if not isinstance(name, str) or not 0 < len(name) <= 200 or not storable_text(name):
        raise PayloadInvalid("bad_rule", "name must be text of 1 to 200 characters without NUL")
    rule = rule or AlarmRule()
    for key in RULE_FIELDS:
        if key in fields:
            setattr(rule, key, fields[key])
    rule.device = None
    rule.group = None
    if device_id is not None:
        rule.device = Device.objects.filter(pk=device_id).first() if storable_text(device_id) else None
        if rule.device is None:
            raise PayloadInvalid("bad_rule", f"no device {device_id[:80]!r}")
    if group is not None:
        rule.group = Group.objects.filter(name=group).first() if storable_text(group) else None
        if rule.group is None:
            raise PayloadInvalid("bad_rule", f"no group {group[:80]!r}")
    if rule.device is not None and rule.group is not None:
        raise PayloadInvalid("bad_rule", "a rule watches one device or one group, not both")
    spec = rule.spec()  # PayloadInvalid with the rule's own words, before the model's ValidationError
    for key in ("low", "high", "low_clear", "high_clear", "metric", "duration", "command"):
        setattr(rule, key, getattr(spec, key))
    with transaction.atomic():
        rule.save()
    return rule


def rule_delete(*, rule: AlarmRule) -> None:
    """Delete a rule; its open alarms are cleared first (their history stays, without the rule)."""
    with transaction.atomic():
        rule.delete()
