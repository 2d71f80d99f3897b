"""Two bridges share the device topics: each sample is stored once; a dead one shows, and retiring it loses nothing."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from django.db.models import Count

from devices.models import BridgeHeartbeat, Telemetry
from testing.http import http_get
from testing.mqtt import MqttDevice
from testing.processes import ROOT
from testing.waiting import wait_until

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


def readyz(web: str) -> tuple[int, dict]:
    status, body = http_get(web + "/readyz")
    return status, json.loads(body or b"{}")


def bridge_live(web: str, client_id: str) -> float | None:
    found = re.search(r'^iotgw_bridge_live\{bridge="' + re.escape(client_id) + r'"\} (\S+)$',
                      http_get(web + "/metrics")[1].decode(), re.M)
    return found and float(found.group(1))


def test_two_bridges_store_each_sample_once_and_retiring_a_dead_one_stores_its_share(stack, registry):
    device_id, _ = registry.device("shared")
    first = stack.env["MQTT_CLIENT_ID"]
    second = first + "-b"
    stack.start_web()
    bridge_a = stack.start_bridge()
    stack.start_bridge(MQTT_CLIENT_ID=second)
    device = MqttDevice(stack.mqtt_url, device_id)

    publish(device, 0, 400)
    wait_until(lambda: stored(device_id) == 400, timeout=30, what="400 samples from two bridges")
    busy = BridgeHeartbeat.objects.filter(client_id__in=[first, second], counters__samples_stored__gt=0)
    wait_until(lambda: busy.count() == 2, timeout=10, what="both bridges took a share")
    wait_until(lambda: readyz(stack.web)[0] == 200, what="ready with two live bridges")

    # Bridge A dies: the broker goes on queueing A's share in A's session, and the gateway says so.
    bridge_a.kill()
    publish(device, 400, 200)
    wait_until(lambda: readyz(stack.web)[1].get("silent_bridges") == [first], timeout=30,
               what="readiness naming the silent bridge")
    status, body = readyz(stack.web)
    assert status == 503 and body["checks"] == {"database": True, "schema": True, "channel_layer": True, "bridge": True,
                                                "no_silent_bridge": False}
    assert bridge_live(stack.web, first) == 0 and bridge_live(stack.web, second) == 1
    assert stored(device_id) < 600, "the dead bridge's share is waiting in its session"

    result = subprocess.run([sys.executable, "manage.py", "dropsession", first], cwd=ROOT, env=stack.env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert stored(device_id) == 600, "dropsession stored the dead bridge's share before removing its session"
    publish(device, 600, 100)
    wait_until(lambda: stored(device_id) == 700, timeout=30, what="every later sample, through bridge B alone")
    assert not Telemetry.objects.filter(device_id=device_id).values("ts").annotate(n=Count("ts")).filter(n__gt=1)
    wait_until(lambda: readyz(stack.web)[0] == 200, what="ready again once the dead bridge is retired")
    assert bridge_live(stack.web, first) is None
    device.close()
