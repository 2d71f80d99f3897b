"""Who may open the dashboard socket, and what they see: own devices and shared groups only."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async
from django.test import Client
from websockets.exceptions import InvalidStatus

from tests.support import Dashboard, MqttDevice

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def people(registry):
    """Alice owns a1 and shares group `lab` with Bob's b-lab; Bob also owns b-own; staff sees all."""
    alice, bob, staff = registry.user("alice"), registry.user("bob"), registry.user("ops", staff=True)
    lab = f"lab-{registry.tag}"
    from django.contrib.auth.models import Group

    alice.groups.add(Group.objects.get_or_create(name=lab)[0])
    devices = {
        "a1": registry.device("a1", owner=alice)[0],
        "b_lab": registry.device("blab", owner=bob, groups=[lab])[0],
        "b_own": registry.device("bown", owner=bob)[0],
    }
    tokens = {u: registry.token(user) for u, user in (("alice", alice), ("bob", bob), ("staff", staff))}
    client = Client()
    client.force_login(alice)
    return devices, tokens, client.cookies["sessionid"].value


async def test_handshake_without_credentials_is_refused(stack, people):
    await sync_to_async(stack.start_web)()
    with pytest.raises(InvalidStatus) as refused:
        await Dashboard.open(stack.ws)
    assert refused.value.response.status_code == 403


async def test_wrong_token_is_refused(stack, people):
    await sync_to_async(stack.start_web)()
    with pytest.raises(InvalidStatus):
        await Dashboard.open(stack.ws, "iotgw_not-a-real-token")


async def test_user_sees_only_owned_and_group_shared_devices(stack, people):
    devices, tokens, _ = people
    await sync_to_async(stack.start_web)()
    await sync_to_async(stack.start_bridge)()
    alice = await Dashboard.open(stack.ws, tokens["alice"])
    snapshot = await alice.subscribe("*")
    assert sorted(d["id"] for d in snapshot["devices"]) == sorted([devices["a1"], devices["b_lab"]])

    await alice.send({"type": "subscribe", "devices": [devices["b_own"]], "ref": "peek"})
    error = await alice.next(lambda f: f["type"] == "error")
    assert error["code"] == "forbidden" and error["ref"] == "peek"

    # Bob's private device publishes first, then a shared one: Alice gets only the shared one.
    hidden = await sync_to_async(MqttDevice)(stack.mqtt_url, devices["b_own"])
    shared = await sync_to_async(MqttDevice)(stack.mqtt_url, devices["b_lab"])
    await sync_to_async(hidden.telemetry)({"secret": 1})
    await sync_to_async(shared.telemetry)({"shared": 2})
    items = await alice.telemetry_until(1, devices["b_lab"])
    assert items[0]["data"] == {"shared": 2}
    assert all(i["device"] != devices["b_own"] for f in alice.frames if f["type"] == "telemetry" for i in f["items"])

    staff = await Dashboard.open(stack.ws, tokens["staff"])
    snapshot = await staff.subscribe("*")
    assert set(devices.values()) <= {d["id"] for d in snapshot["devices"]}
    hidden.close()
    shared.close()
    await alice.close()
    await staff.close()


async def test_session_cookie_needs_an_allowed_origin(stack, people):
    _, _, session = people
    await sync_to_async(stack.start_web)()
    cookie = {"Cookie": f"sessionid={session}"}
    with pytest.raises(InvalidStatus):
        await Dashboard.open(stack.ws, additional_headers=cookie, origin="http://evil.example")
    dash = await Dashboard.open(stack.ws, additional_headers=cookie, origin="http://127.0.0.1")
    await dash.send({"type": "ping"})
    assert (await dash.next())["type"] == "pong"
    await dash.close()


async def test_idle_socket_survives_past_the_redis_read_timeout(stack, people):
    """redis-py 8's 5 s socket timeout once broke idle receivers (channels_redis#422)."""
    devices, tokens, _ = people
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
