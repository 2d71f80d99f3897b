"""Pure counting for the failover scenario: commit gaps, dashboard resumption and missed items around each kill."""

from __future__ import annotations

import math
import statistics
from bisect import bisect_left
from collections.abc import Iterable, Sequence

STEP_S = 0.5  # committed/s is read in half-second buckets
BACK_AT = 0.9  # "committing again": a bucket at 90 % of the steady rate before the first kill
DIP_WITHIN_S = 3.0  # a kill's dip starts within this many seconds of it, or the kill did not dip the rate


def buckets(times: Iterable[float], start: float, end: float, step: float = STEP_S) -> list[int]:
    """How many of `times` (epoch s) fall in each `step` of [start, end)."""
    out = [0] * max(0, math.ceil((end - start) / step))
    for t in times:
        i = int((t - start) // step)
        if 0 <= i < len(out):
            out[i] += 1
    return out


def longest_empty_s(counts: Sequence[int], step: float = STEP_S) -> float:
    """The longest run of empty buckets, in seconds."""
    best = run = 0
    for c in counts:
        run = run + 1 if c == 0 else 0
        best = max(best, run)
    return best * step


def recovered_after_s(counts: Sequence[int], steady_per_s: float, step: float = STEP_S) -> float | None:
    """Seconds from the kill until the committed rate, after dipping below 90 % of steady, is back above it.

    0 when it did not dip within DIP_WITHIN_S of the kill; None when it never came back.
    """
    threshold = BACK_AT * steady_per_s * step
    first = next((i for i, c in enumerate(counts) if c < threshold and i * step < DIP_WITHIN_S), None)
    if first is None:
        return 0.0
    back = next((j for j in range(first + 1, len(counts)) if counts[j] >= threshold), None)
    return None if back is None else round(back * step, 2)


def below_s(counts: Sequence[int], steady_per_s: float, step: float = STEP_S) -> float:
    """Seconds in which fewer than 90 % of the steady rate were committed."""
    return sum(step for c in counts if c < BACK_AT * steady_per_s * step)


def resumed_after_s(sent_ms: Sequence[float], lat_ms: Sequence[float], kill_ms: float) -> float | None:
    """Seconds from the kill until a dashboard got a sample published after it; None if it never did."""
    arrivals = [t + d for t, d in zip(sent_ms, lat_ms, strict=True) if t >= kill_ms]
    return round((min(arrivals) - kill_ms) / 1000, 3) if arrivals else None


def outages(events: Sequence[tuple]) -> list[tuple[float, float | None]]:
    """(socket closed, subscribed again) in epoch ms for each time a dashboard lost its socket."""
    out: list[tuple[float, float | None]] = []
    down: float | None = None
    for kind, at, *_ in events:
        if kind == "closed" and down is None:
            down = at
        elif kind == "subscribed" and down is not None:
            out.append((down, at))
            down = None
    if down is not None:
        out.append((down, None))
    return out


def per_window(values_ms: Sequence[float], bounds_ms: Sequence[float]) -> list[int]:
    """How many values fall in each window [bounds[i], bounds[i+1]), `values_ms` sorted."""
    edges = [bisect_left(values_ms, b) for b in bounds_ms]
    return [hi - lo for lo, hi in zip(edges, edges[1:], strict=False)]


def missed_items(expected: Sequence[Sequence[int]], received: Sequence[Sequence[int]]) -> list[dict]:
    """Per window, over dashboards: items expected (stored for their devices), received, missing in all and worst."""
    out = []
    for w in range(len(expected[0]) if expected else 0):
        missing = [e[w] - r[w] for e, r in zip(expected, received, strict=True)]
        out.append({"expected": sum(e[w] for e in expected), "received": sum(r[w] for r in received),
                    "missing": sum(max(0, m) for m in missing), "missing_worst_dashboard": max(missing, default=0),
                    "dashboards_missing_some": sum(1 for m in missing if m > 0)})
    return out


def spread(values: Sequence[float | None]) -> dict:
    """Median and worst of per-dashboard figures, and how many have none (never resumed)."""
    have = sorted(v for v in values if v is not None)
    return {"median": round(statistics.median(have), 3) if have else None, "worst": have[-1] if have else None,
            "none": len(values) - len(have)}

