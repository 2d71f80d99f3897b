"""The bridge's ingest latency histogram: fixed buckets from 1 ms to 10 s, cumulative counts, a sum."""

from __future__ import annotations

from bridge.stats import LATENCY_BUCKETS, BridgeStats


def test_latency_buckets_span_a_millisecond_to_ten_seconds():
    assert LATENCY_BUCKETS[0] == 0.001 and LATENCY_BUCKETS[-1] == 10.0
    assert list(LATENCY_BUCKETS) == sorted(set(LATENCY_BUCKETS))


def test_the_histogram_counts_messages_cumulatively_with_upper_bounds_inclusive():
    stats = BridgeStats()
    stats.observe_latency(0.0004, count=3)  # three messages of one batch
    stats.observe_latency(0.001)  # on a bound: counted in that bucket, as Prometheus's `le` says
    stats.observe_latency(0.3, count=2)
    stats.observe_latency(42.0)  # beyond the last bound: +Inf only
    histogram = stats.snapshot()["latency"]
    counts = dict(zip([*histogram["le"], "+Inf"], histogram["counts"], strict=True))
    assert counts[0.001] == 4 and counts[0.25] == 4 and counts[0.5] == 6 and counts[10.0] == 6
    assert counts["+Inf"] == 7
    assert histogram["counts"] == sorted(histogram["counts"])
    assert abs(histogram["sum"] - (3 * 0.0004 + 0.001 + 0.6 + 42.0)) < 1e-9
