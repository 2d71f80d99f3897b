"""/metrics shows notifications sent, failed, retried and pending per channel kind, from the database."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from notify.models import Delivery
from notify.services import enqueue
from testing.webhook import Receiver
from tests.notify.helpers import drain, subscribe, webhook

pytestmark = pytest.mark.django_db


def metric(body: str, name: str, kind: str) -> float:
    found = re.search(rf'^{name}\{{channel_kind="{kind}"\}} (\S+)$', body, re.M)
    assert found, name
    return float(found.group(1))


def test_metrics_count_notifications_per_channel_kind():
    receiver = Receiver()
    ops = User.objects.create_user("ops", is_staff=True)
    subscribe(webhook(receiver.url), ops)
    enqueue(key="alarm:1", kind="raised", severity="major", title="t")
    enqueue(key="alarm:2", kind="raised", severity="major", title="t")
    drain(finish={"max_attempts": 5, "retry_first": 60, "retry_most": 60})  # down: both retried later
    body = Client().get("/metrics").content.decode()
    assert metric(body, "iotgw_notifications_retried_total", "webhook") == 2
    assert metric(body, "iotgw_notifications_pending", "webhook") == 2
    assert metric(body, "iotgw_notifications_sent_total", "email") == 0
    receiver.start()
    try:
        Delivery.objects.update(next_attempt_at=timezone.now())  # their back-off is over
        drain()
    finally:
        receiver.stop()
    body = Client().get("/metrics").content.decode()
    assert metric(body, "iotgw_notifications_sent_total", "webhook") == 2
    assert metric(body, "iotgw_notifications_pending", "webhook") == 0
    assert metric(body, "iotgw_notifications_failed_total", "webhook") == 0
