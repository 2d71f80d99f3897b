"""The notification reads: counters for /metrics, the delivery log, what the API may show of a channel."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.db.models import Count
from django.utils import timezone

from notify.models import Channel, Counter, Delivery, SenderHeartbeat


@dataclass(frozen=True)
class KindCounts:
    """Totals of one channel kind."""

    sent: int = 0
    failed: int = 0
    retried: int = 0
    pending: int = 0


def notification_counts() -> dict[str, KindCounts]:
    """Sent, failed, retried (since the start) and pending (now) per channel kind, every kind present."""
    counters = {c.kind: c for c in Counter.objects.all()}
    pending = dict(Delivery.objects.filter(status=Delivery.PENDING).values_list("channel__kind")
                   .annotate(n=Count("pk")).order_by())
    out = {}
    for kind, _label in Channel.KINDS:
        c = counters.get(kind)
        out[kind] = KindCounts(sent=c.sent if c else 0, failed=c.failed if c else 0, retried=c.retried if c else 0,
                               pending=pending.get(kind, 0))
    return out


def target_shown(channel: Channel) -> str:
    """A channel's target as the API shows it after creation: an Apprise URL holds a token, so only its scheme."""
    if channel.kind == Channel.APPRISE:
        return channel.target.split("://", 1)[0] + "://…"
    return channel.target


def channels_all() -> list[Channel]:
    """Every channel, by name."""
    return list(Channel.objects.order_by("name"))


SENDER_FRESH = 30.0  # seconds: a sender beats every 5


def senders_live(*, host: str | None = None) -> int:
    """Senders (of this host, or of all) whose heartbeat is fresh."""
    qs = SenderHeartbeat.objects.filter(beat_at__gte=timezone.now() - timedelta(seconds=SENDER_FRESH))
    return qs.filter(host=host).count() if host is not None else qs.count()
