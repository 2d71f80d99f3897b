"""The rejection log stays bounded whatever the junk: lines per interval and memory alike."""

from __future__ import annotations

import logging
import time

from bridge.stats import LOG_LINES_PER_INTERVAL, BridgeStats


def test_150k_unknown_devices_write_a_bounded_number_of_lines_and_keep_a_bounded_table(caplog, monkeypatch):
    stats = BridgeStats(log_interval=10.0)
    with caplog.at_level(logging.WARNING, logger="iotgw.bridge"):
        for n in range(150_000):
            stats.reject(source=f"ghost-{n}", reason="unknown_device", message="device unknown_device")
        assert len(stats._logged) <= LOG_LINES_PER_INTERVAL
        lines = [r for r in caplog.records if r.name == "iotgw.bridge"]
        assert len(lines) == LOG_LINES_PER_INTERVAL
        start = time.monotonic()
        monkeypatch.setattr(time, "monotonic", lambda: start + 11)  # the interval is over
        stats.flush()
    summary = caplog.records[-1].getMessage()
    assert summary.startswith(f"{150_000 - LOG_LINES_PER_INTERVAL} more rejected messages not logged")
    assert "unknown_device" in summary
    assert stats.rejected["unknown_device"] == 150_000 and not stats._logged and not stats._suppressed


def test_a_source_is_logged_once_per_interval():
    stats = BridgeStats()
    for _ in range(5):
        stats.reject(source="d1", reason="bad_sample", message="x")
    assert stats._logged == {"d1"} and stats._suppressed["bad_sample"] == 4
