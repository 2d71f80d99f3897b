"""Notifications: what `enqueue` adds to an alarm transition, and how fast `manage.py notify` empties the outbox.

`measure(env=…, logdir=…)` is the runner's interface (Django set up by the caller). Three phases
against a real webhook receiver on this machine (testing/webhook.py):

- enqueue: per-call time of `notify.services.enqueue` inside an open transaction (what an alarm
  transition adds to its own; the commit is the transition's), with 0, 1 and 20 matching
  subscriptions; its deliveries are then discarded;
- backlog: `events` deliveries waiting, one `manage.py notify` started: deliveries per second
  until the last is recorded `sent`;
- live: with the sender running, events at `rate`/s: enqueue → received at the receiver, p50/p99.
"""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path
from typing import Any

from bench.stats import percentile


def _setup(run: str, url: str, subscriptions: int) -> list[int]:
    from django.contrib.auth.models import User

    from notify.models import Channel, Subscription

    staff, _ = User.objects.get_or_create(username=f"bench-notify-{run}", defaults={"is_staff": True})
    Subscription.objects.filter(user=staff).delete()
    channels = [Channel.objects.create(name=f"bench-{run}-{len(Channel.objects.all())}", kind="webhook", target=url,
                                       secret="bench") for _ in range(subscriptions)]
    for c in channels:
        Subscription.objects.create(channel=c, user=staff, min_severity="info")
    return [c.pk for c in channels]


def _enqueue_cost(run: str, url: str, count: int) -> dict[str, Any]:
    from django.db import transaction

    from notify.models import Channel, Delivery
    from notify.services import enqueue

    out = {}
    for subs in (0, 1, 20):
        Channel.objects.filter(name__startswith=f"bench-{run}").update(enabled=False)
        _setup(run, url, subs)
        times = []
        for i in range(count):
            with transaction.atomic():  # the transition's: its commit is not enqueue's cost
                t0 = time.perf_counter()
                enqueue(key=f"bench:{run}:{subs}:{i % 50}", kind="raised" if i < 50 else "retriggered",
                        severity="major", title="bench", data={"i": i})
                times.append((time.perf_counter() - t0) * 1000)
        out[f"subscriptions_{subs}"] = {"p50_ms": round(percentile(times, 50), 3),
                                        "p99_ms": round(percentile(times, 99), 3)}
    Channel.objects.filter(name__startswith=f"bench-{run}").update(enabled=False)
    Delivery.objects.filter(channel__name__startswith=f"bench-{run}").delete()
    return out


def measure(*, env: dict[str, str], logdir: Path, events: int = 500, rate: float = 20.0, live_s: float = 5.0,
            enqueue_calls: int = 300) -> dict[str, Any]:
    from notify.models import Channel, Delivery
    from notify.services import enqueue
    from testing.processes import Process
    from testing.waiting import wait_until
    from testing.webhook import Receiver

    run = uuid.uuid4().hex[:6]
    Channel.objects.filter(name__startswith="bench-").update(enabled=False)  # earlier runs' subscribers
    receiver = Receiver().start()
    sender = None
    try:
        result: dict[str, Any] = {"enqueue": _enqueue_cost(run, receiver.url, enqueue_calls)}
        (channel,) = _setup(run, receiver.url, 1)
        for i in range(events):
            enqueue(key=f"bench:{run}:backlog:{i}", kind="raised", severity="major", title="backlog")
        t0 = time.monotonic()
        sender = Process("notify", [sys.executable, "manage.py", "notify"], dict(env, IOTGW_NOTIFY_INTERVAL="0.05"),
                         logdir / "notify-sender.log").start()
        wait_until(lambda: not Delivery.objects.filter(channel_id=channel, status="pending").exists(),
                   timeout=300, interval=0.05, what="the backlog sent")
        drained = time.monotonic() - t0  # includes the sender's start-up (Django setup, ~1 s)
        result["backlog"] = {"deliveries": events, "seconds": round(drained, 2),
                             "per_second": round(events / drained, 1), "received": len(receiver.received)}
        receiver.received.clear()
        sent_at: dict[str, float] = {}
        for i in range(int(rate * live_s)):
            key = f"bench:{run}:live:{i}"
            sent_at[key] = time.time()
            enqueue(key=key, kind="raised", severity="major", title="live")
            time.sleep(1 / rate)  # the offered rate: a load generator's pacing, not a wait for a condition
        wait_until(lambda: len(receiver.received) >= len(sent_at), timeout=60, what="the live events")
        latencies = [(r.at - sent_at[r.json()["event"]["key"]]) * 1000 for r in receiver.received]
        result["live"] = {"rate": rate, "events": len(sent_at), "p50_ms": round(percentile(latencies, 50), 1),
                          "p99_ms": round(percentile(latencies, 99), 1)}
        return result
    finally:
        if sender is not None:
            sender.stop()
        receiver.stop()
        Channel.objects.filter(name__startswith=f"bench-{run}").update(enabled=False)


def summary(result: dict[str, Any]) -> str:
    """The phase's lines for the console."""
    e, b, live = result["enqueue"], result["backlog"], result["live"]
    costs = ", ".join(f"{k.split('_')[1]} subs {v['p50_ms']}/{v['p99_ms']} ms" for k, v in e.items())
    return (f"   enqueue p50/p99: {costs}\n   backlog: {b['deliveries']} webhooks in {b['seconds']} s "
            f"({b['per_second']}/s)\n   live at {live['rate']}/s: enqueue → received p50/p99 "
            f"{live['p50_ms']}/{live['p99_ms']} ms")
