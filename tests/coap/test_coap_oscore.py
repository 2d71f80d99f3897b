"""OSCORE: a device's requests protected with the context derived from its secret; no secret on the wire."""

from __future__ import annotations

import asyncio

import pytest
from aiocoap import Code
from asgiref.sync import sync_to_async

from devices.models import Device, Telemetry
from devices.services.devices import device_rotate_secret
from testing.coap import CoapDevice, CoapProcess

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def coap(stack):
    server = CoapProcess(stack, plain=False)  # plain mode off: OSCORE is the only way in
    yield server
    server.stop()


@pytest.fixture
def two_devices(registry):
    return registry.device("sealed"), registry.device("other")


async def test_oscore_device_is_stored_with_plain_mode_off(stack, coap, two_devices, tmp_path):
    (device_id, secret), _ = two_devices
    await sync_to_async(coap.start)()
    async with CoapDevice(coap.url, device_id, secret, oscore=tmp_path / "ctx") as device:
        assert "secret" not in device.uri("telemetry")
        first = await device.telemetry({"ts": 1767225600000, "temp": 20.5})
        second = await device.status(True)
        assert (first.code, second.code) == (Code.CHANGED, Code.CHANGED), (first.payload, second.payload)
    assert await sync_to_async(Telemetry.objects.filter(device_id=device_id).count)() == 1
    assert (await sync_to_async(Device.objects.get)(pk=device_id)).online is True


async def test_without_oscore_or_with_anothers_context_a_device_is_refused(stack, coap, two_devices, tmp_path):
    (device_id, secret), (other_id, other_secret) = two_devices
    await sync_to_async(coap.start)()
    async with CoapDevice(coap.url, device_id, secret) as plain:
        refused = await plain.telemetry({"v": 1})
    assert refused.code == Code.UNAUTHORIZED and b"plain mode is off" in refused.payload
    # The other device's context, used on this device's resource: verified as the other device, so forbidden.
    async with CoapDevice(coap.url, other_id, other_secret, oscore=tmp_path / "other") as impostor:
        impostor.device_id = device_id
        forbidden = await impostor.telemetry({"v": 1})
    assert forbidden.code == Code.FORBIDDEN, forbidden.payload
    assert await sync_to_async(Telemetry.objects.filter(device_id=device_id).count)() == 0


async def code_of(device: CoapDevice, sample: dict):
    """The answer's code; None when the answer could not be verified (aiocoap raises: not protected)."""
    try:
        return (await device.telemetry(sample)).code
    except Exception:
        return None


async def test_a_reissued_secret_replaces_the_context(stack, coap, two_devices, tmp_path):
    (device_id, secret), _ = two_devices
    await sync_to_async(coap.start)()
    async with CoapDevice(coap.url, device_id, secret, oscore=tmp_path / "old") as old:
        assert await code_of(old, {"ts": 1767225600000, "v": 1}) == Code.CHANGED
        new_secret = await sync_to_async(device_rotate_secret)(device_id=device_id)
        stale = await code_of(old, {"ts": 1767225601000, "v": 2})
        # Within the 10 s a verdict is kept the old context may still open; then only the new secret's does.
        async with CoapDevice(coap.url, device_id, new_secret, oscore=tmp_path / "new") as new:
            deadline = asyncio.get_running_loop().time() + 15
            while (answer := await code_of(new, {"ts": 1767225602000, "v": 3})) != Code.CHANGED:
                assert asyncio.get_running_loop().time() < deadline, answer
                await asyncio.sleep(0.5)
        assert await code_of(old, {"ts": 1767225603000, "v": 4}) != Code.CHANGED
    rows = await sync_to_async(set)(Telemetry.objects.filter(device_id=device_id).values_list("data__v", flat=True))
    assert {1, 3} <= rows and 4 not in rows and (2 in rows) == (stale == Code.CHANGED)
