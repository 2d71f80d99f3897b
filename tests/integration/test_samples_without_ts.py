"""Samples without `ts` never collide with each other, however they arrive (SPEC §4, §5)."""

from __future__ import annotations

import json

import pytest

from devices.models import Telemetry
from testing.mqtt import MqttDevice
from testing.waiting import wait_until

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

ONE_SHOTS = 40
PIPELINED = 300
ARRAYS = 20


def test_every_sample_without_ts_is_stored(stack, registry):
    device_id, _ = registry.device("nots")
    stack.start_bridge()
    # One-shot publishers (connect, publish, disconnect), as a cron job or a shell script would.
    for n in range(ONE_SHOTS):
        device = MqttDevice(stack.mqtt_url, device_id, will=False)
        device.telemetry({"n": n})
        device.close()
    # One device publishing back to back: many messages land in one batch, with one receive time.
    device = MqttDevice(stack.mqtt_url, device_id, will=False)
    topic = f"devices/{device_id}/telemetry"
    infos = [device.client.publish(topic, json.dumps({"n": ONE_SHOTS + n}).encode(), qos=1)
             for n in range(PIPELINED)]
    first = ONE_SHOTS + PIPELINED
    infos += [device.client.publish(topic, json.dumps([{"n": first + 3 * k + i} for i in range(3)]).encode(), qos=1)
              for k in range(ARRAYS)]
    for info in infos:
        info.wait_for_publish(30)
    total = first + 3 * ARRAYS

    rows = Telemetry.objects.filter(device_id=device_id)
    wait_until(lambda: rows.count() >= total, timeout=30, what=f"{total} samples without ts")
    assert sorted(rows.values_list("data__n", flat=True)) == list(range(total))
    device.close()
