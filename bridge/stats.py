"""The bridge's counters and its rate-limited rejection log."""

from __future__ import annotations

import logging
import time
from collections import Counter, deque

logger = logging.getLogger("iotgw.bridge")

LATENCY_WINDOW = 60.0


class BridgeStats:
    """Counters a heartbeat publishes: received, stored, rejected by reason, pushes."""

    def __init__(self, *, log_interval: float = 10.0) -> None:
        self.counts: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self._log_interval = log_interval
        self._last_log: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()
        # (when, seconds) of recent batches, receive → commit; bounded, and read over LATENCY_WINDOW.
        self._latency: deque[tuple[float, float]] = deque(maxlen=4096)

    def reject(self, *, source: str, reason: str, message: str) -> None:
        """Count a rejected message and log it, at most once per interval per source."""
        self.rejected[reason] += 1
        now = time.monotonic()
        if now - self._last_log.get(source, -1e9) < self._log_interval:
            self._suppressed[source] += 1
            return
        if len(self._last_log) > 10_000:
            self._last_log.clear()
        self._last_log[source] = now
        more = self._suppressed.pop(source, 0)
        suffix = f" (+{more} more suppressed)" if more else ""
        logger.warning("rejected message from %s: %s: %s%s", source, reason, message, suffix)

    def observe_latency(self, seconds: float) -> None:
        """Record how long a batch took from receipt to commit."""
        self._latency.append((time.monotonic(), seconds))

    def latency(self) -> dict[str, float]:
        """p50 and p99 of receive → commit over the last LATENCY_WINDOW seconds (empty when idle)."""
        since = time.monotonic() - LATENCY_WINDOW
        values = sorted(s for at, s in self._latency if at >= since)
        if not values:
            return {}
        pick = lambda q: values[min(len(values) - 1, int(q * len(values)))]  # noqa: E731
        return {"p50": pick(0.50), "p99": pick(0.99), "count": len(values)}

    def snapshot(self) -> dict[str, object]:
        """A JSON-ready copy of the counters."""
        return {**self.counts, "rejected": dict(self.rejected), "latency": self.latency()}
