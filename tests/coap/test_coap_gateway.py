"""CoAP inside the all-in-one `manage.py gateway`: its port and plain mode in the banner, a sample to a dashboard."""

from __future__ import annotations

import pytest
from aiocoap import Code
from asgiref.sync import sync_to_async

from devices.models import Telemetry
from testing.coap import CoapDevice, free_udp_port
from testing.processes import AllInOne, stack_env
from testing.ws import Dashboard

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def owned(registry):
    user = registry.user("solo")
    return registry.token(user), registry.device("coap-laptop", owner=user)


@pytest.fixture
def gateway_with_coap(live_db, processes, run_id):
    env = stack_env(database_url=live_db, redis_url=None, mqtt_url=None, run_id=run_id)
    port = free_udp_port()
    gateway = AllInOne(env=env, processes=processes, extra=("--coap-port", str(port), "--coap-plain")).start()
    yield gateway, port
    gateway.stop()


async def test_all_in_one_serves_coap_says_plain_mode_and_pushes_to_the_dashboard(owned, gateway_with_coap):
    token, (device_id, secret) = owned
    gateway, port = gateway_with_coap
    banner = await sync_to_async(gateway.wait_log)("CoAP ")
    assert f"coap://127.0.0.1:{port}" in banner and "PLAIN MODE" in banner
    dash = await Dashboard.open(gateway.ws, token)
    await dash.subscribe([device_id])
    async with CoapDevice(f"coap://127.0.0.1:{port}", device_id, secret) as device:
        assert (await device.telemetry({"ts": 1767225600000, "temp": 19.0})).code == Code.CHANGED
    items = await dash.telemetry_until(1, device_id)
    assert items[0]["data"] == {"temp": 19.0}
    assert await sync_to_async(Telemetry.objects.filter(device_id=device_id).count)() == 1
    await dash.close()
