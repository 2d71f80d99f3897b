"""The bridge's counters and its rate-limited rejection log."""

from __future__ import annotations

import logging
import time
from bisect import bisect_left
from collections import Counter

logger = logging.getLogger("iotgw.bridge")

# Upper bounds (seconds) of the ingest latency histogram: 1 ms to 10 s, about three per decade.
# Fixed, so the buckets of every bridge line up and Prometheus can add them across bridges.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class BridgeStats:
    """Counters a heartbeat publishes: received, stored, rejected by reason, pushes."""

    def __init__(self, *, log_interval: float = 10.0) -> None:
        self.counts: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self._log_interval = log_interval
        self._last_log: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()
        # Messages by receive → commit time, one count per bucket of LATENCY_BUCKETS (the last is +Inf).
        self._latency_counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self._latency_sum = 0.0

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

    def observe_latency(self, seconds: float, *, count: int = 1) -> None:
        """Count `count` messages that took `seconds` from receipt to commit (a batch shares one time)."""
        self._latency_counts[bisect_left(LATENCY_BUCKETS, seconds)] += count
        self._latency_sum += seconds * count

    def latency_histogram(self) -> dict[str, list | float]:
        """Cumulative counts per upper bound (the last is +Inf) and the sum, as Prometheus wants them."""
        cumulative, total = [], 0
        for n in self._latency_counts:
            total += n
            cumulative.append(total)
        return {"le": list(LATENCY_BUCKETS), "counts": cumulative, "sum": self._latency_sum}

    def snapshot(self) -> dict[str, object]:
        """A JSON-ready copy of the counters."""
        return {**self.counts, "rejected": dict(self.rejected), "latency": self.latency_histogram()}
