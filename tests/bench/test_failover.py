"""The failover scenario's counting: commit gaps and recovery, dashboards resuming, missed items, the report."""

from array import array

from bench import failover_counts as fc
from bench.failover import Timeline
from bench.report import failover_table, targets


def test_a_stretch_without_commits_is_the_longest_run_of_empty_buckets():
    times = [0.1, 0.2, 0.6] + [2.6, 2.7, 3.1]  # nothing from 1.0 to 2.5
    counts = fc.buckets(times, 0.0, 3.5)
    assert counts == [2, 1, 0, 0, 0, 2, 1]
    assert fc.longest_empty_s(counts) == 1.5


def test_the_rate_is_steady_again_after_its_first_dip():
    steady = 1000.0  # 500 per half-second bucket
    assert fc.recovered_after_s([500, 250, 250, 260, 900, 500], steady) == 2.0
    assert fc.below_s([500, 250, 250, 260, 900, 500], steady) == 1.5
    assert fc.recovered_after_s([500, 480, 470, 500], steady) == 0.0, "no dip: nothing to recover from"
    assert fc.recovered_after_s([500, 0, 0, 0], steady) is None, "never came back"
    # A dip that starts long after the kill is not the kill's.
    assert fc.recovered_after_s([500] * 8 + [0, 500], steady) == 0.0


def test_a_dashboard_resumes_with_the_first_sample_published_after_the_kill():
    sent, lat = array("d", [900.0, 1010.0, 1500.0]), array("d", [20.0, 2000.0, 30.0])
    assert fc.resumed_after_s(sent, lat, 1000.0) == 0.53  # 1500 + 30, before the late 1010 + 2000
    assert fc.resumed_after_s(sent, lat, 2000.0) is None


def test_an_outage_runs_from_the_first_close_to_the_next_subscribe():
    events = [("subscribed", 0.0, 0), ("closed", 100.0), ("closed", 1200.0), ("subscribed", 2400.0, 1),
              ("closed", 5000.0)]
    assert fc.outages(events) == [(100.0, 2400.0), (5000.0, None)]


def test_missed_items_are_counted_per_window_and_per_dashboard():
    bounds = [0.0, 10.0, 20.0]
    expected = [fc.per_window([1, 2, 3, 11, 12], bounds), fc.per_window([5, 15], bounds)]
    received = [fc.per_window([1, 2, 3, 12], bounds), fc.per_window([5, 15], bounds)]
    assert fc.missed_items(expected, received) == [
        {"expected": 4, "received": 4, "missing": 0, "missing_worst_dashboard": 0, "dashboards_missing_some": 0},
        {"expected": 3, "received": 2, "missing": 1, "missing_worst_dashboard": 1, "dashboards_missing_some": 1}]


def test_the_quick_timeline_kills_each_kind_once_and_leaves_a_tail_to_recover_in():
    tl = Timeline.for_mode(quick=True)
    kills = tl.kills()
    assert [k for k, _ in kills] == ["bridge", "web", "redis"]
    assert kills[-1][1] + tl.down < tl.duration - 5 and tl.duration < 60


def kill(name, at, **more):
    missed = {"expected": 1000, "received": 990, "missing": 10, "missing_worst_dashboard": 7,
              "dashboards_missing_some": 2}
    return {"killed": name, "at_s": at, "commit_gap_s": 0.0, "commit_below_90pct_s": 0.5,
            "commit_recovered_after_s": 0.5, "dashboards_resumed_after_s": {"median": 0.1, "worst": 1.5, "none": 1},
            "dashboards_reconnected": 0, "reconnect_s": None, "missed": missed, **more}


def failover_result(**more):
    return {"offered_rate": 2000.0, "duration_s": 44.0, "down_s": 3.0, "devices": 200, "dashboards": 22,
              "sentinels": 3, "down_after_ms": 2000, "acked": 1000, "stored_distinct": 998, "rows": 1001, "lost": 2,
              "duplicates": 3, "steady_committed_per_s": 1990.0,
              "before_first_kill": {"expected": 5, "missing": 0},
              "marks": [{"what": "web killed", "at_s": 18.0}, {"what": "web ready", "at_s": 25.0}],
              "kills": [kill("bridge", 6.0, restarted_after_s=6.2, redelivered_in_flight=18, queued_in_session=2998,
                             redelivered_already_stored=0),
                        kill("web", 18.0, dashboards_reconnected=11, reconnect_s={"median": 1.3, "worst": 1.5}),
                        kill("redis master", 30.0, promoted_after_s=3.3)], **more}


def test_the_report_says_what_was_lost_and_how_each_kill_recovered():
    text = failover_table(failover_result())
    assert "**lost 2**, duplicates 3" in text
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert "| 6.2 |" in rows["bridge"] and "| 7.0 |" in rows["web"] and "| 3.3 |" in rows["redis master"]
    assert "0.10 / 1.50 (1 never)" in rows["bridge"] and "11 (1.30 / 1.50)" in rows["web"]
    assert "10 (7) of 1,000" in rows["redis master"]
    assert "18 samples in flight unacked at the kill" in text and "2,998 of its share queued" in text


def test_the_failover_target_needs_nothing_lost_and_every_dashboard_back():
    def judged(**more):
        r = {"scenarios": {}, "config": {}, "failover": failover_result(**more)}
        return {t: (m, ok) for t, m, ok in targets(r)}["a bridge, a web and the Redis master killed under load: "
                                                         "nothing lost"]

    measured, ok = judged()
    assert measured.startswith("lost 2, duplicates 3 of 1,000 acked") and ok is False
    assert judged(lost=0, duplicates=0)[1] is False, "a dashboard never got live samples again"
    back = [dict(k, dashboards_resumed_after_s={"median": 0.1, "worst": 2.0, "none": 0})
            for k in failover_result()["kills"]]
    assert judged(lost=0, duplicates=0, kills=back) == (
        "lost 0, duplicates 0 of 1,000 acked at 2,000/s; dashboards live again within 2.0 s of each kill", True)
