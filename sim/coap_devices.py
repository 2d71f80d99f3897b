"""Simulated devices over CoAP (aiocoap's client): samples by POST, commands by Observe (docs/transports/coap.md).

The same sensors and command answers as the MQTT simulator (sim/simulator.py); each device
has its own client context (its own UDP socket, so its own CoAP endpoint, as a real device),
sends its secret in plain mode (`?secret=…`), says `online` by observing its commands and
`offline` when the run ends. A sample counts as acked when the gateway answered 2.04.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from aiocoap import Code, Context, Message

from sim.asyncfleet import AsyncFleet
from sim.simulator import Sensor, command_answer

logger = logging.getLogger("iotgw.simulator")

# Requests one device may have waiting for their answer; past it a sample is skipped (the gateway is behind).
IN_FLIGHT = 4


class CoapSimDevice:
    """One device: its sensor, its client context, its observation of its commands."""

    def __init__(self, sim: CoapSimulator, device_id: str, secret: str | None, seed: int | None,
                 latest: dict[str, Any] | None) -> None:
        self.sim = sim
        self.id = device_id
        self.secret = secret
        self.sensor = Sensor(random.Random(seed))
        self.sensor.resume(latest or {})
        self.last_step = time.monotonic()
        self.context: Context | None = None
        self.connected = False
        self.in_flight = 0
        self._observing: asyncio.Task[None] | None = None

    def uri(self, kind: str) -> str:
        query = f"?secret={quote(self.secret, safe='')}" if self.secret else ""
        return f"{self.sim.url}/devices/{self.id}/{kind}{query}"

    async def start(self) -> None:
        self.context = await Context.create_client_context()
        self._observing = asyncio.ensure_future(self._observe())

    async def stop(self) -> None:
        if self.connected:
            await self.request("status", b"offline")
        if self._observing is not None:
            self._observing.cancel()
        if self.context is not None:
            await self.context.shutdown()

    async def request(self, kind: str, payload: bytes) -> Message | None:
        """POST and return the answer; None when none came (the gateway is away)."""
        assert self.context is not None
        try:
            return await self.context.request(Message(code=Code.POST, uri=self.uri(kind), payload=payload)).response
        except Exception as exc:  # aiocoap's network errors: counted as not acked
            logger.debug("%s: %s", self.id, exc)
            return None

    def publish_sample(self) -> None:
        """Advance the sensor and POST one sample with its ts, unless too many wait for their answer."""
        if self.in_flight >= IN_FLIGHT:
            return
        now = time.monotonic()
        sample = self.sensor.step(now - self.last_step)
        self.last_step = now
        sample["ts"] = datetime.now(UTC).isoformat()
        self.in_flight += 1
        self.sim.stats.add("sent")
        task = asyncio.ensure_future(self.request("telemetry", json.dumps(sample).encode()))
        task.add_done_callback(self._answered)

    def _answered(self, task: asyncio.Task[Message | None]) -> None:
        self.in_flight -= 1
        answer = task.result()
        if answer is not None and answer.code == Code.CHANGED:
            self.sim.stats.add("acked")
        elif answer is not None and answer.code == Code.UNAUTHORIZED:
            self.sim.stats.add("refused")
            self.sim.stats.refusal = answer.payload.decode(errors="replace")[:200]

    async def _observe(self) -> None:
        """Observe the commands resource (which says `online`), answer each command; re-observe when it ends."""
        assert self.context is not None
        while True:
            request = self.context.request(Message(code=Code.GET, uri=self.uri("commands"), observe=0))
            try:
                first = await request.response
                if not first.code.is_successful():
                    self.sim.stats.add("refused")
                    self.sim.stats.refusal = first.payload.decode(errors="replace")[:200]
                    await asyncio.sleep(5)
                    continue
                self._connected(True)
                async for notification in request.observation:
                    self.sim.later(self.sim.latency, self._answer(notification.payload))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.debug("%s: observation ended (%s)", self.id, exc)
            self._connected(False)
            await asyncio.sleep(1)

    def _connected(self, up: bool) -> None:
        if up != self.connected:
            self.connected = up
            self.sim.stats.add("connected", 1 if up else -1)
            if up:
                self.sim.stats.add("logins")

    async def _answer(self, payload: bytes) -> None:
        try:
            command = json.loads(payload)
        except ValueError:
            return
        if not isinstance(command, dict):
            return
        answer = command_answer(self.sensor, command, failed=self.sim.rng.random() < self.sim.failure_rate)
        await self.request("commands/response", json.dumps(answer).encode())
        self.sim.stats.add("commands")
        self.sim.stats.add("command_errors", answer["status"] != "ok")


class CoapSimulator(AsyncFleet):
    """N CoAP devices sending `rate` samples/s in total, spread evenly, on one event loop."""

    no_answer = "no answer from the CoAP server"

    def __init__(self, *, url: str, devices: dict[str, str | None], rate: float, latency: float = 0.2,
                 failure_rate: float = 0.0, seed: int | None = None,
                 latest: dict[str, dict[str, Any]] | None = None) -> None:
        self.url = url.rstrip("/")
        super().__init__(devices=devices, rate=rate, latency=latency, failure_rate=failure_rate, seed=seed,
                         latest=latest)

    def _device(self, device_id: str, secret: str | None, seed: int | None,
                latest: dict[str, Any] | None) -> CoapSimDevice:
        return CoapSimDevice(self, device_id, secret, seed, latest)

    async def _start_devices(self) -> None:
        await asyncio.gather(*(device.start() for device in self.devices))
