"""The one way tests and the benchmark wait: on a condition, with a deadline, never on a bare sleep."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from asgiref.sync import sync_to_async


def wait_until(predicate: Callable[[], Any], *, timeout: float = 15.0, interval: float = 0.05, what: str = "") -> Any:
    """Poll `predicate` until it returns something truthy, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


async def await_until(predicate: Callable[[], Any], *, timeout: float = 15.0, what: str = "") -> Any:
    """`wait_until` for async tests; the predicate may touch the ORM."""
    return await sync_to_async(wait_until, thread_sensitive=False)(predicate, timeout=timeout, what=what)
