"""Ingest stats: the rejection log stays bounded whatever the junk; the latency histogram has fixed buckets."""

from __future__ import annotations

import logging
import time

from devices.stats import LATENCY_BUCKETS, LOG_LINES_PER_INTERVAL, IngestStats


def test_150k_unknown_devices_write_a_bounded_number_of_lines_and_keep_a_bounded_table(caplog, monkeypatch):
    stats = IngestStats(log_interval=10.0)
    with caplog.at_level(logging.WARNING, logger="iotgw.bridge"):
        for n in range(150_000):
            stats.reject(source=f"ghost-{n}", reason="unknown_device", message="device unknown_device")
        lines = [r for r in caplog.records if r.name == "iotgw.bridge"]
        assert len(lines) == LOG_LINES_PER_INTERVAL
        start = time.monotonic()
        monkeypatch.setattr(time, "monotonic", lambda: start + 11)  # the interval is over
        stats.flush()
        summary = caplog.records[-1].getMessage()
        assert summary.startswith(f"{150_000 - LOG_LINES_PER_INTERVAL} more rejected messages not logged")
        assert "unknown_device" in summary
        stats.reject(source="ghost-0", reason="unknown_device", message="device unknown_device")
        assert caplog.records[-1].getMessage().startswith("rejected message from ghost-0"), "a new interval logs again"
    assert stats.rejected["unknown_device"] == 150_001


def test_a_source_is_logged_once_per_interval(caplog, monkeypatch):
    stats = IngestStats(log_interval=10.0)
    with caplog.at_level(logging.WARNING, logger="iotgw.bridge"):
        for _ in range(5):
            stats.reject(source="d1", reason="bad_sample", message="x")
        assert [r.getMessage() for r in caplog.records] == ["rejected message from d1: bad_sample: x"]
        start = time.monotonic()
        monkeypatch.setattr(time, "monotonic", lambda: start + 11)
        stats.flush()
    assert caplog.records[-1].getMessage().startswith("4 more rejected messages not logged")



def test_latency_buckets_span_a_millisecond_to_ten_seconds():
    assert LATENCY_BUCKETS[0] == 0.001 and LATENCY_BUCKETS[-1] == 10.0
    assert list(LATENCY_BUCKETS) == sorted(set(LATENCY_BUCKETS))


def test_the_histogram_counts_messages_cumulatively_with_upper_bounds_inclusive():
    stats = IngestStats()
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
