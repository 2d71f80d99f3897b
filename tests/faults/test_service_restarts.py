"""Broker, Redis and database outages are survived: reconnect, resubscribe, carry on (SPEC §5)."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from asgiref.sync import sync_to_async
from django.db import connection

from devices.models import Telemetry
from testing.mqtt import MqttDevice
from testing.processes import PrivateService, Stack, drop_sessions, stack_env, wait_bridge_connected
from testing.waiting import wait_until
from testing.ws import Dashboard
from tests.conftest import need_binary

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


def stored(device_id: str) -> int:
    return Telemetry.objects.filter(device_id=device_id).count()


@pytest.fixture
def private(tmp_path):
    started: list[PrivateService] = []

    def make(kind: str) -> PrivateService:
        need_binary("mosquitto" if kind == "mosquitto" else "redis-server")
        service = PrivateService(kind, tmp_path / kind).start()
        started.append(service)
        return service

    yield make
    for service in started:
        service.stop()


@pytest.fixture
def owned(registry):
    user = registry.user("ops")
    return registry.token(user), registry.device("restart", owner=user)[0]


def test_broker_restart_is_survived_and_queued_samples_arrive(stack, private, owned):
    _, device_id = owned
    broker = private("mosquitto")
    stack.env["MQTT_URL"] = broker.url
    bridge = stack.start_bridge()
    device = MqttDevice(broker.url, device_id)
    device.telemetry({"ts": 1767225600000, "n": 0})
    wait_until(lambda: stored(device_id) == 1, what="first sample")

    broker.stop()
    broker.start()
    wait_bridge_connected(stack.env["MQTT_CLIENT_ID"], bridge, timeout=60)
    wait_until(lambda: device.client.is_connected(), timeout=30, what="device reconnected")
    device.telemetry({"ts": 1767225600001, "n": 1})
    wait_until(lambda: stored(device_id) == 2, what="sample after the restart")

    # While the bridge is away its persistent session queues QoS 1 samples for it.
    bridge.kill()
    for i in range(2, 52):
        device.telemetry({"ts": 1767225600000 + i, "n": i})
    stack.start_bridge()
    wait_until(lambda: stored(device_id) == 52, timeout=30, what="samples queued while the bridge was away")
    assert bridge is not stack.bridges[-1] and stack.bridges[-1].alive()
    device.close()


async def _gateway_on_private_redis(private, *, live_db, processes, run_id, mqtt_url, device_id):
    """A web and a bridge on a Redis of the test's own (to stop and start), and a device on the shared broker."""
    redis = await sync_to_async(private)("redis")
    stack = Stack(env=stack_env(database_url=live_db, redis_url=redis.url, mqtt_url=mqtt_url, run_id=run_id),
                  processes=processes, mqtt_url=mqtt_url)
    web = await sync_to_async(stack.start_web)()
    bridge = await sync_to_async(stack.start_bridge)()
    device = await sync_to_async(MqttDevice)(mqtt_url, device_id)
    return redis, stack, web, bridge, device


async def test_redis_restart_is_survived_by_web_and_bridge(live_db, processes, run_id, mqtt_url, private, owned):
    token, device_id = owned
    redis, stack, web, bridge, device = await _gateway_on_private_redis(
        private, live_db=live_db, processes=processes, run_id=run_id, mqtt_url=mqtt_url, device_id=device_id)

    await sync_to_async(redis.stop)()
    await sync_to_async(device.telemetry)({"during_outage": 1})
    await sync_to_async(wait_until)(lambda: stored(device_id) == 1, what="stored while Redis is down")
    await sync_to_async(redis.start)()

    # A dashboard connecting after the outage gets a fresh snapshot and live data again.
    dash = await Dashboard.open(stack.ws, token)
    snapshot = await dash.subscribe([device_id])
    assert snapshot["devices"][0]["latest"] == {"during_outage": 1}
    await sync_to_async(device.telemetry)({"after": 2})
    items = await dash.telemetry_until(1, device_id, timeout=30)
    assert items[0]["data"] == {"after": 2}
    assert web.alive() and bridge.alive()
    device.close()
    await dash.close()
    await sync_to_async(drop_sessions)(mqtt_url, stack.client_ids)


def test_database_outage_holds_acks_and_loses_nothing(stack, owned):
    if connection.vendor != "postgresql":
        pytest.skip("the outage is made with PostgreSQL's ALLOW_CONNECTIONS")
    _, device_id = owned
    bridge = stack.start_bridge()
    device = MqttDevice(stack.mqtt_url, device_id)
    device.telemetry({"ts": 1767225600000, "n": 0})
    wait_until(lambda: stored(device_id) == 1, what="first sample")

    name = connection.settings_dict["NAME"]
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        own_pid = cursor.fetchone()[0]
    admin_params = {k: v for k, v in connection.get_connection_params().items() if k != "dbname"}
    with psycopg.connect(dbname="postgres", autocommit=True, **admin_params) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> %s",
                      [name, own_pid])
        try:
            for i in range(1, 21):
                device.telemetry({"ts": 1767225600000 + i, "n": i})
            assert stored(device_id) == 1, "nothing can be stored while the database refuses connections"
        finally:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    wait_until(lambda: stored(device_id) == 21, timeout=30, what="samples held during the outage")
    assert bridge.alive()
    device.close()


async def test_dashboards_that_stay_connected_through_a_redis_restart_get_live_data_again(
        live_db, processes, run_id, mqtt_url, private, owned):
    token, device_id = owned
    redis, stack, web, bridge, device = await _gateway_on_private_redis(
        private, live_db=live_db, processes=processes, run_id=run_id, mqtt_url=mqtt_url, device_id=device_id)
    dashes = [await Dashboard.open(stack.ws, token) for _ in range(3)]
    for dash in dashes:
        await dash.subscribe([device_id])
    await sync_to_async(device.telemetry)({"before": 1})
    for dash in dashes:
        assert (await dash.telemetry_until(1, device_id))[0]["data"] == {"before": 1}

    # Redis keeps nothing on disk here: the web process's group memberships vanish with it.
    await sync_to_async(redis.stop)()
    await sync_to_async(redis.start)()

    async def live_again(dash: Dashboard) -> None:
        """Publish a numbered sample every half second until this dashboard gets one from after the restart."""
        n = 0
        async with asyncio.timeout(60):
            while True:
                n += 1
                await sync_to_async(device.telemetry)({"after": n})
                try:
                    frame = await dash.next(lambda f: f["type"] == "telemetry", timeout=0.5)
                except TimeoutError:
                    continue
                if any("after" in item["data"] for item in frame["items"]):
                    return

    for dash in dashes:
        await live_again(dash)
    assert web.alive() and bridge.alive()
    device.close()
    for dash in dashes:
        await dash.close()
    await sync_to_async(drop_sessions)(mqtt_url, stack.client_ids)
