"""SIGKILL of the bridge right as it raises an alarm: the redelivered batch does not raise it twice, and an alarm
whose condition persists is not lost (docs/alarms.md, Restarts)."""

from __future__ import annotations

import threading

import pytest

from alarms.models import Alarm, AlarmEvent, AlarmRule
from devices.models import Telemetry
from testing.mqtt import MqttDevice
from testing.waiting import wait_until

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

TOTAL = 4000
BASE_TS = 1767225600000
# Samples are 1 s apart in sample time: the alarm is raised at the 600th, mid-stream.
DURATION = 600


def test_a_bridge_killed_as_it_raises_an_alarm_raises_it_once_after_its_restart(stack, registry, private_broker):
    device_id, _ = registry.device("hot")
    AlarmRule.objects.create(name="hot", kind="above", metric="t", high=50, duration=DURATION, device_id=device_id)
    stack.env["MQTT_URL"] = private_broker.url
    bridge = stack.start_bridge()
    device = MqttDevice(private_broker.url, device_id)
    done = threading.Event()

    def publish_all() -> None:
        topic = f"devices/{device_id}/telemetry"
        infos = [device.client.publish(topic, b'{"ts": %d, "t": 99}' % (BASE_TS + i * 1000), qos=1)
                 for i in range(TOTAL)]
        for info in infos:
            info.wait_for_publish(60)
        done.set()

    publisher = threading.Thread(target=publish_all)
    publisher.start()
    # Killed the moment the alarm is in the database: its batch is committed and most likely not yet acked.
    wait_until(lambda: Alarm.objects.filter(device_id=device_id).exists(), timeout=60, interval=0.005,
               what="the alarm raised")
    bridge.kill()
    stored_at_kill = Telemetry.objects.filter(device_id=device_id).count()
    assert stored_at_kill < TOTAL, "the stream finished before the kill: the test proves nothing"

    stack.start_bridge()
    assert done.wait(60), "the device could not publish everything"
    publisher.join()
    wait_until(lambda: Telemetry.objects.filter(device_id=device_id).count() == TOTAL, timeout=90,
               what=f"all {TOTAL} samples stored")
    # The restarted bridge evaluated the redelivered batch and the rest of the stream against the open alarm.
    assert list(AlarmEvent.objects.filter(alarm__device_id=device_id).values_list("kind", flat=True)) == ["raised"]
    alarm = Alarm.objects.get(device_id=device_id)
    assert alarm.state == Alarm.ACTIVE and alarm.retriggers == 0
    assert alarm.first_seen.timestamp() * 1000 == BASE_TS + DURATION * 1000
    device.close()
