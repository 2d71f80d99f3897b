"""In-process sending for the notification tests: what the sender loop does, one round at a time."""

from __future__ import annotations

from notify.kinds import send
from notify.models import Channel, Subscription
from notify.services import delivery_claim, delivery_finish, reminders_sweep
from notify.signing import new_secret

FAST = {"max_attempts": 50, "retry_first": 0.05, "retry_most": 0.2}


def drain(owner: str = "test-sender", *, finish: dict | None = None, timeout: float = 2.0) -> int:
    """Sender rounds until one finds nothing due: the sweep, then every due delivery claimed, sent and recorded
    (a key's later event is due once its earlier one is done); how many tries were made."""
    tries = 0
    for _ in range(20):
        reminders_sweep()
        claimed = delivery_claim(owner=owner, lease=30, limit=100)
        for item in claimed:
            outcome = send(item.channel, item.message, timeout=timeout, from_email="iotgw@example.test")
            delivery_finish(delivery_id=item.delivery_id, outcome=outcome, **(finish or FAST))
        tries += len(claimed)
        if not claimed:
            break
    return tries


def webhook(url: str, name: str = "hook") -> Channel:
    return Channel.objects.create(name=name, kind=Channel.WEBHOOK, target=url, secret=new_secret())


def subscribe(channel: Channel, user, **fields) -> Subscription:
    return Subscription.objects.create(channel=channel, user=user, **fields)
