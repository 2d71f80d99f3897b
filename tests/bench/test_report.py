"""The bench's target table: a phase that lost anything never counts, and each target says reached or not."""

from bench.report import targets


def phase(rate, stored_rate, delivered_rate, *, batch=1, lost=0, missed=0, p99=40.0):
    return {"offered_rate": rate, "batch": batch, "stored_rate_window": stored_rate, "lost_stored": lost,
            "dashboards": {"delivered_rate_window_min": delivered_rate, "lost_min_dashboard": missed},
            "slice_dashboards": {"missing_total": 0}, "latency_ms": {"p99": p99}}


def results(*phases, commands_p99=45.0):
    return {"config": {"dashboards": 2, "slice_dashboards": 100},
            "scenarios": {"gateway": {"phases": list(phases)}},
            "commands": {"measured": True, "rate": 20.0, "rtt_ms": {"p99": commands_p99}},
            "ratios": {"sustained": {"x_1_per_msg": 60.0, "gateway_1_per_msg": 12000.0, "naive": 200.0}}}


def test_a_lossy_phase_does_not_count_towards_throughput():
    table = dict((t, (m, ok)) for t, m, ok in targets(results(
        phase(5000, 5000, 5000, p99=60.0), phase(30000, 25000, 25000, lost=3), phase(15000, 14000, 13500))))
    measured, ok = table["≥ 20,000 samples/s stored and delivered to 100 dashboards, 0 lost (one sample per message)"]
    assert measured.startswith("13,500/s to 102 dashboards") and ok is False
    assert table["MQTT → WebSocket p99 ≤ 50 ms at 5,000 msg/s"] == ("60.0 ms", False)
    assert table["command round trip p99 ≤ 50 ms"][1] is True
    assert table["≥ 50× the naive pattern's sustained throughput"][1] is True


def test_batched_devices_are_judged_apart():
    table = {t: ok for t, _, ok in targets(results(phase(5000, 5000, 5000), phase(30000, 24000, 23000, batch=10)))}
    assert table["≥ 20,000 samples/s stored and delivered to 100 dashboards, 0 lost (batched devices)"] is True
    assert table["≥ 20,000 samples/s stored and delivered to 100 dashboards, 0 lost (one sample per message)"] is False
