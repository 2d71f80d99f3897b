"""WebSocket devices in-process (WebsocketCommunicator): credentials, frames acked after the commit, bad frames
answered at once, commands down the socket and their responses, presence. Over real Daphne: tests/integration."""

from __future__ import annotations

import base64
import json

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.urls import path

from devices.models import Command, Device, Telemetry
from devices.notify import command_announce
from devices.services.commands import command_issue
from devices.services.devices import device_register
from protocols.auth import DeviceAuthMiddleware
from protocols.device_socket import CLOSE_REVOKED, DeviceConsumer, DeviceSocketConfig
from testing.waiting import await_until

pytestmark = pytest.mark.django_db(transaction=True)

CONFIG = DeviceSocketConfig(grace=0.2, ingest={"push_interval": 0.0, "sweep_interval": 0.2})


def application(config: DeviceSocketConfig = CONFIG):
    socket = DeviceAuthMiddleware(DeviceConsumer.as_asgi(config=config))
    return URLRouter([path("ws/device/", socket), path("ws/device/<str:device_id>/", socket)])


def basic(device_id: str, secret: str) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", b"Basic " + base64.b64encode(f"{device_id}:{secret}".encode()))]


async def connected(device_id: str, secret: str, **kwargs) -> WebsocketCommunicator:
    socket = WebsocketCommunicator(application(**kwargs), "/ws/device/", headers=basic(device_id, secret))
    ok, code = await socket.connect()
    assert ok, code
    return socket


async def next_of(socket: WebsocketCommunicator, kind: str, timeout: float = 10.0) -> dict:
    while True:
        frame = json.loads(await socket.receive_from(timeout=timeout))
        if frame["type"] == kind:
            return frame


@pytest.fixture
def device():
    owner = get_user_model().objects.create_user("owner", is_staff=True)
    _, secret = device_register(device_id="ws-1", owner=owner)
    return owner, secret


async def test_telemetry_is_acked_after_its_commit_and_the_device_is_online_over_ws(device):
    _, secret = device
    socket = await connected("ws-1", secret)
    await socket.send_to(text_data=json.dumps({"type": "telemetry", "ref": 7, "data": [{"t": 1}, {"t": 2}]}))
    ack = await next_of(socket, "ack")
    assert ack == {"type": "ack", "ref": 7}
    assert await sync_to_async(Telemetry.objects.filter(device_id="ws-1").count)() == 2, "stored before the ack"
    stored = await sync_to_async(Device.objects.get)(pk="ws-1")
    assert (stored.online, stored.transport) == (True, "ws")
    await socket.disconnect()


async def test_wrong_credentials_are_refused_at_the_handshake(device):
    for headers in (basic("ws-1", "wrong"), basic("nobody", "x"), []):
        socket = WebsocketCommunicator(application(), "/ws/device/", headers=headers)
        assert await socket.connect() == (False, CLOSE_REVOKED)


async def test_bearer_secret_works_on_the_device_path(device):
    _, secret = device
    socket = WebsocketCommunicator(application(), "/ws/device/ws-1/",
                                   headers=[(b"authorization", f"Bearer {secret}".encode())])
    ok, _ = await socket.connect()
    assert ok
    await socket.send_to(text_data='{"type": "ping"}')
    assert await next_of(socket, "pong") == {"type": "pong"}
    await socket.disconnect()


async def test_a_bad_frame_gets_its_error_at_once_and_the_next_frame_still_gets_in(device):
    _, secret = device
    socket = await connected("ws-1", secret)
    for bad, code in ((b"\xff", "not_json"), ('{"type": "telemetry", "ref": 1, "data": {"t": "x" * 300}}', None),
                      ('{"type": "telemetry", "ref": 2, "data": {"bad name!": 1}}', "bad_sample"),
                      ('{"type": "status", "online": "yes"}', "bad_status"), ('{"type": "hello"}', "bad_request")):
        if isinstance(bad, bytes):
            await socket.send_to(bytes_data=bad)
        else:
            await socket.send_to(text_data=bad.replace('"x" * 300', json.dumps("x" * 300)))
        error = await next_of(socket, "error")
        if code:
            assert error["code"] == code, error
    await socket.send_to(text_data='{"type": "telemetry", "ref": "ok", "data": {"t": 3}}')
    assert (await next_of(socket, "ack"))["ref"] == "ok"
    await socket.disconnect()


async def test_a_command_comes_down_the_socket_and_its_response_resolves_it(device):
    owner, secret = device
    socket = await connected("ws-1", secret)
    await await_until(lambda: Device.objects.get(pk="ws-1").transport == "ws", what="the device online over ws")
    command = await sync_to_async(command_issue)(user=owner, device_id="ws-1", name="reboot", params={"in": 1})
    await command_announce(get_channel_layer(), command, buckets=1)
    frame = await next_of(socket, "command")
    assert (frame["id"], frame["name"], frame["params"]) == (str(command.id), "reboot", {"in": 1})
    await await_until(lambda: Command.objects.get(pk=command.id).status == Command.SENT, what="sent")
    await socket.send_to(text_data=json.dumps({"type": "response", "ref": 9, "id": str(command.id),
                                               "status": "ok", "result": {"up": True}}))
    assert (await next_of(socket, "ack"))["ref"] == 9
    done = await sync_to_async(Command.objects.get)(pk=command.id)
    assert (done.status, done.result) == (Command.SUCCEEDED, {"up": True})
    await socket.disconnect()


async def test_the_closed_socket_makes_the_device_offline_after_the_grace_period(device):
    _, secret = device
    socket = await connected("ws-1", secret)
    await await_until(lambda: Device.objects.get(pk="ws-1").online, what="online while the socket is open")
    await socket.disconnect()
    await await_until(lambda: not Device.objects.get(pk="ws-1").online, what="offline after the grace period")
