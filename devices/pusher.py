"""Push pacing: what the pipeline committed goes to dashboards merged, at most one push per interval.

One push is a group_send per bucket, and every web process pays a Redis round trip per
message it receives: at most one push per `interval` (IOTGW_PUSH_INTERVAL) keeps that cost
flat however small the batches get. A push that carries a frame someone waits on (a
command's answer) goes at once, with whatever telemetry it merged.
"""

from __future__ import annotations

import asyncio
import logging

from core.logs import FailureLog
from core.push import Layer, PushBatch, push_send
from devices.stats import IngestStats

logger = logging.getLogger("iotgw.push")

# Ingest waits for the pusher when more than this many items are waiting to go out.
PUSH_BACKLOG = 50_000


class Pusher:
    """Sends pushes one after the other (frames keep their order), merging what arrives meanwhile."""

    def __init__(self, *, layer: Layer, stats: IngestStats, buckets: int = 1, interval: float = 0.01,
                 backlog: int = PUSH_BACKLOG) -> None:
        self.layer = layer
        self.buckets = buckets
        self._stats = stats
        self._interval = interval
        self._backlog = backlog
        self._next: PushBatch | None = None
        self._task: asyncio.Task[None] | None = None
        self._now = asyncio.Event()  # set for an urgent push: the pusher stops waiting out the interval
        self._failures = FailureLog("push to dashboards failed", log=logger)

    def batch(self) -> PushBatch:
        """An empty push in this process's buckets."""
        return PushBatch(buckets=self.buckets)

    async def offer(self, push: PushBatch) -> None:
        """Hand a push on; while one is being sent it merges into the next. Waits only past the backlog."""
        if not push:
            return
        if self._next is None:
            self._next = push
        else:
            self._next.merge(push)
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())
        elif self._next.size > self._backlog:
            await asyncio.shield(self._task)
        elif push.urgent:
            self._now.set()

    async def flushed(self) -> None:
        """Return once everything offered so far has been sent (or given up)."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    async def send_now(self, push: PushBatch) -> None:
        """Send a push of its own at once, outside the pacing (presence sweeps, command state)."""
        if push:
            await self._send(push)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self._next is not None:
            push, self._next = self._next, None
            self._now.clear()
            started = loop.time()
            await self._send(push)
            if self._next is not None and self._next.urgent:
                continue
            try:  # asyncio.timeout: Python 3.11's wait_for can swallow a cancel that meets an urgent push
                async with asyncio.timeout(max(0.0, self._interval - (loop.time() - started))):
                    await self._now.wait()
            except TimeoutError:
                pass

    async def _send(self, push: PushBatch) -> None:
        try:
            await push_send(self.layer, push)
            self._stats.counts["pushes"] += 1
            self._failures.recovered()
        except Exception as exc:  # the layer is best-effort; storage already happened
            self._stats.counts["push_errors"] += 1
            self._failures.failed(exc)
