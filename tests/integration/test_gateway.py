"""The all-in-one `manage.py gateway`: no Redis, no broker configured, still end to end."""

from __future__ import annotations

import shutil
import sys

import pytest
from asgiref.sync import sync_to_async

from devices.models import Telemetry
from testing.http import http_get
from testing.mqtt import MqttDevice
from testing.processes import ROOT, free_port, stack_env
from testing.waiting import wait_until
from testing.ws import Dashboard

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def gateway(live_db, processes, run_id):
    """A gateway process with the embedded broker and the in-memory channel layer."""
    env = stack_env(database_url=live_db, redis_url=None, mqtt_url=None, run_id=run_id)
    web, mqtt_port = free_port(), free_port()
    proc = processes.start("gateway", [sys.executable, "manage.py", "gateway", "--port", str(web),
                                       "--mqtt-port", str(mqtt_port)], env)

    def ready():
        assert proc.alive(), proc.output()
        return http_get(f"http://127.0.0.1:{web}/readyz")[0] == 200

    wait_until(ready, timeout=40, what="gateway ready")
    yield web, f"mqtt://127.0.0.1:{mqtt_port}", proc
    proc.stop()
    shutil.rmtree(ROOT / "var" / f"mosquitto-{mqtt_port}", ignore_errors=True)


@pytest.fixture
def owned(registry):
    user = registry.user("solo")
    return registry.token(user), registry.device("laptop", owner=user)


async def test_gateway_without_redis_or_broker_carries_a_publish_to_a_dashboard(owned, gateway):
    web, mqtt_url, proc = gateway
    token, (device_id, secret) = owned
    assert "embedded" in proc.output() and "in-memory" in proc.output()
    dash = await Dashboard.open(f"ws://127.0.0.1:{web}/ws/dashboard/", token)
    await dash.subscribe([device_id])
    device = await sync_to_async(MqttDevice)(mqtt_url, device_id, protocol=4, password=secret)
    await sync_to_async(device.telemetry)({"ts": "2026-03-04T05:06:07+01:00", "lux": 310})

    items = await dash.telemetry_until(1, device_id)
    assert items[0]["data"] == {"lux": 310}
    assert items[0]["ts"].startswith("2026-03-04T04:06:07")
    assert await sync_to_async(Telemetry.objects.filter(device_id=device_id).count)() == 1
    device.close()
    await dash.close()
