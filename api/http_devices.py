"""HTTP devices as a transport behind the seam (SPEC §8, §12): what they POST is batched, and commands wait for them.

Each request's samples (or status, or command response) are read at once in the view, so a
bad body is answered at once; what it said is offered to the web process's Intake
(devices/inprocess.py) and the request awaits its ack, which comes after the batch's commit:
many requests a second share one transaction, and no thread waits meanwhile (async views).
A device that waits for a command (a long poll, or `wait_for_command` on a POST) is in
`reach` of this process's dispatcher while it waits; a command is handed to the first waiting
request of its device and counts as `sent` when it is handed over.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from core.dialect import IotgwDecoder
from core.errors import DeliveryFailed
from core.topics import STATUS, device_topic
from core.transport import Outbound, Rejected, Said
from devices.inprocess import ProcessIngest, process_ingest


@dataclass(slots=True)
class Posted:
    """One request's envelope: what it said, already read, and the future its view awaits."""

    topic: str
    payload: bytes
    decoded: list[Said]
    refused: Rejected | None = None  # why storage refused it (a device disabled meanwhile), told before the ack
    done: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class HttpDevices:
    """The HTTP devices of this process: the Inlet of their requests and the Outlet of their waiting ones."""

    name = "http"
    connected = True  # the waiting requests are in this process

    def __init__(self, ingest: ProcessIngest, *, max_payload: int, max_clock_skew: float) -> None:
        self.ingest = ingest
        self.decoder = IotgwDecoder(max_payload=max_payload, max_skew=timedelta(seconds=max_clock_skew))
        self._waiting: dict[str, list[asyncio.Future[Outbound]]] = {}
        # Any device that waits here may be given its commands (it asks for them), whatever it was last seen on.
        self.dispatcher = ingest.dispatcher(self, transports=None, reach=lambda: self._waiting.keys())

    async def store(self, device_id: str, said: list[Said]) -> Rejected | None:
        """Offer what a request said and return once it is committed: None, or why storage refused it."""
        posted = Posted(device_topic(device_id, STATUS), b"", said)
        self.ingest.intake.offer(self, [posted])
        await posted.done
        return posted.refused

    def refused(self, posted: Posted, rejected: Rejected) -> None:
        """The pipeline refused what a request said (its ack follows)."""
        posted.refused = rejected

    def ack(self, batch: Sequence[Posted]) -> None:
        """After the commit: each waiting view answers."""
        for posted in batch:
            if not posted.done.done():
                posted.done.set_result(None)

    async def next_command(self, device_id: str, wait: float) -> Outbound | None:
        """The device's next command within `wait` seconds, or None; counted `sent` once it is returned."""
        waiter: asyncio.Future[Outbound] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(device_id, []).append(waiter)
        await self.ingest.hold(device_id)
        self.ingest.nudge([device_id])
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):  # not wait_for, which can swallow a cancel on Python 3.11
                    await asyncio.shield(waiter)
        finally:
            waiters = self._waiting.get(device_id, [])
            if waiter in waiters:
                waiters.remove(waiter)
            if not waiters:
                self._waiting.pop(device_id, None)
            await self.ingest.release(device_id)
        # Handed over in the very moment the wait ran out: it is the device's all the same.
        return waiter.result() if waiter.done() else None

    # --- Outlet ---------------------------------------------------------------------------------

    async def until_connected(self) -> None:
        return None

    async def until_disconnected(self) -> None:
        await asyncio.Event().wait()

    async def deliver(self, command: Outbound) -> None:
        """Hand the command to a request of its device still waiting; DeliveryFailed when none is."""
        for waiter in self._waiting.get(command.device_id, []):
            if not waiter.done():
                waiter.set_result(command)
                return
        raise DeliveryFailed(f"no request of device {command.device_id} waits here")


_transports: dict[int, HttpDevices] = {}


def http_devices(*, max_payload: int, max_clock_skew: float, **ingest: Any) -> HttpDevices:
    """This event loop's HTTP device transport, on its process pipeline."""
    pipeline = process_ingest(**ingest)
    transport = _transports.get(id(pipeline))
    if transport is None or transport.ingest is not pipeline:
        transport = _transports[id(pipeline)] = HttpDevices(pipeline, max_payload=max_payload,
                                                            max_clock_skew=max_clock_skew)
    return transport
