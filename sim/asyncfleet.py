"""What the CoAP and the WebSocket/HTTP simulators share: devices on one event loop, samples spread evenly."""

from __future__ import annotations

import asyncio
import heapq
import random
import time
from collections.abc import Callable
from typing import Any

from sim.simulator import SimulatorRefused, Stats, spread


class AsyncFleet:
    """N devices sending `rate` samples/s in total, spread evenly, on one event loop.

    A subclass makes its devices (`_device`) and starts them (`_start_devices`); each device has
    `publish_sample()` and `async stop()`.
    """

    no_answer = "no answer from the server"

    def __init__(self, *, devices: dict[str, str | None], rate: float, latency: float = 0.2,
                 failure_rate: float = 0.0, seed: int | None = None,
                 latest: dict[str, dict[str, Any]] | None = None) -> None:
        if rate <= 0:
            raise ValueError("rate must be above 0 samples/s")
        self.rate = rate
        self.latency = latency
        self.failure_rate = failure_rate
        self.rng = random.Random(seed)
        self.stats = Stats()
        latest = latest or {}
        self.devices = [self._device(d, s, None if seed is None else seed + i, latest.get(d))
                        for i, (d, s) in enumerate(devices.items())]
        self._stop_requested = False
        self._pending: set[asyncio.Task[Any]] = set()

    def _device(self, device_id: str, secret: str | None, seed: int | None, latest: dict[str, Any] | None) -> Any:
        raise NotImplementedError

    async def _start_devices(self) -> None:
        raise NotImplementedError

    def _heard_nothing(self) -> bool:
        """No device got in yet: after `give_up_after` seconds of this, the run says why and stops."""
        return not self.stats.logins

    def later(self, delay: float, action: Any) -> None:
        """Run a coroutine after `delay` seconds."""
        async def run() -> None:
            await asyncio.sleep(delay)
            await action

        task = asyncio.ensure_future(run())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def stop(self) -> None:
        """Ask `run()` to return (from a signal handler or another thread)."""
        self._stop_requested = True

    def run(self, *, duration: float | None = None, progress: Callable[[Stats], None] | None = None,
            progress_every: float = 0.5, give_up_after: float | None = None) -> Stats:
        """Start every device, send until `duration` passes or `stop()`, then stop every device."""
        self._stop_requested = False
        return asyncio.run(self._run(duration, progress, progress_every, give_up_after))

    async def _run(self, duration: float | None, progress: Callable[[Stats], None] | None, progress_every: float,
                   give_up_after: float | None) -> Stats:
        await self._start_devices()
        start = time.monotonic()
        period = len(self.devices) / self.rate
        due = [(t, i) for i, t in enumerate(spread(len(self.devices), self.rate, start))]
        heapq.heapify(due)
        next_progress = start
        try:
            while not self._stop_requested:
                now = time.monotonic()
                if duration is not None and now - start >= duration:
                    break
                if give_up_after is not None and self._heard_nothing() and now - start >= give_up_after:
                    raise SimulatorRefused(self.stats.refusal or self.no_answer)
                while due and due[0][0] <= now:
                    t, i = heapq.heappop(due)
                    self.devices[i].publish_sample()
                    heapq.heappush(due, (max(t + period, now - period), i))
                if progress is not None and now >= next_progress:
                    progress(self.stats)
                    next_progress = now + progress_every
                await asyncio.sleep(max(0.0, min((due[0][0] if due else now + 0.1) - time.monotonic(), 0.1)))
        finally:
            await asyncio.gather(*(device.stop() for device in self.devices), return_exceptions=True)
            if progress is not None:
                progress(self.stats)
        return self.stats
