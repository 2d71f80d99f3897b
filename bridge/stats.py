"""The bridge's counters and its rate-limited rejection log."""

from __future__ import annotations

import logging
import time
from collections import Counter, deque

logger = logging.getLogger("iotgw.bridge")

LATENCY_WINDOW = 60.0


# At most this many rejection lines per interval in all (one per source), then one line with the count of the rest:
# telemetry from 150k unknown device ids used to write 150k lines and keep an entry per id for good.
LOG_LINES_PER_INTERVAL = 20


class BridgeStats:
    """Counters a heartbeat publishes: received, stored, rejected by reason, pushes."""

    def __init__(self, *, log_interval: float = 10.0, log_lines: int = LOG_LINES_PER_INTERVAL) -> None:
        self.counts: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self._log_interval = log_interval
        self._log_lines = log_lines
        self._window_start = time.monotonic()
        self._logged: set[str] = set()  # sources logged in this window: at most `log_lines`
        self._suppressed: Counter[str] = Counter()  # by reason: a handful of keys
        # (when, seconds) of recent batches, receive → commit; bounded, and read over LATENCY_WINDOW.
        self._latency: deque[tuple[float, float]] = deque(maxlen=4096)

    def reject(self, *, source: str, reason: str, message: str) -> None:
        """Count a rejected message and log it: once per source and at most `log_lines` lines per interval."""
        self.rejected[reason] += 1
        self.flush()
        if source in self._logged or len(self._logged) >= self._log_lines:
            self._suppressed[reason] += 1
            return
        self._logged.add(source)
        logger.warning("rejected message from %s: %s: %s", source[:200], reason, message)

    def flush(self) -> None:
        """At the end of an interval, one line with what was not logged in it (called by the heartbeat too)."""
        now = time.monotonic()
        if now - self._window_start < self._log_interval:
            return
        if self._suppressed:
            reasons = ", ".join(f"{reason} {n}" for reason, n in self._suppressed.most_common())
            logger.warning("%d more rejected messages not logged in the last %.0f s (%s)",
                           sum(self._suppressed.values()), now - self._window_start, reasons)
        self._window_start = now
        self._logged = set()
        self._suppressed = Counter()

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
