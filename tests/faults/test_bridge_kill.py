"""SIGKILL of the bridge mid-stream loses no QoS 1 sample and stores none twice (SPEC §5)."""

from __future__ import annotations

import threading

import pytest
from django.db.models import Count

from devices.models import Telemetry
from testing.mqtt import MqttDevice
from testing.waiting import wait_until

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

# Published as fast as the device can, so the bridge has a backlog in memory when it dies:
# that backlog is what an ack-before-commit bridge loses (this test fails with paho's auto-ack).
TOTAL = 10_000
BASE_TS = 1767225600000


def stored(device_id: str) -> int:
    return Telemetry.objects.filter(device_id=device_id).count()


def test_bridge_killed_mid_stream_stores_every_sample_exactly_once(stack, registry, private_broker):
    device_id, _ = registry.device("killtest")
    stack.env["MQTT_URL"] = private_broker.url
    bridge = stack.start_bridge()
    device = MqttDevice(private_broker.url, device_id)
    done = threading.Event()

    def publish_all() -> None:
        topic = f"devices/{device_id}/telemetry"
        infos = [device.client.publish(topic, b'{"ts": %d, "seq": %d}' % (BASE_TS + i, i), qos=1)
                 for i in range(TOTAL)]
        for info in infos:
            info.wait_for_publish(60)
        done.set()

    publisher = threading.Thread(target=publish_all)
    publisher.start()
    # Kill while the stream is in full flow: some samples stored, many still coming.
    wait_until(lambda: stored(device_id) >= TOTAL // 10, timeout=30, what="first samples stored")
    bridge.kill()
    assert stored(device_id) < TOTAL, "the stream finished before the kill: the test proves nothing"

    stack.start_bridge()
    assert done.wait(60), "the device could not publish everything"
    publisher.join()
    wait_until(lambda: stored(device_id) == TOTAL, timeout=90, what=f"all {TOTAL} samples stored")

    per_ts = Telemetry.objects.filter(device_id=device_id).values("ts").annotate(n=Count("ts"))
    assert all(row["n"] == 1 for row in per_ts)
    seqs = sorted(Telemetry.objects.filter(device_id=device_id).values_list("data__seq", flat=True))
    assert seqs == list(range(TOTAL))
    device.close()
