"""Devices over CoAP, through aiocoap's client, to a `coapserver` process on the real database and Redis."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from aiocoap import Code
from asgiref.sync import sync_to_async

from devices.models import Device, Telemetry
from devices.services.commands import command_issue
from testing.coap import CoapDevice, CoapProcess
from testing.http import http_get
from testing.registry import command_status, wait_status
from testing.waiting import await_until
from testing.ws import Dashboard

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def coap(stack):
    server = CoapProcess(stack)
    yield server
    server.stop()


@pytest.fixture
def owner_and_device(registry):
    user = registry.user("owner")
    device_id, secret = registry.device("coapy", owner=user)
    return registry.token(user), device_id, secret


async def test_posted_sample_is_stored_then_acknowledged_and_reaches_the_dashboard(stack, coap, owner_and_device):
    token, device_id, secret = owner_and_device
    await sync_to_async(stack.start_web)()
    await sync_to_async(coap.start)()
    dash = await Dashboard.open(stack.ws, token)
    await dash.subscribe([device_id])

    async with CoapDevice(coap.url, device_id, secret) as device:
        response = await device.telemetry({"ts": "2026-01-02T03:04:05.678+00:00", "temp": 21.5})
        assert response.code == Code.CHANGED
        # 2.04 came after the commit: the row is there now, not eventually.
        row = await sync_to_async(Telemetry.objects.get)(device_id=device_id)
        assert row.data == {"temp": 21.5}

    items = await dash.telemetry_until(1, device_id)
    assert items[0]["data"] == {"temp": 21.5}
    await dash.close()


async def test_status_post_drives_online(stack, coap, owner_and_device):
    _, device_id, secret = owner_and_device
    await sync_to_async(coap.start)()
    async with CoapDevice(coap.url, device_id, secret) as device:
        assert (await device.status(True)).code == Code.CHANGED
        assert (await sync_to_async(Device.objects.get)(pk=device_id)).online is True
        assert (await device.status(False)).code == Code.CHANGED
        assert (await sync_to_async(Device.objects.get)(pk=device_id)).online is False


@pytest.fixture
def two_devices(registry):
    return registry.device("good"), registry.device("bad")


async def test_bad_input_gets_a_clear_error_while_a_good_device_is_stored(stack, coap, two_devices):
    (good_id, good_secret), (bad_id, bad_secret) = two_devices
    await sync_to_async(coap.start)()
    async with CoapDevice(coap.url, good_id, good_secret) as good, CoapDevice(coap.url, bad_id, bad_secret) as bad:
        answers = await asyncio.gather(
            good.telemetry({"ts": 1767225600000, "rpm": 1200}),
            bad.telemetry(b"{not json"),
            bad.telemetry({"ts": 1767225600000, "bad name!": 1}),
            bad.post("status", b"maybe"),
            good.telemetry([{"ts": 1767225601000, "rpm": 1300}, {"ts": 1767225602000, "rpm": 1400}]),
        )
    codes = [a.code for a in answers]
    assert codes == [Code.CHANGED, Code.BAD_REQUEST, Code.BAD_REQUEST, Code.BAD_REQUEST, Code.CHANGED]
    assert answers[1].payload.startswith(b"not_json: ")
    assert answers[2].payload.startswith(b"bad_sample: ")
    assert answers[3].payload.startswith(b"bad_status: ")
    assert await sync_to_async(Telemetry.objects.filter(device_id=good_id).count)() == 3
    assert await sync_to_async(Telemetry.objects.filter(device_id=bad_id).count)() == 0


async def test_wrong_or_missing_credentials_get_unauthorized(stack, coap, owner_and_device):
    _, device_id, secret = owner_and_device
    await sync_to_async(coap.start)()
    async with CoapDevice(coap.url, device_id, "not-the-secret") as wrong, \
            CoapDevice(coap.url, device_id, None) as anonymous, \
            CoapDevice(coap.url, "nobody-here", secret) as unknown:
        for device in (wrong, anonymous, unknown):
            response = await device.telemetry({"rpm": 1})
            assert response.code == Code.UNAUTHORIZED, response.payload
    assert await sync_to_async(Telemetry.objects.count)() == 0


async def test_large_array_travels_block_wise_and_is_stored_whole(stack, coap, owner_and_device):
    _, device_id, secret = owner_and_device
    await sync_to_async(coap.start)()
    samples = [{"ts": 1767225600000 + i, "temp": 20 + i / 100, "label": "x" * 40} for i in range(400)]
    async with CoapDevice(coap.url, device_id, secret) as device:
        response = await device.telemetry(samples)  # ~30 KB: Block1, 1 KiB a block
    assert response.code == Code.CHANGED
    assert await sync_to_async(Telemetry.objects.filter(device_id=device_id).count)() == 400


async def test_payload_over_the_limit_is_refused_with_its_size(stack, coap, owner_and_device):
    _, device_id, secret = owner_and_device
    await sync_to_async(coap.start)(IOTGW_MAX_PAYLOAD="4096")
    async with CoapDevice(coap.url, device_id, secret) as device:
        response = await device.telemetry([{"ts": 1767225600000 + i, "v": i} for i in range(500)])
    assert response.code == Code.REQUEST_ENTITY_TOO_LARGE
    assert response.opt.size1 == 4096


async def test_command_round_trip_through_observe(stack, coap, owner_and_device, registry):
    token, device_id, secret = owner_and_device
    user = await sync_to_async(lambda: Device.objects.get(pk=device_id).owner)()
    await sync_to_async(coap.start)()
    async with CoapDevice(coap.url, device_id, secret) as device:
        observation = device.observe_commands()
        first = await observation.response
        assert first.code == Code.CONTENT and first.opt.observe == 0
        notifications = aiter(observation.observation)
        # Observing made the device online, on CoAP: the dashboard shows its transport.
        stored = await sync_to_async(Device.objects.get)(pk=device_id)
        assert stored.online and stored.transport == "coap"

        command = await sync_to_async(command_issue)(user=user, device_id=device_id, name="reboot",
                                                     params={"delay": 5})
        notification = await asyncio.wait_for(anext(notifications), 15)
        body = orjson.loads(notification.payload)
        assert body["id"] == str(command.id) and body["name"] == "reboot" and body["params"] == {"delay": 5}
        await sync_to_async(wait_status)(str(command.id), "sent")

        answer = await device.post("commands/response", {"id": str(command.id), "status": "ok", "result": {"up": 1}})
        assert answer.code == Code.CHANGED
        assert await sync_to_async(command_status)(str(command.id)) == "succeeded"

        # A command too large for one datagram arrives whole: block 0 in the notification, the rest by Block2.
        script = "x" * 3000
        big = await sync_to_async(command_issue)(user=user, device_id=device_id, name="run", params={"script": script})
        notification = await asyncio.wait_for(anext(notifications), 15)
        assert orjson.loads(notification.payload)["params"] == {"script": script}
        assert notification.opt.block2 is not None and notification.opt.block2.block_number > 0
        await sync_to_async(wait_status)(str(big.id), "sent")
        observation.observation.cancel()


async def test_a_killed_coap_process_loses_no_sample_it_answered_2_04(stack, owner_and_device):
    _, device_id, secret = owner_and_device
    coap = CoapProcess(stack)
    await sync_to_async(coap.start)()
    changed: set[int] = set()
    stop = asyncio.Event()

    async def stream(device: CoapDevice) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            try:
                response = await asyncio.wait_for(device.telemetry({"ts": 1767225600000 + n, "n": n}), 2)
            except (TimeoutError, Exception):
                continue  # no answer: not confirmed, so not counted
            if response.code == Code.CHANGED:
                changed.add(n)

    async with CoapDevice(coap.url, device_id, secret) as device:
        streaming = asyncio.ensure_future(stream(device))
        await await_until(lambda: len(changed) >= 50, timeout=30, what="50 samples confirmed")
        await sync_to_async(coap.kill)()  # SIGKILL mid-stream: whatever was not committed was not confirmed
        confirmed_before = set(changed)
        await sync_to_async(coap.start)()  # the same port
        await await_until(lambda: len(changed) >= len(confirmed_before) + 50, timeout=60, what="resumed")
        stop.set()
        await streaming
    coap.stop()
    stored = set(await sync_to_async(list)(
        Telemetry.objects.filter(device_id=device_id).values_list("data__n", flat=True)))
    assert changed <= stored, f"{len(changed - stored)} samples answered 2.04 are missing"


async def test_readiness_and_metrics_report_the_coap_listener_and_its_counters(stack, coap, owner_and_device):
    _, device_id, secret = owner_and_device
    await sync_to_async(stack.start_web)()
    await sync_to_async(coap.start)()
    async with CoapDevice(coap.url, device_id, secret) as device:
        assert (await device.telemetry({"ts": 1767225600000, "v": 1})).code == Code.CHANGED
        assert (await device.telemetry(b"[]")).code == Code.BAD_REQUEST

    status, body = await sync_to_async(http_get)(stack.web + "/readyz")
    checks = orjson.loads(body)["checks"]
    assert checks["coap"] is True and checks["bridge"] is False  # a CoAP listener is no MQTT bridge
    assert status == 503

    def counted() -> str | None:
        text = http_get(stack.web + "/metrics")[1].decode()
        ok = (f'iotgw_coap_listening{{process="{coap.client_id}"}} 1.0' in text
              and f'iotgw_samples_ingested_total{{bridge="{coap.client_id}"}} 1.0' in text
              and f'iotgw_messages_rejected_total{{bridge="{coap.client_id}",reason="bad_sample"}} 1.0' in text)
        return text if ok else None

    await await_until(counted, timeout=15, what="the CoAP process's counters in /metrics")
