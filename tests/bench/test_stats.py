"""The benchmark's pure helpers: percentiles by nearest rank."""

import pytest

from bench.stats import latency_summary, percentile, ratio


def test_percentile_uses_nearest_rank():
    values = list(range(1, 101))
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile(values, 0) == 1


def test_percentile_of_nothing_is_none():
    assert percentile([], 50) is None


def test_percentile_rejects_out_of_range():
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_latency_summary_sorts_its_input():
    assert latency_summary([3.0, 1.0, 2.0]) == {"n": 3, "p50": 2.0, "p99": 3.0, "max": 3.0}


def test_ratio_of_missing_values_is_none():
    assert ratio(10, 0) is None and ratio(None, 2) is None and ratio(10, 4) == 2.5
