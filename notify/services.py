"""The notification outbox's writes: enqueue (fan-out to subscriptions), claim, finish, the reminder sweep, test sends.

`enqueue` runs inside the caller's transaction (the alarm transition's): the event and one
delivery per matching channel commit with the alarm change or not at all, so a crash loses
nothing, and what an event sends is fixed when it commits.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone

from core.retry import backoff_delay
from core.times import format_ts
from notify.kinds import Message, Outcome, send
from notify.matching import subscriptions_for
from notify.models import (
    ALARM_KINDS,
    RANK,
    Attempt,
    Channel,
    Counter,
    Delivery,
    Event,
    KeyState,
    SenderHeartbeat,
    Subscription,
)

TEST_OWNER = "test-send"


def enqueue(*, key: str, kind: str, severity: str, device_id: str = "", title: str, body: str = "",
            data: dict[str, Any] | None = None, at: datetime | None = None) -> Event:
    """Store an alarm transition to tell, and one delivery per channel of every subscription that should hear it.

    Call it inside the transaction that changes the alarm. `kind` is one of raised, acknowledged,
    cleared, retriggered; `severity` one of critical, major, minor, warning, info.
    """
    if kind not in ALARM_KINDS:
        raise ValueError(f"kind must be one of {', '.join(ALARM_KINDS)}, not {kind!r}")
    if severity not in RANK:
        raise ValueError(f"severity must be one of {', '.join(RANK)}, not {severity!r}")
    with transaction.atomic():
        event = Event.objects.create(key=key[:200], kind=kind, severity=severity, device_id=device_id or "",
                                     title=title[:300], body=body, data=data or {}, at=at or timezone.now())
        _deliver(event, _told(event, subscriptions_for(event)))
    return event


STATE_FIELDS = ["open", "told_open", "acknowledged", "cleared_at", "raised_by", "reminders", "due_at"]


def _told(event: Event, subs: list[Subscription]) -> list[int]:
    """The channels of the subscriptions that hear of `event`; their views of its key read and written in bulk."""
    if not subs:
        return []
    # Locked: two transitions of one alarm (serialised by the alarm's own lock anyway) cannot interleave here.
    known = {s.subscription_id: s for s in KeyState.objects.select_for_update()
             .filter(key=event.key, subscription_id__in=[sub.pk for sub in subs])}
    channels: list[int] = []
    fresh: list[KeyState] = []
    seen: list[KeyState] = []
    for sub in subs:
        state = known.get(sub.pk)
        new = state is None
        state = KeyState(subscription=sub, key=event.key) if state is None else state
        if _tell(sub, event, state, new):
            channels.append(sub.channel_id)
        (fresh if new else seen).append(state)
    KeyState.objects.bulk_create(fresh, update_conflicts=True, unique_fields=["subscription", "key"],
                                 update_fields=STATE_FIELDS)
    KeyState.objects.bulk_update(seen, STATE_FIELDS)
    return channels


def _deliver(event: Event, channel_ids: Iterable[int], *, now: datetime | None = None) -> None:
    now = now or timezone.now()
    rows = [Delivery(event=event, channel_id=c, key=event.key, next_attempt_at=now, created_at=now)
            for c in sorted(set(channel_ids))]
    Delivery.objects.bulk_create(rows, ignore_conflicts=True)


def _tell(sub: Subscription, event: Event, state: KeyState, new: bool) -> bool:
    """Whether this subscription hears of this event now; updates its view of the alarm (open, held back, reminders)."""
    kinds = sub.kinds or ()
    if event.kind == "raised" or (event.kind == "retriggered" and not state.open):
        tell = _open(state, sub, event)
    elif event.kind == "retriggered":  # active again (an acknowledgement is void): reminders resume
        tell = state.told_open
        state.acknowledged = False
        if state.told_open and sub.repeat_every:
            state.due_at = event.at + timedelta(seconds=sub.repeat_every)
    elif event.kind == "acknowledged":
        tell = new or state.told_open
        state.acknowledged, state.due_at = True, None  # someone is on it: no more reminders
    else:  # cleared
        tell = new or state.told_open
        state.open, state.told_open, state.cleared_at, state.due_at = False, False, event.at, None
    return tell and (not kinds or event.kind in kinds)


def _open(state: KeyState, sub: Subscription, event: Event) -> bool:
    state.open, state.acknowledged, state.raised_by, state.reminders = True, False, event, 0
    if sub.quiet_period and state.cleared_at and event.at < state.cleared_at + timedelta(seconds=sub.quiet_period):
        # Flapping: held back; the sweep sends it when the quiet period ends if the alarm is still open.
        state.told_open, state.due_at = False, state.cleared_at + timedelta(seconds=sub.quiet_period)
        return False
    state.told_open = True
    state.due_at = event.at + timedelta(seconds=sub.repeat_every) if sub.repeat_every else None
    return True


def reminders_sweep(*, limit: int = 200, now: datetime | None = None) -> int:
    """Send what is due: held-back raises whose quiet period ended, reminders of alarms still active."""
    now = now or timezone.now()
    done = 0
    with transaction.atomic():
        due = (KeyState.objects.select_for_update(skip_locked=True, of=("self",))
               .filter(due_at__lte=now).select_related("subscription", "raised_by").order_by("due_at")[:limit])
        for state in due:
            done += _due(state, now)
            state.save()
        # A closed key is kept only as long as a quiet period can last (a day at most).
        KeyState.objects.filter(open=False, cleared_at__lt=now - timedelta(days=1)).delete()
    return done


def _due(state: KeyState, now: datetime) -> int:
    sub, raised = state.subscription, state.raised_by
    state.due_at = None
    if not state.open or raised is None or not sub.enabled:
        return 0
    kinds = sub.kinds or ()
    if not state.told_open:
        state.told_open = True
        if not kinds or "raised" in kinds:
            _deliver(raised, [sub.channel_id], now=now)
    elif sub.repeat_every and not state.acknowledged:
        state.reminders += 1
        if not kinds or "reminder" in kinds:
            reminder = Event.objects.create(
                key=raised.key, kind="reminder", severity=raised.severity, device_id=raised.device_id,
                title=raised.title, body=raised.body, data={**raised.data, "reminder": state.reminders}, at=now)
            _deliver(reminder, [sub.channel_id], now=now)
    else:
        return 0
    if sub.repeat_every and not state.acknowledged:
        state.due_at = now + timedelta(seconds=sub.repeat_every)
    return 1


@dataclass(frozen=True)
class Claimed:
    """A delivery leased to one sender, with what to send and where."""

    delivery_id: str
    channel: Channel
    message: Message


def delivery_claim(*, owner: str, lease: float, limit: int = 50, exclude: Iterable[str] = ()) -> list[Claimed]:
    """Lease due deliveries to one sender: rows another sender holds are skipped (SKIP LOCKED, and the lease).

    A key's deliveries to one channel go out in order: one waits while an earlier one is pending.
    A claim that was never finished (the sender died) is free again when its lease runs out.
    """
    now = timezone.now()
    earlier = Delivery.objects.filter(channel_id=OuterRef("channel_id"), key=OuterRef("key"),
                                      status=Delivery.PENDING, event_id__lt=OuterRef("event_id"))
    with transaction.atomic():
        rows = list(
            Delivery.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(status=Delivery.PENDING, next_attempt_at__lte=now, channel__enabled=True)
            .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
            .exclude(pk__in=list(exclude)).exclude(Exists(earlier))
            .select_related("event", "channel").order_by("next_attempt_at")[:limit])
        if rows:
            Delivery.objects.filter(pk__in=[d.pk for d in rows]).update(
                lease_owner=owner, lease_until=now + timedelta(seconds=lease))
    return [Claimed(str(d.pk), d.channel, message_of(d)) for d in rows]


def message_of(delivery: Delivery) -> Message:
    """What a delivery sends: its event as committed."""
    e = delivery.event
    return Message(delivery_id=str(delivery.pk), kind=e.kind, severity=e.severity, key=e.key, device_id=e.device_id,
                   title=e.title, body=e.body, data=e.data, at=format_ts(e.at))


def delivery_finish(*, delivery_id: str, outcome: Outcome, max_attempts: int, retry_first: float,
                    retry_most: float) -> Delivery | None:
    """Record one try: `sent`, another try after a jittered back-off, or `failed` when out of tries."""
    done = deliveries_finish(outcomes=[(delivery_id, outcome)], max_attempts=max_attempts, retry_first=retry_first,
                             retry_most=retry_most)
    return done[0] if done else None


def deliveries_finish(*, outcomes: Sequence[tuple[str, Outcome]], max_attempts: int, retry_first: float,
                      retry_most: float) -> list[Delivery]:
    """Record tries in one transaction (a commit per try was the sender's bottleneck); a delivery no longer pending
    (finished by another sender whose lease on it was newer) is left as it is."""
    now = timezone.now()
    by_id = dict(outcomes)
    counts: dict[str, dict[str, int]] = {}
    with transaction.atomic():
        rows = list(Delivery.objects.select_for_update(of=("self",)).select_related("channel")
                    .filter(pk__in=list(by_id), status=Delivery.PENDING).order_by("pk"))
        for d in rows:
            outcome = by_id[str(d.pk)]
            d.attempts += 1
            d.status_code, d.error, d.lease_owner, d.lease_until = outcome.status_code, outcome.error, "", None
            if outcome.ok:
                d.status, d.finished_at, counted = Delivery.SENT, now, "sent"
            elif not outcome.retry or d.attempts >= max_attempts:
                d.status, d.finished_at, counted = Delivery.FAILED, now, "failed"
            else:
                counted = "retried"
                delay = backoff_delay(d.attempts, first=retry_first, most=retry_most)
                d.next_attempt_at = now + timedelta(seconds=delay)
            counts.setdefault(d.channel.kind, {"sent": 0, "failed": 0, "retried": 0})[counted] += 1
        Attempt.objects.bulk_create([Attempt(delivery=d, at=now, ok=by_id[str(d.pk)].ok,
                                             status_code=by_id[str(d.pk)].status_code, error=by_id[str(d.pk)].error,
                                             latency_ms=by_id[str(d.pk)].latency_ms) for d in rows])
        Delivery.objects.bulk_update(rows, ["attempts", "status_code", "error", "lease_owner", "lease_until",
                                            "status", "finished_at", "next_attempt_at"])
        for channel_kind, n in counts.items():
            _count(channel_kind, n)
    return rows


def _count(kind: str, n: dict[str, int]) -> None:
    Counter.objects.bulk_create([Counter(kind=kind)], ignore_conflicts=True)
    Counter.objects.filter(kind=kind).update(**{what: F(what) + k for what, k in n.items() if k})


def test_event(*, channel: Channel, lease: float) -> Claimed:
    """A test notification to one channel, leased to the caller, who sends it at once (the test-send button)."""
    now = timezone.now()
    with transaction.atomic():
        event = Event.objects.create(key=f"test:{channel.pk}", kind="test", severity="info",
                                     title=f"Test notification to {channel.name}",
                                     body="iotgw can reach this channel.", data={"test": True}, at=now)
        d = Delivery.objects.create(event=event, channel=channel, key=event.key, next_attempt_at=now, created_at=now,
                                    lease_owner=TEST_OWNER, lease_until=now + timedelta(seconds=lease))
    return Claimed(str(d.pk), channel, message_of(d))


def channel_test_send(*, channel: Channel, timeout: float, from_email: str,
                      allowed_hosts: Sequence[str] = ()) -> tuple[Delivery, Outcome]:
    """Send a test notification through the real channel now, once, and log it like any delivery."""
    claimed = test_event(channel=channel, lease=timeout + 5)
    outcome = send(channel, claimed.message, timeout=timeout, from_email=from_email, allowed_hosts=allowed_hosts)
    delivery = delivery_finish(delivery_id=claimed.delivery_id, outcome=outcome, max_attempts=1, retry_first=0,
                               retry_most=0)
    assert delivery is not None  # nobody else claims a test delivery: it was leased from the start
    return delivery, outcome


def outbox_prune(*, keep_days: float, limit: int = 1000, now: datetime | None = None) -> int:
    """Forget events older than `keep_days` with their deliveries and tries, unless one is still pending or an
    open alarm's reminders still need it: the outbox and its log stay bounded."""
    cutoff = (now or timezone.now()) - timedelta(days=keep_days)
    pending = Delivery.objects.filter(event_id=OuterRef("pk"), status=Delivery.PENDING)
    needed = KeyState.objects.filter(raised_by_id=OuterRef("pk"), open=True)
    with transaction.atomic():
        ids = list(Event.objects.filter(at__lt=cutoff).exclude(Exists(pending)).exclude(Exists(needed))
                   .values_list("pk", flat=True)[:limit])
        Event.objects.filter(pk__in=ids).delete()
    return len(ids)


def sender_heartbeat(*, owner: str, host: str) -> None:
    """Record that a sender is alive; a sender silent for a day is forgotten."""
    now = timezone.now()
    SenderHeartbeat.objects.update_or_create(owner=owner, defaults={"host": host[:64], "beat_at": now})
    SenderHeartbeat.objects.filter(beat_at__lt=now - timedelta(days=1)).delete()
