"""Two bridges share the device topics: each sample is stored once; a retired bridge's share is reclaimed."""

from __future__ import annotations

import subprocess
import sys

import pytest
from django.db.models import Count

from devices.models import BridgeHeartbeat, Telemetry
from tests.support import ROOT, MqttDevice, wait_until

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

BASE_TS = 1767225600000


def stored(device_id: str) -> int:
    return Telemetry.objects.filter(device_id=device_id).count()


def publish(device: MqttDevice, first: int, count: int) -> None:
    topic = f"devices/{device.device_id}/telemetry"
    infos = [device.client.publish(topic, b'{"ts": %d, "n": %d}' % (BASE_TS + i, i), qos=1)
             for i in range(first, first + count)]
    for info in infos:
        info.wait_for_publish(30)


def test_two_bridges_store_each_sample_once_and_a_retired_ones_share_is_reclaimed(stack, registry):
    device_id, _ = registry.device("shared")
    first = stack.env["MQTT_CLIENT_ID"]
    second = first + "-b"
    bridge_a = stack.start_bridge()
    stack.start_bridge(MQTT_CLIENT_ID=second)
    device = MqttDevice(stack.mqtt_url, device_id)

    publish(device, 0, 400)
    wait_until(lambda: stored(device_id) == 400, timeout=30, what="400 samples from two bridges")
    assert not Telemetry.objects.filter(device_id=device_id).values("ts").annotate(n=Count("id")).filter(n__gt=1)
    busy = BridgeHeartbeat.objects.filter(client_id__in=[first, second], counters__samples_stored__gt=0)
    wait_until(lambda: busy.count() == 2, timeout=10, what="both bridges took a share")

    # Bridge A goes away for good: the broker keeps queueing A's share until its session is dropped.
    bridge_a.kill()
    result = subprocess.run([sys.executable, "manage.py", "dropsession", first], cwd=ROOT, env=stack.env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    publish(device, 400, 100)
    wait_until(lambda: stored(device_id) == 500, timeout=30, what="every later sample, through bridge B alone")
    device.close()
