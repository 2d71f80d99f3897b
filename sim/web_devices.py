"""Simulated devices over the gateway's own WebSocket (`websockets`) or HTTP (`requests`) (docs/transports/).

The same sensors and command answers as the MQTT simulator (sim/simulator.py). A WebSocket
device holds one socket to `/ws/device/`, sends telemetry frames and answers the command
frames it is sent; a sample counts as acked at its `ack` frame. An HTTP device POSTs each
sample and long-polls for its commands; a sample counts as acked at its 200.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import requests
import websockets

from sim.asyncfleet import AsyncFleet
from sim.simulator import Sensor, command_answer

logger = logging.getLogger("iotgw.simulator")

IN_FLIGHT = 4  # samples one device may have unacknowledged; past it a sample is skipped (the gateway is behind)
POLL_WAIT = 25  # seconds an HTTP device's long poll waits for a command


class WebSimDevice:
    """One device over WebSocket (`ws`) or HTTP (`http`): its sensor, its connection or its poll."""

    def __init__(self, sim: WebSimulator, device_id: str, secret: str | None, seed: int | None,
                 latest: dict[str, Any] | None) -> None:
        self.sim = sim
        self.id = device_id
        self.secret = secret or ""
        self.sensor = Sensor(random.Random(seed))
        self.sensor.resume(latest or {})
        self.last_step = time.monotonic()
        self.in_flight = 0
        self.socket: Any = None
        self.session = requests.Session()
        self.session.auth = (self.id, self.secret)
        self._task: asyncio.Task[None] | None = None

    @property
    def authorization(self) -> str:
        return "Basic " + base64.b64encode(f"{self.id}:{self.secret}".encode()).decode()

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._socket() if self.sim.transport == "ws" else self._poll())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self.socket is not None:
            await self.socket.close()

    def publish_sample(self) -> None:
        """Advance the sensor and send one sample with its ts, unless too many wait for their ack."""
        if self.in_flight >= IN_FLIGHT or (self.sim.transport == "ws" and self.socket is None):
            return
        now = time.monotonic()
        sample = self.sensor.step(now - self.last_step)
        self.last_step = now
        sample["ts"] = datetime.now(UTC).isoformat()
        self.in_flight += 1
        self.sim.stats.add("sent")
        if self.sim.transport == "ws":
            asyncio.ensure_future(self.socket.send(json.dumps({"type": "telemetry", "ref": 1, "data": sample})))
        else:
            asyncio.ensure_future(self._post(sample))

    async def _post(self, sample: dict[str, Any]) -> None:
        try:
            reply = await asyncio.to_thread(self.session.post, f"{self.sim.url}/api/ingest/{self.id}/telemetry",
                                            json=sample, timeout=10)
        except requests.RequestException as exc:
            logger.debug("%s: %s", self.id, exc)
            return
        finally:
            self.in_flight -= 1
        self._answered(reply.status_code == 200, reply.text if reply.status_code == 401 else "")

    def _answered(self, ok: bool, refusal: str = "") -> None:
        if ok:
            self.sim.stats.add("acked")
        elif refusal:
            self.sim.stats.add("refused")
            self.sim.stats.refusal = refusal[:200]

    async def _socket(self) -> None:
        """Hold the socket (reconnecting after a second), count acks, answer commands."""
        url = self.sim.url.replace("http", "ws", 1) + "/ws/device/"
        while True:
            try:
                async with websockets.connect(url, additional_headers={"Authorization": self.authorization}) as ws:
                    self.socket = ws
                    self._connected(True)
                    async for text in ws:
                        await self._frame(json.loads(text))
            except asyncio.CancelledError:
                raise
            except websockets.InvalidStatus as exc:
                self.sim.stats.add("refused")
                self.sim.stats.refusal = f"HTTP {exc.response.status_code} at the handshake"
            except (OSError, websockets.WebSocketException) as exc:
                logger.debug("%s: socket ended (%s)", self.id, exc)
            if self.socket is not None:
                self._connected(False)
            self.socket = None
            self.in_flight = 0
            await asyncio.sleep(1)

    async def _frame(self, frame: dict[str, Any]) -> None:
        if frame.get("type") == "ack":
            self.in_flight = max(0, self.in_flight - 1)
            self._answered(True)
        elif frame.get("type") == "error":
            self.in_flight = max(0, self.in_flight - 1)
        elif frame.get("type") == "command":
            self.sim.later(self.sim.latency, self._answer(frame))

    async def _poll(self) -> None:
        """Long-poll for commands, answer each; the poll is the device's presence."""
        url = f"{self.sim.url}/api/ingest/{self.id}/commands/next"
        while True:
            try:
                reply = await asyncio.to_thread(self.session.get, url, params={"wait": POLL_WAIT},
                                                timeout=POLL_WAIT + 10)
            except requests.RequestException as exc:
                logger.debug("%s: poll failed (%s)", self.id, exc)
                await asyncio.sleep(1)
                continue
            if reply.status_code in (200, 204):
                self._connected(True)
            if reply.status_code == 200:
                self.sim.later(self.sim.latency, self._answer(reply.json()))
            elif reply.status_code != 204:
                self._answered(False, reply.text if reply.status_code == 401 else "")
                await asyncio.sleep(1)

    def _connected(self, up: bool) -> None:
        if up and not getattr(self, "_up", False):
            self.sim.stats.add("connected")
            self.sim.stats.add("logins")
        elif not up and getattr(self, "_up", False):
            self.sim.stats.add("connected", -1)
        self._up = up

    async def _answer(self, command: dict[str, Any]) -> None:
        answer = command_answer(self.sensor, command, failed=self.sim.rng.random() < self.sim.failure_rate)
        if self.sim.transport == "ws":
            if self.socket is not None:
                await self.socket.send(json.dumps({"type": "response", **answer}))
        else:
            await asyncio.to_thread(self.session.post,
                                    f"{self.sim.url}/api/ingest/{self.id}/commands/{answer['id']}/response",
                                    json=answer, timeout=10)
        self.sim.stats.add("commands")
        self.sim.stats.add("command_errors", answer["status"] != "ok")


class WebSimulator(AsyncFleet):
    """N WebSocket or HTTP devices sending `rate` samples/s in total, spread evenly, on one event loop."""

    def __init__(self, *, url: str, transport: str, devices: dict[str, str | None], rate: float,
                 latency: float = 0.2, failure_rate: float = 0.0, seed: int | None = None,
                 latest: dict[str, dict[str, Any]] | None = None) -> None:
        if transport not in ("ws", "http"):
            raise ValueError("transport is ws or http")
        self.url = url.rstrip("/")
        self.transport = transport
        self.no_answer = f"no answer from {self.url}"
        super().__init__(devices=devices, rate=rate, latency=latency, failure_rate=failure_rate, seed=seed,
                         latest=latest)

    def _device(self, device_id: str, secret: str | None, seed: int | None,
                latest: dict[str, Any] | None) -> WebSimDevice:
        return WebSimDevice(self, device_id, secret, seed, latest)

    async def _start_devices(self) -> None:
        # Each HTTP device holds a thread in its long poll, and its POSTs need some more.
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(2 * len(self.devices) + 4))
        for device in self.devices:
            device.start()

    def _heard_nothing(self) -> bool:
        return not self.stats.logins and not self.stats.acked
