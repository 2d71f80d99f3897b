"""A quiet Redis outage and a burst of sockets stay bounded: quick ingest answers, few log lines, few connections."""

from __future__ import annotations

import asyncio
import re
import time

import pytest
import redis
from asgiref.sync import sync_to_async

from devices.models import Telemetry
from testing.http import basic, call
from testing.mqtt import MqttDevice
from testing.processes import PrivateService, Stack, stack_env
from testing.waiting import wait_until
from testing.ws import Dashboard
from tests.conftest import need_binary

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

SOCKETS = 1500
POOL = 50


@pytest.fixture
def private_redis(tmp_path):
    need_binary("redis-server")
    service = PrivateService("redis", tmp_path / "redis").start()
    yield service
    service.stop()


@pytest.fixture
def gateway(live_db, processes, run_id, mqtt_url, private_redis):
    """A web process and a bridge on a Redis of the test's own, which the test may freeze or stop."""
    return Stack(env=stack_env(database_url=live_db, redis_url=private_redis.url, mqtt_url=mqtt_url, run_id=run_id),
                 processes=processes, mqtt_url=mqtt_url)


def test_http_ingest_answers_at_once_with_redis_frozen_and_stores_the_sample_once(gateway, private_redis, registry):
    device_id, secret = registry.device("frozen")
    gateway.start_web()
    url = gateway.web + f"/api/ingest/{device_id}/telemetry"
    assert call("POST", url, body={"warm": 1}, headers=basic(device_id, secret)).status == 200
    private_redis.popen.send_signal(19)  # SIGSTOP: connections stay open, nothing answers
    try:
        started = time.monotonic()
        reply = call("POST", url, body={"frozen": 1}, headers=basic(device_id, secret))
        took = time.monotonic() - started
    finally:
        private_redis.popen.send_signal(18)  # SIGCONT
    assert reply.status == 200
    # Before: the answer waited for the push to time out (9-30 s), and devices that retried stored it twice.
    assert took < 1.5, f"ingest answered after {took:.1f}s with Redis frozen"
    assert Telemetry.objects.filter(device_id=device_id, data__has_key="frozen").count() == 1


def test_a_redis_outage_logs_one_push_warning_per_interval(gateway, private_redis, registry):
    device_id, _ = registry.device("quiet")
    bridge = gateway.start_bridge()
    offset = len(bridge.output())  # its log may hold an earlier run's lines
    private_redis.stop()
    started = time.monotonic()
    device = MqttDevice(gateway.mqtt_url, device_id, will=False)
    for n in range(400):  # one at a time: each its own batch and push
        device.telemetry({"ts": 1767225600000 + n, "n": n})
    wait_until(lambda: Telemetry.objects.filter(device_id=device_id).count() == 400, timeout=60,
               what="stored without Redis")
    wait_until(lambda: "push to dashboards failed" in bridge.output()[offset:], what="the failure logged")
    lines = re.findall(r"push to dashboards failed", bridge.output()[offset:])
    allowed = 1 + int((time.monotonic() - started) // 10)  # one line per 10 s (before: one per push)
    assert len(lines) <= allowed, f"{len(lines)} lines for one outage, {allowed} allowed"
    device.close()


async def test_a_burst_of_sockets_leaves_the_web_process_few_redis_connections(gateway, private_redis, registry):
    user = await sync_to_async(registry.user)("burst")
    token = await sync_to_async(registry.token)(user)
    await sync_to_async(gateway.start_web)()
    client = redis.Redis.from_url(private_redis.url)
    opening = asyncio.Semaphore(300)

    async def open_one() -> Dashboard:
        async with opening:
            dash = await Dashboard.open(gateway.ws, token, open_timeout=60)
            await dash.send({"type": "ping"})
            await dash.next(lambda f: f["type"] == "pong", timeout=60)
            return dash

    dashes = await asyncio.gather(*(open_one() for _ in range(SOCKETS)))
    at_peak = len(client.client_list()) - 1  # less this client
    await asyncio.gather(*(dash.close() for dash in dashes))
    assert at_peak <= POOL + 2, f"{at_peak} Redis connections for {SOCKETS} sockets"
    # Still serving after the burst: a new socket subscribes and gets its snapshot.
    dash = await Dashboard.open(gateway.ws, token)
    assert (await dash.subscribe("*"))["type"] == "snapshot"
    await dash.close()
    await sync_to_async(wait_until)(lambda: len(client.client_list()) - 1 <= POOL + 2, what="idle connections")
