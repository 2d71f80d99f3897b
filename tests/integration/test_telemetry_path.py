"""Device → MQTT → bridge → database and dashboards, over real Mosquitto, Redis, Daphne and the database."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from devices.models import Device, Telemetry
from testing.mqtt import MqttDevice
from testing.waiting import await_until
from testing.ws import Dashboard

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def owner_and_device(registry):
    user = registry.user("owner")
    device_id, secret = registry.device("sensor", owner=user)
    return user, registry.token(user), device_id


async def test_published_sample_reaches_dashboard_and_database(stack, owner_and_device):
    _, token, device_id = owner_and_device
    await sync_to_async(stack.start_web)()
    await sync_to_async(stack.start_bridge)()
    dash = await Dashboard.open(stack.ws, token)
    snapshot = await dash.subscribe([device_id])
    assert [d["id"] for d in snapshot["devices"]] == [device_id]

    device = await sync_to_async(MqttDevice)(stack.mqtt_url, device_id)
    await sync_to_async(device.telemetry)({"ts": "2026-01-02T03:04:05.678+00:00", "temp": 21.5, "door": True})

    items = await dash.telemetry_until(1, device_id)
    assert items[0]["data"] == {"temp": 21.5, "door": True}
    assert items[0]["ts"].startswith("2026-01-02T03:04:05.678")
    row = await sync_to_async(Telemetry.objects.get)(device_id=device_id)
    assert row.data == {"temp": 21.5, "door": True}
    stored = await sync_to_async(Device.objects.get)(pk=device_id)
    assert stored.latest["temp"]["value"] == 21.5 and stored.last_seen is not None
    device.close()
    await dash.close()


async def test_status_and_last_will_drive_online(stack, owner_and_device):
    _, token, device_id = owner_and_device
    await sync_to_async(stack.start_web)()
    await sync_to_async(stack.start_bridge)()
    dash = await Dashboard.open(stack.ws, token)
    await dash.subscribe([device_id])

    device = await sync_to_async(MqttDevice)(stack.mqtt_url, device_id)
    await sync_to_async(device.publish)("status", "online", retain=True)
    frame = await dash.next(lambda f: f["type"] == "status")
    assert frame["device"] == device_id and frame["online"] is True

    # An abrupt loss: the broker publishes the device's Last Will, a retained `offline`.
    device.client.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, "Disconnect with will message"))
    frame = await dash.next(lambda f: f["type"] == "status" and f["online"] is False)
    assert frame["device"] == device_id
    await await_until(lambda: not Device.objects.get(pk=device_id).online, what="offline stored")
    device.client.loop_stop()
    await dash.close()


async def test_reconnecting_dashboard_gets_fresh_snapshot(stack, owner_and_device):
    _, token, device_id = owner_and_device
    await sync_to_async(stack.start_web)()
    await sync_to_async(stack.start_bridge)()
    device = await sync_to_async(MqttDevice)(stack.mqtt_url, device_id)
    await sync_to_async(device.telemetry)({"ts": 1767225600000, "rpm": 1200})
    await await_until(lambda: Telemetry.objects.filter(device_id=device_id).exists(), what="sample stored")

    dash = await Dashboard.open(stack.ws, token)
    snapshot = await dash.subscribe([device_id])
    assert snapshot["devices"][0]["latest"] == {"rpm": 1200}
    assert snapshot["devices"][0]["online"] is True
    device.close()
    await dash.close()
