"""A web process's own pipeline: what WebSocket and HTTP devices say, batched like the bridge's, and their commands.

The device-facing edges of a web process (protocols/ for WebSocket devices, api/ for HTTP
devices) offer to one `Intake`, drained by one `IngestPipeline` on the process's event loop:
5,000 samples a second from many sockets or requests are a few transactions, not 5,000, and
each is acknowledged after its commit. Each edge attaches a `CommandDispatcher` on its own
Outlet that reaches only the devices connected to this process. A new command reaches the
process as a nudge on its device's group (`core.channels.device_group`), which this process
joins while it holds the device; the dispatchers' sweep covers a lost nudge. It starts on
first use, once per event loop (Daphne has no start-up hook an application can use).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import socket
from collections import Counter
from collections.abc import Callable, Collection, Coroutine, Iterable
from typing import Any

from channels.layers import get_channel_layer

from core.channels import DEVICE_NUDGE, device_group
from core.push import PushBatch
from core.retry import Backoff, retry
from core.transport import Outlet
from core.wire import CommandResponse
from devices.dispatch import CommandDispatcher
from devices.pipeline import Committed, IngestPipeline, Intake
from devices.pusher import Pusher
from devices.stats import IngestStats

logger = logging.getLogger("iotgw.devices")


class ProcessIngest:
    """One web process's intake, pipeline and command dispatchers (one per device-facing transport)."""

    def __init__(self, *, layer: Any, max_batch: int = 5000, push_buckets: int = 1, push_interval: float = 0.01,
                 backlog: int = 50_000, sweep_interval: float = 1.0) -> None:
        self.layer = layer
        self.stats = IngestStats()
        self.intake = Intake()
        self.backlog = backlog  # envelopes waiting past which an edge refuses more (`busy`), instead of growing
        self.pusher = Pusher(layer=layer, stats=self.stats, buckets=push_buckets, interval=push_interval)
        self.pipeline = IngestPipeline(intake=self.intake, stats=self.stats, pusher=self.pusher, max_batch=max_batch,
                                       responses=self, listeners=[self])
        self.owner = f"web:{socket.gethostname()[:30]}:{os.getpid()}"
        self._sweep_interval = sweep_interval
        self._dispatchers: dict[str, CommandDispatcher] = {}
        self._held: Counter[str] = Counter()  # device id → connections (sockets, waiting requests) held here
        self.stored_by: Counter[str] = Counter()  # samples committed, by the transport that brought them
        self._channel: str | None = None
        self._tasks: list[asyncio.Task[None]] = [_background(self.pipeline.run())]

    def count_stored(self, transport: str, samples: int) -> None:
        """Samples of one transport committed (its edge counts them at the ack, for /metrics)."""
        self.stored_by[transport] += samples

    @property
    def running(self) -> bool:
        """Whether the pipeline still drains the intake."""
        return not self._tasks[0].done()

    @property
    def full(self) -> bool:
        """More waits than the backlog: an edge refuses what it is offered until the pipeline catches up."""
        return len(self.intake) >= self.backlog

    def dispatcher(self, outlet: Outlet, *, transports: Iterable[str] | None,
                   reach: Callable[[], Collection[str]]) -> CommandDispatcher:
        """The dispatcher of one transport's outlet, started on first use; it claims only devices in `reach`."""
        dispatcher = self._dispatchers.get(outlet.name)
        if dispatcher is None:
            # The bridges time out and expire commands; a web process only delivers what its devices can take.
            dispatcher = self._dispatchers[outlet.name] = CommandDispatcher(
                outlet=outlet, owner=f"{self.owner}:{outlet.name}", stats=self.stats, pusher=self.pusher,
                interval=self._sweep_interval, transports=transports, reach=reach, housekeep=False)
            self._tasks.append(_background(dispatcher.run()))
        return dispatcher

    async def hold(self, device_id: str) -> None:
        """A connection of this device is here now: its commands' nudges come to this process."""
        self._held[device_id] += 1
        if self._held[device_id] == 1:
            try:
                await self.layer.group_add(device_group(device_id), await self._own_channel())
            except Exception as exc:  # Redis away: the sweep delivers its commands within an interval
                logger.warning("could not join %s's group: %s", device_id, exc)

    async def release(self, device_id: str) -> None:
        """One connection of this device is gone."""
        self._held[device_id] -= 1
        if self._held[device_id] > 0:
            return
        del self._held[device_id]
        if self._channel is not None:
            try:
                await self.layer.group_discard(device_group(device_id), self._channel)
            except Exception as exc:  # the membership expires with the layer's group_expiry
                logger.info("could not leave %s's group: %s", device_id, exc)

    def nudge(self, device_ids: Iterable[str]) -> None:
        """Look for queued commands of these devices now, on every transport of this process."""
        device_ids = list(device_ids)
        for dispatcher in self._dispatchers.values():
            dispatcher.nudge(device_ids)

    async def _own_channel(self) -> str:
        if self._channel is None:
            self._channel = await self.layer.new_channel()
            self._tasks.append(_background(self._listen(self._channel)))
        return self._channel

    async def _listen(self, channel: str) -> None:
        """Nudges for the devices held here (core.channels.device_nudge), until cancelled."""

        def failed(exc: BaseException, delay: float) -> None:
            logger.debug("device nudges: receive failed (retrying in %.1fs): %s", delay, exc)

        while True:
            message = await retry(lambda: self.layer.receive(channel), on=(Exception,),
                                  backoff=Backoff(first=0.1, most=5.0), failed=failed)
            if message.get("type") == DEVICE_NUDGE and isinstance(message.get("device"), str):
                self.nudge([message["device"]])

    # The pipeline's ResponseResolver and BatchListener, on behalf of every dispatcher of the process.

    async def resolve(self, responses: list[tuple[str, CommandResponse]], push: PushBatch) -> None:
        """Apply a batch's command responses (any dispatcher does: resolving is the same on every transport)."""
        dispatcher = next(iter(self._dispatchers.values()), None)
        if dispatcher is None:
            for device_id, _ in responses:
                self.stats.reject(source=device_id, reason="response_unhandled", message="no command handler")
            return
        await dispatcher.resolve(responses, push)

    async def committed(self, batch: Committed) -> None:
        """A device that came online gets its queued commands at once."""
        if batch.came_online:
            self.nudge(batch.came_online)

    def close(self) -> None:
        """Stop the loops (tests; a web process runs it until it exits)."""
        for task in self._tasks:
            task.cancel()


def _background(coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    """A task of the process, not of the request or socket that happened to start it.

    A task inherits its creator's context, and under Django's ASGI handler that holds the request's
    own thread for sync code (asgiref's ThreadSensitiveContext), which quits when the request ends:
    every later database call of the pipeline failed with "CurrentThreadExecutor already quit". In
    a fresh context they run on the process's one thread for thread-sensitive code.
    """
    return asyncio.get_running_loop().create_task(coro, context=contextvars.Context())


_by_loop: dict[asyncio.AbstractEventLoop, ProcessIngest] = {}


def process_ingests() -> list[ProcessIngest]:
    """The pipelines of this process's event loops (one under Daphne), for /metrics and /readyz."""
    return [ingest for loop, ingest in list(_by_loop.items()) if not loop.is_closed()]


def process_ingest(**options: Any) -> ProcessIngest:
    """This event loop's ProcessIngest, created with `options` on first use (the layer defaults to the default one)."""
    loop = asyncio.get_running_loop()
    ingest = _by_loop.get(loop)
    if ingest is None:
        for old in [key for key in _by_loop if key.is_closed()]:
            del _by_loop[old]
        options.setdefault("layer", get_channel_layer())
        ingest = _by_loop[loop] = ProcessIngest(**options)
    return ingest
