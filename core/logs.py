"""Logging a failure that repeats (Redis away, the database away) without flooding the log."""

from __future__ import annotations

import logging
import math
import time

logger = logging.getLogger("iotgw.push")


class FailureLog:
    """A warning for a failure that repeats (Redis away): one line per `interval`, saying how many it stands for."""

    def __init__(self, what: str, *, interval: float = 10.0, log: logging.Logger | None = None) -> None:
        self._what = what
        self._interval = interval
        self._log = log or logger
        self._last = -math.inf
        self._unlogged = 0
        self._failing = 0

    def failed(self, exc: BaseException) -> None:
        """Count a failure; log it if the last line is `interval` old."""
        self._failing += 1
        self._unlogged += 1
        now = time.monotonic()
        if now - self._last < self._interval:
            return
        more = f" ({self._unlogged} failures in the last {now - self._last:.0f} s)" if self._unlogged > 1 else ""
        self._log.warning("%s: %s%s", self._what, str(exc) or type(exc).__name__, more)
        self._last, self._unlogged = now, 0

    def recovered(self) -> None:
        """A success: after failures, one line saying it works again."""
        if self._failing:
            self._log.warning("%s: works again after %d failures", self._what.split(" failed")[0], self._failing)
            self._failing = self._unlogged = 0
            self._last = -math.inf
