"""Presence over real processes: a device that falls silent is marked offline, dashboards hear it, commands wait."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from devices.models import BridgeHeartbeat, Command, Device
from devices.services.devices import device_register
from testing.http import basic, call
from testing.mqtt import MqttDevice
from testing.waiting import await_until
from testing.ws import Dashboard

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


@pytest.fixture
async def running(stack):
    await sync_to_async(stack.start_web)()
    await sync_to_async(stack.start_bridge)()
    return stack


def status_of(device_id: str, online: bool):
    return lambda f: f["type"] == "status" and f["device"] == device_id and f["online"] is online


async def test_an_http_only_device_goes_offline_when_silent_and_its_command_waits_queued(running, registry):
    staff = await sync_to_async(registry.user)("ops", staff=True)
    token = await sync_to_async(registry.token)(staff)
    device_id = f"http-{uuid.uuid4().hex[:6]}"
    _, secret = await sync_to_async(device_register)(device_id=device_id, offline_after=2)
    dash = await Dashboard.open(running.ws, token)
    await dash.subscribe([device_id])

    def ingest() -> None:
        reply = call("POST", f"{running.web}/api/ingest/{device_id}/telemetry", body={"v": 1},
                     headers=basic(device_id, secret))
        assert reply.status == 200, reply.body

    await sync_to_async(ingest)()
    await dash.next(status_of(device_id, True))
    # It never says `offline`: after its 2 s of silence the bridge marks it offline and the dashboard is told.
    frame = await dash.next(status_of(device_id, False), timeout=15)
    assert frame["ts"]
    assert (await sync_to_async(Device.objects.get)(pk=device_id)).online is False

    reply = await sync_to_async(call)("POST", f"{running.web}/api/devices/{device_id}/commands",
                                      body={"name": "reboot", "timeout": 5}, token=token)
    assert reply.status == 202, reply.body
    command_id = reply.json()["id"]
    # Several of the bridge's command sweeps (one a second) later, it still waits for the device.
    since = timezone.now()
    await await_until(lambda: BridgeHeartbeat.objects.filter(beat_at__gt=since + timedelta(seconds=3))
                      .exists(), what="three seconds of bridge sweeps")
    assert (await sync_to_async(Command.objects.get)(pk=command_id)).status == Command.QUEUED

    # Back, asking for its commands: online again, and the command is handed over in the answer.
    reply = await sync_to_async(call)("GET", f"{running.web}/api/ingest/{device_id}/commands/next?wait=5",
                                      headers=basic(device_id, secret))
    assert reply.status == 200 and reply.json()["id"] == command_id, reply.body
    await dash.next(status_of(device_id, True))
    await await_until(lambda: Command.objects.get(pk=command_id).status == Command.SENT, what="the command sent")
    await dash.close()


async def test_an_mqtt_device_that_vanishes_without_a_will_goes_offline(running, registry):
    token = await sync_to_async(registry.token)(await sync_to_async(registry.user)("watcher", staff=True))
    device_id = f"mq-{uuid.uuid4().hex[:6]}"
    await sync_to_async(device_register)(device_id=device_id, offline_after=2)
    dash = await Dashboard.open(running.ws, token)
    await dash.subscribe([device_id])
    # A device whose link died half-open looks like this to the gateway: no more messages, no `offline`.
    device = await sync_to_async(MqttDevice)(running.mqtt_url, device_id, will=False)
    await sync_to_async(device.telemetry)({"v": 1})
    await dash.next(status_of(device_id, True))
    await dash.next(status_of(device_id, False), timeout=15)
    assert (await sync_to_async(Device.objects.get)(pk=device_id)).online is False
    device.close()
    await dash.close()
