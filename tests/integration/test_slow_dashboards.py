"""Dashboards that stop reading cannot grow the web process: real Daphne, real sockets, devices sending load.

Daphne's send() never waits; what a client does not read waits in the Twisted transport's buffer. The web
process stops pushing to a socket past IOTGW_WS_SEND_BUFFER unsent bytes and sends it a snapshot once it
has drained (protocols/outbound.py).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import psutil
import pytest
import websockets
from asgiref.sync import sync_to_async

from testing.mqtt import MqttDevice
from testing.ws import Dashboard

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

BUDGET = 256 * 1024
STALLED = 4
# What the stalled sockets may add to the web process, all told: their budgets (twice over at most) and
# the allocator's noise under load. Measured here: 1.1 MiB; without the budget each of them buffers the
# whole stream, ~1 MB/s, and the four added 50 MiB in the 12 s (more the longer it runs).
RSS_BOUND = 16 * 1024 * 1024
# ~10 KB samples, 100 a second: about 1 MB/s to each dashboard.
SAMPLE = {f"s{i}": "x" * 200 for i in range(50)}
RATE = 100
LOAD_SECONDS = 12


class Load(threading.Thread):
    """A device publishing SAMPLE at RATE per second (QoS 0) until stopped."""

    def __init__(self, device: MqttDevice) -> None:
        super().__init__(daemon=True)
        self.device = device
        self.stop = threading.Event()
        self.sent = 0

    def run(self) -> None:
        payload = json.dumps(SAMPLE).encode()
        started = time.monotonic()
        while not self.stop.is_set():
            self.device.client.publish(f"devices/{self.device.device_id}/telemetry", payload, qos=0)
            self.sent += 1
            pause = started + self.sent / RATE - time.monotonic()
            if pause > 0:
                self.stop.wait(pause)


async def stalled_reader(ws_url: str, port: int, token: str, device_id: str):
    """A real `websockets` client with a tiny receive buffer that subscribes, then stops reading."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    # max_queue=1: the client stops reading the socket once one message waits unread (TCP backpressure).
    ws = await websockets.connect(ws_url, sock=sock, max_queue=1, ping_interval=None, max_size=None,
                                  additional_headers={"Authorization": f"Bearer {token}"})
    await ws.send(json.dumps({"type": "subscribe", "devices": [device_id]}))
    assert json.loads(await ws.recv())["type"] == "snapshot"
    return ws


async def drain(ws, timeout: float = 20.0) -> dict:
    """Resume reading; the first snapshot that comes."""
    async with asyncio.timeout(timeout):
        while True:
            frame = json.loads(await ws.recv())
            if frame["type"] == "snapshot":
                return frame


async def test_stalled_dashboards_keep_the_web_process_bounded_and_catch_up_by_snapshot(stack, registry):
    user = await sync_to_async(registry.user)("watcher")
    token = await sync_to_async(registry.token)(user)
    device_id, _ = await sync_to_async(registry.device)("loud", owner=user)
    stack.env.update(IOTGW_WS_SEND_BUFFER=str(BUDGET))
    web = await sync_to_async(stack.start_web)()
    await sync_to_async(stack.start_bridge)()
    rss = psutil.Process(web.popen.pid).memory_info

    stalled = [await stalled_reader(stack.ws, stack.web_port, token, device_id) for _ in range(STALLED)]
    normal = await Dashboard.open(stack.ws, token)
    await normal.subscribe([device_id])
    received = {"items": 0}
    marked = asyncio.Event()

    async def read_normal() -> None:
        while True:
            frame = await normal.next(timeout=30)
            normal.frames.clear()
            if frame["type"] == "telemetry":
                received["items"] += len(frame["items"])
                if any("marker" in item["data"] for item in frame["items"]):
                    marked.set()

    reader = asyncio.ensure_future(read_normal())
    device = await sync_to_async(MqttDevice)(stack.mqtt_url, device_id)
    load = Load(device)
    load.start()
    try:
        await asyncio.sleep(2)  # warm up: the stalled sockets' kernel buffers fill, the allocator settles
        baseline = peak = rss().rss
        loop = asyncio.get_running_loop()
        until = loop.time() + LOAD_SECONDS
        while loop.time() < until:
            await asyncio.sleep(0.25)
            peak = max(peak, rss().rss)
    finally:
        load.stop.set()
        await sync_to_async(load.join)()
    growth = peak - baseline
    assert growth < RSS_BOUND, f"web RSS grew {growth / 2**20:.1f} MiB with {STALLED} stalled sockets"
    assert received["items"] >= 0.5 * RATE * LOAD_SECONDS, (received, load.sent)  # the reading one kept up

    # The last word, then a stalled reader resumes: it gets a snapshot holding it, not the backlog.
    await sync_to_async(device.telemetry)({"marker": 1})
    await asyncio.wait_for(marked.wait(), 15)
    reader.cancel()
    snapshot = await drain(stalled[0])
    assert [d["id"] for d in snapshot["devices"]] == [device_id]
    assert snapshot["devices"][0]["latest"].get("marker") == 1
    device.close()
    for ws in stalled:
        ws.transport.abort()
    await normal.close()
