"""One back-off for every retry loop: delays that double up to a ceiling, each jittered so retries spread out.

Without jitter, everything that failed together (every socket of a web process when Redis
restarts, every bridge when the database does) retries together, at the same instants.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


class Backoff:
    """`first`, then twice as long each time up to `most` seconds; each delay is ±`jitter` of itself at random."""

    __slots__ = ("first", "most", "jitter", "_next")

    def __init__(self, *, first: float, most: float, jitter: float = 0.2) -> None:
        self.first = first
        self.most = most
        self.jitter = jitter
        self._next = first

    def next(self) -> float:
        """The next delay, in seconds."""
        delay = self._next
        self._next = min(self.most, delay * 2)
        return delay * random.uniform(1 - self.jitter, 1 + self.jitter)

    def reset(self) -> None:
        """After a success: the next failure waits `first` again."""
        self._next = self.first


async def retry(call: Callable[[], Awaitable[T]], *, on: tuple[type[BaseException], ...], backoff: Backoff,
                failed: Callable[[BaseException, float], None]) -> T:
    """`await call()` until it returns; each failure in `on` is reported to `failed(exc, delay)`, then waited out."""
    while True:
        try:
            return await call()
        except on as exc:
            delay = backoff.next()
            failed(exc, delay)
            await asyncio.sleep(delay)


def backoff_delay(attempt: int, *, first: float, most: float, jitter: float = 0.2) -> float:
    """The delay after the `attempt`-th failure (1-based) of a retry kept in a database row, not a loop."""
    delay: float = min(most, first * 2.0 ** min(max(attempt - 1, 0), 60))
    return delay * random.uniform(1 - jitter, 1 + jitter)
