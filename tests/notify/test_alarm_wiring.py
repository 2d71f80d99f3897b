"""Every alarm transition is told through the outbox written in its own transaction."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from alarms.models import AlarmRule
from alarms.services import alarm_acknowledge, alarm_clear, alarm_raise
from devices.services.devices import device_register
from notify.models import Delivery, Event
from testing.webhook import Receiver
from tests.notify.helpers import drain, subscribe, webhook

pytestmark = pytest.mark.django_db


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


def test_raise_acknowledge_and_clear_of_an_alarm_reach_a_subscribed_webhook(receiver):
    owner = User.objects.create_user("owner")
    device = device_register(device_id="boiler", owner=owner)[0]
    rule = AlarmRule.objects.create(name="hot", kind="above", metric="temp", high=30, device=device,
                                    severity="critical")
    subscribe(webhook(receiver.url), owner)
    alarm = alarm_raise(rule=rule, device_id="boiler", at=timezone.now(), value=31.5, message="temp 31.5 > 30").alarm
    alarm_acknowledge(user=owner, alarm_id=alarm.pk, note="on my way")
    alarm_clear(user=owner, alarm_id=alarm.pk, note="fixed")
    drain()
    events = [b["event"] for b in receiver.bodies()]
    assert [(e["kind"], e["key"], e["severity"], e["device"]) for e in events] == [
        (kind, f"alarm:{alarm.pk}", "critical", "boiler") for kind in ("raised", "acknowledged", "cleared")]
    assert events[0]["title"] == "hot on boiler" and events[0]["body"] == "temp 31.5 > 30"
    assert events[0]["data"]["value"] == 31.5 and events[1]["data"]["by"] == "owner"
    assert events[1]["data"]["note"] == "on my way"


def test_a_transition_rolled_back_sends_nothing(receiver):
    owner = User.objects.create_user("owner")
    device = device_register(device_id="boiler", owner=owner)[0]
    rule = AlarmRule.objects.create(name="hot", kind="above", metric="temp", high=30, device=device)
    subscribe(webhook(receiver.url), owner)
    with pytest.raises(RuntimeError), transaction.atomic():
        alarm_raise(rule=rule, device_id="boiler", at=timezone.now(), value=31.0)
        raise RuntimeError("the batch failed after the alarm was raised")
    assert not Event.objects.exists() and not Delivery.objects.exists()
