"""/metrics in-process: what stateful profiles counted (Sparkplug's seq gaps, rebirths, skipped metrics) per bridge."""

from __future__ import annotations

import pytest
from django.test import Client
from django.utils import timezone

from devices.models import BridgeHeartbeat

pytestmark = pytest.mark.django_db


def test_profile_events_of_each_bridge_are_exported():
    BridgeHeartbeat.objects.create(client_id="b1", beat_at=timezone.now(), connected=True, counters={
        "received": 3, "profile_events": {"sparkplug_seq_gap": 2, "sparkplug_skipped_unsupported_type": 5}})
    body = Client().get("/metrics").content.decode()
    assert 'iotgw_profile_events_total{bridge="b1",event="sparkplug_seq_gap"} 2.0' in body
    assert 'iotgw_profile_events_total{bridge="b1",event="sparkplug_skipped_unsupported_type"} 5.0' in body
