"""Who may open the dashboard socket, and what they see: own devices and shared groups only."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.test import Client
from websockets.exceptions import InvalidStatus

from testing.mqtt import MqttDevice
from testing.ws import Dashboard

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def ids(people):
    """The shared fleet's device ids by name (the `people` fixture of tests/conftest.py)."""
    return {name: device_id for name, (device_id, _secret) in people[0].items()}


@pytest.fixture
def alice_session(people) -> str:
    """A session cookie value of a logged-in Alice."""
    client = Client()
    client.force_login(get_user_model().objects.get(username=f"alice-{people[2].tag}"))
    return client.cookies["sessionid"].value


async def test_handshake_without_credentials_is_refused(stack, people):
    await sync_to_async(stack.start_web)()
    with pytest.raises(InvalidStatus) as refused:
        await Dashboard.open(stack.ws)
    assert refused.value.response.status_code == 403


async def test_wrong_token_is_refused(stack, people):
    await sync_to_async(stack.start_web)()
    with pytest.raises(InvalidStatus):
        await Dashboard.open(stack.ws, "iotgw_not-a-real-token")


async def test_user_sees_only_owned_and_group_shared_devices(stack, people, ids):
    devices, tokens = ids, people[1]
    await sync_to_async(stack.start_web)()
    await sync_to_async(stack.start_bridge)()
    alice = await Dashboard.open(stack.ws, tokens["alice"])
    snapshot = await alice.subscribe("*")
    assert sorted(d["id"] for d in snapshot["devices"]) == sorted([devices["a1"], devices["blab"]])

    # Bob's private device is answered exactly like one that does not exist.
    await alice.send({"type": "subscribe", "devices": [devices["bown"]], "ref": "peek"})
    hidden = await alice.next(lambda f: f["type"] == "error")
    await alice.send({"type": "subscribe", "devices": ["ghost-device"], "ref": "peek"})
    missing = await alice.next(lambda f: f["type"] == "error")
    assert hidden["code"] == "unknown_device" and hidden["ref"] == "peek"
    assert {**hidden, "message": hidden["message"].replace(devices["bown"], "ID")} == {
        **missing, "message": missing["message"].replace("ghost-device", "ID")}

    # Bob's private device publishes first, then a shared one: Alice gets only the shared one.
    hidden = await sync_to_async(MqttDevice)(stack.mqtt_url, devices["bown"])
    shared = await sync_to_async(MqttDevice)(stack.mqtt_url, devices["blab"])
    await sync_to_async(hidden.telemetry)({"secret": 1})
    await sync_to_async(shared.telemetry)({"shared": 2})
    items = await alice.telemetry_until(1, devices["blab"])
    assert items[0]["data"] == {"shared": 2}
    assert all(i["device"] != devices["bown"] for f in alice.frames if f["type"] == "telemetry" for i in f["items"])

    staff = await Dashboard.open(stack.ws, tokens["ops"])
    snapshot = await staff.subscribe("*")
    assert set(devices.values()) <= {d["id"] for d in snapshot["devices"]}
    hidden.close()
    shared.close()
    await alice.close()
    await staff.close()


async def test_session_cookie_needs_the_sites_own_origin(stack, alice_session):
    session = alice_session
    await sync_to_async(stack.start_web)()
    cookie = {"Cookie": f"sessionid={session}"}
    port = stack.web_port
    # Scheme, host and port must all be the site's own (as Django's CSRF check has it).
    for origin in ("http://evil.example", "http://127.0.0.1:9999", "https://localhost", f"https://127.0.0.1:{port}",
                   "http://127.0.0.1", f"http://localhost:{port}"):
        with pytest.raises(InvalidStatus) as refused:
            await Dashboard.open(stack.ws, additional_headers=cookie, origin=origin)
        assert refused.value.response.status_code == 403, origin
    dash = await Dashboard.open(stack.ws, additional_headers=cookie, origin=stack.web)
    await dash.send({"type": "ping"})
    assert (await dash.next())["type"] == "pong"
    await dash.close()


async def test_idle_socket_survives_past_the_redis_read_timeout(stack, people, ids):
    """redis-py 8's 5 s socket timeout once broke idle receivers (channels_redis#422)."""
    devices, tokens = ids, people[1]
    await sync_to_async(stack.start_web)()
    await sync_to_async(stack.start_bridge)()
    dash = await Dashboard.open(stack.ws, tokens["alice"])
    await dash.subscribe([devices["a1"]])
    await asyncio.sleep(7)  # the point of the test: stay idle longer than 5 s
    device = await sync_to_async(MqttDevice)(stack.mqtt_url, devices["a1"])
    await sync_to_async(device.telemetry)({"after_idle": 1})
    items = await dash.telemetry_until(1, devices["a1"])
    assert items[0]["data"] == {"after_idle": 1}
    device.close()
    await dash.close()
