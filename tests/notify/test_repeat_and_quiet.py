"""Reminders while an alarm stays active, and the quiet period against flapping, per subscription."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from notify.models import Delivery
from notify.services import enqueue, reminders_sweep
from testing.waiting import wait_until
from testing.webhook import Receiver
from tests.notify.helpers import drain, subscribe, webhook

pytestmark = pytest.mark.django_db


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture
def ops(db):
    return User.objects.create_user("ops", is_staff=True)


def say(kind: str, at=None, key: str = "alarm:7"):
    return enqueue(key=key, kind=kind, severity="major", title="boiler hot", at=at)


def kinds(receiver: Receiver) -> list[str]:
    return [b["event"]["kind"] for b in receiver.bodies()]


def test_an_active_alarm_is_repeated_until_acknowledged(receiver, ops):
    subscribe(webhook(receiver.url), ops, repeat_every=1)
    say("raised")
    wait_until(lambda: drain() is not None and kinds(receiver).count("reminder") >= 2, timeout=10,
               what="two reminders a second apart")
    reminders = [b for b in receiver.bodies() if b["event"]["kind"] == "reminder"]
    assert [r["event"]["data"]["reminder"] for r in reminders[:2]] == [1, 2]
    assert all(r["event"]["key"] == "alarm:7" and r["event"]["title"] == "boiler hot" for r in reminders)
    say("acknowledged")
    drain()
    count = len(receiver.received)
    # Two more repeat intervals pass: an acknowledged alarm is not repeated.
    later = timezone.now() + timedelta(seconds=2)
    reminders_sweep(now=later)
    drain()
    assert len(receiver.received) == count and kinds(receiver)[-1] == "acknowledged"


def test_a_cleared_alarm_is_not_repeated(receiver, ops):
    subscribe(webhook(receiver.url), ops, repeat_every=1)
    t0 = timezone.now()
    say("raised", at=t0)
    say("cleared", at=t0)
    assert reminders_sweep(now=t0 + timedelta(seconds=5)) == 0
    drain()
    assert kinds(receiver) == ["raised", "cleared"]


def test_a_raise_within_the_quiet_period_after_a_clear_is_not_sent_again(receiver, ops):
    subscribe(webhook(receiver.url), ops, quiet_period=60)
    t0 = timezone.now() - timedelta(seconds=30)
    say("raised", at=t0)
    say("cleared", at=t0 + timedelta(seconds=1))
    flap = say("raised", at=t0 + timedelta(seconds=2))  # 1 s after the clear: flapping
    say("cleared", at=t0 + timedelta(seconds=3))
    say("raised", at=t0 + timedelta(seconds=4))
    drain()
    assert kinds(receiver) == ["raised", "cleared"]
    assert not Delivery.objects.filter(event=flap).exists()


def test_a_raise_held_back_by_the_quiet_period_is_sent_when_it_ends_if_still_active(receiver, ops):
    subscribe(webhook(receiver.url), ops, quiet_period=1)
    say("raised")
    say("cleared")
    say("raised")  # within the quiet period: held back, not lost
    drain()
    assert kinds(receiver) == ["raised", "cleared"]
    wait_until(lambda: drain() is not None and kinds(receiver) == ["raised", "cleared", "raised"], timeout=10,
               what="the held-back raise once the quiet period is over")


def test_a_raise_after_the_quiet_period_is_sent(receiver, ops):
    subscribe(webhook(receiver.url), ops, quiet_period=10)
    t0 = timezone.now() - timedelta(seconds=60)
    say("raised", at=t0)
    say("cleared", at=t0 + timedelta(seconds=1))
    say("raised", at=t0 + timedelta(seconds=20))
    drain()
    assert kinds(receiver) == ["raised", "cleared", "raised"]


def test_a_subscription_may_choose_its_kinds(receiver, ops):
    subscribe(webhook(receiver.url), ops, kinds=["raised"])
    say("raised")
    say("acknowledged")
    say("cleared")
    drain()
    assert kinds(receiver) == ["raised"]
