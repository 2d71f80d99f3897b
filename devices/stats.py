"""Ingest counters and the rate-limited rejection log (a bridge publishes them in its heartbeat)."""

from __future__ import annotations

import logging
import time
from bisect import bisect_left
from collections import Counter, OrderedDict
from datetime import UTC, datetime

logger = logging.getLogger("iotgw.bridge")

# Upper bounds (seconds) of the ingest latency histogram: 1 ms to 10 s, about three per decade.
# Fixed, so the buckets of every bridge line up and Prometheus can add them across bridges.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


# At most this many rejection lines per interval in all (one per source), then one line with the count of the rest:
# telemetry from 150k unknown device ids used to write 150k lines and keep an entry per id for good.
LOG_LINES_PER_INTERVAL = 20
# Sources whose last rejection waits for the next heartbeat to be written to their device (the newest kept).
RECENT_SOURCES = 500


class IngestStats:
    """Counters of one process's ingest that its heartbeat publishes: received, stored, rejected by reason, pushes."""

    def __init__(self, *, log_interval: float = 10.0, log_lines: int = LOG_LINES_PER_INTERVAL) -> None:
        self.counts: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self._log_interval = log_interval
        self._log_lines = log_lines
        self._window_start = time.monotonic()
        self._logged: set[str] = set()  # sources logged in this window: at most `log_lines`
        self._suppressed: Counter[str] = Counter()  # by reason: a handful of keys
        # Messages by receive → commit time, one count per bucket of LATENCY_BUCKETS (the last is +Inf).
        self._latency_counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self._latency_sum = 0.0
        self._recent: OrderedDict[str, dict[str, str]] = OrderedDict()

    def take_recent(self) -> dict[str, dict[str, str]]:
        """The last rejection of each source since the previous call ({source: {reason, message, at}})."""
        recent, self._recent = dict(self._recent), OrderedDict()
        return recent

    def reject(self, *, source: str, reason: str, message: str) -> None:
        """Count a rejected message and log it: once per source and at most `log_lines` lines per interval."""
        self.rejected[reason] += 1
        self._recent[source] = {"reason": reason, "message": message[:300], "at": datetime.now(UTC).isoformat()}
        self._recent.move_to_end(source)
        if len(self._recent) > RECENT_SOURCES:
            self._recent.popitem(last=False)
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
