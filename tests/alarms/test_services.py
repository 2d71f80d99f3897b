"""The alarm lifecycle through its services, on the real database: one open alarm per (rule, device), every
transition stored."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from alarms.models import Alarm, AlarmEvent, AlarmRule, AlarmRuleVersion
from alarms.services import (
    alarm_acknowledge,
    alarm_clear,
    alarm_clear_condition,
    alarm_raise,
    alarm_retrigger,
    transition,
)
from core.errors import AlarmUnknown, Conflict
from devices.services.devices import device_register

pytestmark = pytest.mark.django_db


@pytest.fixture
def device():
    owner = User.objects.create_user("owner")
    return device_register(device_id="d1", owner=owner)[0]


@pytest.fixture
def rule(device):
    return AlarmRule.objects.create(name="hot", kind="above", metric="temp", high=30, high_clear=25, device=device)


def test_a_second_raise_of_an_open_alarm_is_refused_by_the_database(rule, device):
    now = timezone.now()
    first = alarm_raise(rule=rule, device_id=device.id, at=now, value=31.0)
    assert first is not None and first.alarm.state == Alarm.ACTIVE
    assert alarm_raise(rule=rule, device_id=device.id, at=now, value=32.0) is None
    assert Alarm.objects.count() == 1
    assert list(AlarmEvent.objects.values_list("kind", "value")) == [("raised", 31.0)]


def test_the_lifecycle_stores_every_transition_with_its_time_and_author(rule, device):
    t0 = timezone.now()
    alarm = alarm_raise(rule=rule, device_id=device.id, at=t0, value=31.0).alarm
    alarm_acknowledge(user=device.owner, alarm_id=alarm.pk, note="on it")
    changed = alarm_retrigger(rule_id=rule.pk, device_id=device.id, at=t0 + timedelta(seconds=5), value=33.0)
    assert changed.alarm.state == Alarm.ACTIVE and changed.alarm.retriggers == 1
    alarm_clear_condition(rule_id=rule.pk, device_id=device.id, at=t0 + timedelta(seconds=9), value=20.0)
    alarm.refresh_from_db()
    assert alarm.state == Alarm.CLEARED and alarm.value == 33.0 and alarm.last_seen == t0 + timedelta(seconds=5)
    events = list(alarm.events.values_list("kind", "by__username", "note"))
    assert events == [("raised", None, ""), ("acknowledged", "owner", "on it"), ("retriggered", None, ""),
                      ("cleared", None, "the condition ended")]
    # Cleared: the next raise opens a new alarm.
    assert alarm_raise(rule=rule, device_id=device.id, at=t0 + timedelta(seconds=10), value=40.0) is not None
    assert Alarm.objects.count() == 2


def test_acknowledge_and_clear_refuse_what_the_state_forbids(rule, device):
    alarm = alarm_raise(rule=rule, device_id=device.id, at=timezone.now()).alarm
    alarm_clear(user=device.owner, alarm_id=alarm.pk, note="fixed the fan")
    with pytest.raises(Conflict):
        alarm_acknowledge(user=device.owner, alarm_id=alarm.pk)
    with pytest.raises(Conflict):
        alarm_clear(user=device.owner, alarm_id=alarm.pk)


def test_an_alarm_of_a_device_the_user_may_not_see_is_unknown(rule, device):
    alarm = alarm_raise(rule=rule, device_id=device.id, at=timezone.now()).alarm
    stranger = User.objects.create_user("stranger")
    with pytest.raises(AlarmUnknown):
        alarm_acknowledge(user=stranger, alarm_id=alarm.pk)
    assert Alarm.objects.get(pk=alarm.pk).state == Alarm.ACTIVE


@pytest.mark.django_db(transaction=True)
def test_a_transition_outside_a_transaction_is_refused(rule, device):
    alarm = alarm_raise(rule=rule, device_id=device.id, at=timezone.now()).alarm
    with pytest.raises(RuntimeError):
        transition(alarm=alarm, kind="cleared", at=timezone.now())
    with transaction.atomic():
        transition(alarm=alarm, kind="cleared", at=timezone.now())


def test_a_rule_is_validated_on_every_save(device):
    with pytest.raises(ValidationError):
        AlarmRule.objects.create(name="bad", kind="above", metric="temp", high=30, high_clear=35)
    with pytest.raises(ValidationError):
        AlarmRule.objects.create(name="both", kind="offline", device=device, group=Group.objects.create(name="g"))
    with pytest.raises(ValidationError):
        AlarmRule.objects.create(name="silent", kind="inactivity")


def test_every_rule_change_bumps_the_version_bridges_poll(device):
    def version() -> int:
        row = AlarmRuleVersion.objects.filter(pk=1).first()
        return row.version if row else 0

    start = version()
    rule = AlarmRule.objects.create(name="r", kind="offline")
    rule.severity = "critical"
    rule.save()
    device.groups.add(Group.objects.create(name="g"))
    rule.delete()
    assert version() == start + 4


def test_deleting_a_rule_clears_its_open_alarms_and_keeps_their_history(rule, device):
    alarm = alarm_raise(rule=rule, device_id=device.id, at=timezone.now()).alarm
    rule.delete()
    alarm.refresh_from_db()
    assert alarm.state == Alarm.CLEARED and alarm.rule_id is None and alarm.rule_name == "hot"
    assert alarm.events.last().note == "its rule was deleted"


def test_metrics_count_alarms_raised_and_cleared_and_open_ones_by_severity(rule, device, settings):
    import re

    from django.test import Client

    from api.metrics import alarms_collector

    settings.IOTGW_METRICS_COUNT_SECONDS = 0
    alarm = alarm_raise(rule=rule, device_id=device.id, at=timezone.now()).alarm
    body = Client().get("/metrics").content.decode()
    assert re.search(r'^iotgw_alarms_open\{severity="major"\} 1\.0$', body, re.M)
    alarm_clear(user=device.owner, alarm_id=alarm.pk)
    alarms_collector._counted_at = float("-inf")
    body = Client().get("/metrics").content.decode()
    assert re.search(r'^iotgw_alarm_transitions_total\{kind="raised"\} 1\.0$', body, re.M)
    assert re.search(r'^iotgw_alarm_transitions_total\{kind="cleared"\} 1\.0$', body, re.M)
    assert re.search(r'^iotgw_alarms_open\{severity="major"\} 0\.0$', body, re.M)
