"""Behind Redis Sentinel, web and bridge follow a failover of the channel layer's master (docs/scale-out.md)."""

from __future__ import annotations

import pytest
import redis
from asgiref.sync import sync_to_async

from devices.models import Telemetry
from testing.http import http_get
from testing.mqtt import MqttDevice
from testing.processes import PrivateService, Stack, drop_sessions, stack_env
from testing.waiting import wait_until
from testing.ws import Dashboard
from tests.conftest import need_binary

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

MASTER = "iotgw"


def stored(device_id: str) -> int:
    return Telemetry.objects.filter(device_id=device_id).count()


def master_port(sentinel: PrivateService) -> int | None:
    """The master's port as the sentinel names it now."""
    client = redis.Redis(port=sentinel.port, socket_timeout=2)
    try:
        address = client.sentinel_get_master_addr_by_name(MASTER)
    except redis.RedisError:
        return None
    finally:
        client.close()
    return int(address[1]) if address else None


def replica_in_sync(replica: PrivateService) -> bool:
    client = redis.Redis(port=replica.port, socket_timeout=2)
    try:
        return client.info("replication").get("master_link_status") == "up"
    finally:
        client.close()


@pytest.fixture
def sentinel_trio(tmp_path):
    """A master, its replica and one sentinel (quorum 1) that fails over after a second of silence."""
    need_binary("redis-server")
    master = PrivateService("redis", tmp_path / "master").start()
    replica = PrivateService("redis", tmp_path / "replica",
                             redis=[f"replicaof 127.0.0.1 {master.port}", "replica-serve-stale-data no"]).start()
    sentinel = PrivateService("sentinel", tmp_path / "sentinel", redis=[
        f"sentinel monitor {MASTER} 127.0.0.1 {master.port} 1",
        f"sentinel down-after-milliseconds {MASTER} 1000",
        f"sentinel failover-timeout {MASTER} 5000",
        f"sentinel parallel-syncs {MASTER} 1",
    ]).start()
    wait_until(lambda: replica_in_sync(replica), timeout=20, what="replica in sync")
    wait_until(lambda: master_port(sentinel) == master.port, timeout=20, what="sentinel watching the master")
    yield master, replica, sentinel
    for service in (sentinel, replica, master):
        service.stop()


@pytest.fixture
def owned(registry):
    user = registry.user("ops")
    return registry.token(user), registry.device("sentinel-1", owner=user)[0]


async def test_a_failover_of_the_layers_master_is_followed_by_web_and_bridge(
        sentinel_trio, live_db, processes, run_id, mqtt_url, owned):
    master, replica, sentinel = sentinel_trio
    token, device_id = owned
    url = f"redis+sentinel://127.0.0.1:{sentinel.port}/{MASTER}/0"
    stack = Stack(env=stack_env(database_url=live_db, redis_url=url, mqtt_url=mqtt_url, run_id=run_id),
                  processes=processes, mqtt_url=mqtt_url)
    web = await sync_to_async(stack.start_web)()
    bridge = await sync_to_async(stack.start_bridge)()
    device = await sync_to_async(MqttDevice)(mqtt_url, device_id)
    dash = await Dashboard.open(stack.ws, token)
    await dash.subscribe([device_id])
    await sync_to_async(device.telemetry)({"ts": 1767225600000, "n": 0})
    assert (await dash.telemetry_until(1, device_id))[0]["data"] == {"n": 0}

    await sync_to_async(master.kill)()
    for n in range(1, 21):  # while the layer has no master: stored, not pushed
        await sync_to_async(device.telemetry)({"ts": 1767225600000 + n, "n": n})
    await sync_to_async(wait_until)(lambda: master_port(sentinel) == replica.port, timeout=30,
                                    what="the sentinel promoted the replica")
    await sync_to_async(wait_until)(lambda: stored(device_id) == 21, timeout=30, what="stored across the failover")

    # The socket opened before the failover gets live data again, from the new master.
    await sync_to_async(wait_until)(lambda: http_get(stack.web + "/readyz")[0] == 200, timeout=30,
                                    what="ready on the new master")
    await sync_to_async(device.telemetry)({"ts": 1767225601000, "after": 1})

    async def after_arrives():
        while True:
            items = await dash.telemetry_until(1, device_id, timeout=30)
            if any(item["data"] == {"after": 1} for item in items):
                return

    await after_arrives()
    assert web.alive() and bridge.alive()
    device.close()
    await dash.close()
    await sync_to_async(drop_sessions)(mqtt_url, stack.client_ids)
