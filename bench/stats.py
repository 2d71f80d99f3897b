"""Pure helpers for summarising measurements: percentiles and latency summaries."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float, *, presorted: bool = False) -> float | None:
    """The q-th percentile (0-100) by the nearest-rank method; None for no values."""
    if not values:
        return None
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    data = values if presorted else sorted(values)
    rank = max(1, math.ceil(q / 100 * len(data)))
    return float(data[rank - 1])


def latency_summary(values: Sequence[float]) -> dict[str, float | int | None]:
    """Count, p50, p99 and max of latencies in milliseconds."""
    data = sorted(values)
    return {
        "n": len(data),
        "p50": percentile(data, 50, presorted=True),
        "p99": percentile(data, 99, presorted=True),
        "max": float(data[-1]) if data else None,
    }


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is missing or b is zero."""
    if a is None or b is None or b == 0:
        return None
    return a / b
