"""WebSocket devices against a real Daphne with the real `websockets` client: telemetry stored and pushed live,
presence, a command round trip, bad frames answered while others get in, and a web restart losing nothing acked."""

from __future__ import annotations

import asyncio
import contextlib
import signal

import pytest
import websockets
from asgiref.sync import sync_to_async

from devices.models import Command, Device, Telemetry
from testing.http import call
from testing.waiting import await_until
from testing.ws import Dashboard, WsDevice

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


@pytest.fixture
async def web(stack):
    await sync_to_async(stack.start_web)()
    return stack


@pytest.fixture
async def fleet(registry):
    staff = await sync_to_async(registry.user)("ops", staff=True)
    token = await sync_to_async(registry.token)(staff)
    devices = [await sync_to_async(registry.device)(f"ws{i}", owner=staff) for i in range(2)]
    return token, devices


def telemetry_of(device_id: str):
    return lambda f: f["type"] == "telemetry" and any(i["device"] == device_id for i in f["items"])


async def test_telemetry_over_a_device_socket_is_stored_acked_and_live_on_the_dashboard(web, fleet):
    token, [(device_id, secret), _] = fleet
    dash = await Dashboard.open(web.ws, token)
    await dash.subscribe([device_id])
    device = await WsDevice.open(web.ws_device, device_id, secret)
    status = await dash.next(lambda f: f["type"] == "status" and f["device"] == device_id)
    assert status["online"] is True, "the open socket is the device's presence"
    ref = await device.send("telemetry", data=[{"temp": 21.5}, {"temp": 21.7}])
    assert await device.next(lambda f: f["type"] == "ack") == {"type": "ack", "ref": ref}
    frame = await dash.next(telemetry_of(device_id))
    assert {i["data"]["temp"] for i in frame["items"] if i["device"] == device_id} <= {21.5, 21.7}
    stored = await sync_to_async(Device.objects.get)(pk=device_id)
    assert (stored.transport, stored.latest["temp"]["value"]) == ("ws", 21.7)
    reply = await sync_to_async(call)("GET", f"{web.web}/api/devices/{device_id}", token=token)
    assert reply.json()["transport"] == "ws"
    await device.close()
    await dash.close()


async def test_wrong_device_credentials_are_refused_with_401(web, fleet):
    _, [(device_id, _), _] = fleet
    with pytest.raises(websockets.InvalidStatus) as refused:
        await WsDevice.open(web.ws_device, device_id, "not-its-secret")
    assert refused.value.response.status_code == 401


async def test_a_command_issued_over_the_api_comes_down_the_socket_and_is_answered(web, fleet):
    token, [(device_id, secret), _] = fleet
    device = await WsDevice.open(web.ws_device, device_id, secret)
    await await_until(lambda: Device.objects.get(pk=device_id).transport == "ws", what="online over ws")
    reply = await sync_to_async(call)("POST", f"{web.web}/api/devices/{device_id}/commands",
                                      body={"name": "set_rate", "params": {"hz": 2}}, token=token)
    assert reply.status == 202, reply.body
    command_id = reply.json()["id"]
    command = await device.next(lambda f: f["type"] == "command")
    assert (command["id"], command["name"], command["params"]) == (command_id, "set_rate", {"hz": 2})
    await await_until(lambda: Command.objects.get(pk=command_id).status == Command.SENT, what="sent")
    ref = await device.send("response", id=command_id, status="ok", result={"hz": 2})
    await device.next(lambda f: f.get("ref") == ref and f["type"] == "ack")
    reply = await sync_to_async(call)("GET", f"{web.web}/api/commands/{command_id}", token=token)
    assert (reply.json()["status"], reply.json()["result"]) == ("succeeded", {"hz": 2})
    await device.close()


async def test_a_bad_frame_gets_a_clear_error_while_another_devices_data_gets_in(web, fleet):
    _, [(bad_id, bad_secret), (good_id, good_secret)] = fleet
    bad = await WsDevice.open(web.ws_device, bad_id, bad_secret)
    good = await WsDevice.open(web.ws_device, good_id, good_secret)
    ref = await bad.send("telemetry", data={"ts": "not a time", "v": 1})
    error = await bad.next(lambda f: f["type"] == "error")
    assert (error["ref"], error["code"]) == (ref, "bad_sample"), error
    await bad.ws.send("{not json")
    assert (await bad.next(lambda f: f["type"] == "error"))["code"] == "not_json"
    ref = await good.send("telemetry", data={"v": 2})
    await good.next(lambda f: f["type"] == "ack" and f["ref"] == ref)
    assert await sync_to_async(Telemetry.objects.filter(device_id=good_id).count)() == 1
    assert await sync_to_async(Telemetry.objects.filter(device_id=bad_id).count)() == 0
    await bad.close()
    await good.close()


async def test_killing_the_web_process_loses_no_acked_sample(web, fleet):
    _, [(device_id, secret), _] = fleet
    device = await WsDevice.open(web.ws_device, device_id, secret)
    acked: set[int] = set()
    sent: dict[int, int] = {}

    async def read() -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            while True:
                frame = await device.next()
                if frame["type"] == "ack":
                    acked.add(frame["ref"])

    reader = asyncio.ensure_future(read())
    for n in range(300):  # within the socket's rate limit (IOTGW_WS_RATE, 20 frames/s)
        sent[await device.send("telemetry", data={"ts": 1767225600000 + n, "n": n})] = n
        if n == 60:
            await await_until(lambda: len(acked) > 20, what="some acks before the kill")
            web_process(web).kill(signal.SIGKILL)
            break
        await asyncio.sleep(0.1)
    reader.cancel()
    stored = set(await sync_to_async(lambda: list(Telemetry.objects.filter(device_id=device_id)
                                                  .values_list("data__n", flat=True)))())
    assert acked, "the device was acked before the kill"
    assert {sent[ref] for ref in acked} <= stored, "every acked sample is in the database"
    await sync_to_async(web.start_web)()  # a new web process takes the device back
    device = await WsDevice.open(web.ws_device, device_id, secret)
    ref = await device.send("telemetry", data={"n": 1000})
    await device.next(lambda f: f["type"] == "ack" and f["ref"] == ref)
    await device.close()


def web_process(stack):
    """The stack's running Daphne."""
    return next(p for p in reversed(stack.processes.items) if p.name == "web")
