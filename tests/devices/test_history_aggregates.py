"""Aggregates equal a direct computation over the raw rows, whatever order, lateness or redelivery (Hypothesis)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.payloads import Sample
from devices.aggregates import align, bucket_for, telemetry_aggregate, tier_for
from devices.models import RollupHour, RollupMinute, Telemetry
from devices.rollups import rollups_catch_up
from devices.services.devices import device_register
from devices.services.telemetry import Inbound, telemetry_ingest

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 1, 22, 50, tzinfo=UTC)  # the range crosses midnight: two days, two months' hours
_ids = itertools.count()

values = st.one_of(st.integers(-10**6, 10**6), st.floats(-1e6, 1e6, allow_nan=False), st.booleans(),
                   st.just("text"), st.none(), st.just(1e300))
samples = st.lists(st.tuples(st.integers(0, 4 * 3600), values, values), min_size=1, max_size=60,
                   unique_by=lambda s: s[0])


def direct(device_id: str, metric: str, since: datetime, until: datetime, bucket: int) -> list[tuple]:
    """What a person would compute from the raw rows: per bucket, the numeric values in time order."""
    groups: dict[datetime, list[tuple[datetime, float]]] = {}
    for row in Telemetry.objects.filter(device_id=device_id, ts__gte=since, ts__lt=until).order_by("ts"):
        v = row.data.get(metric)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or abs(v) >= 1e200:
            continue
        start = since + ((row.ts - since) // timedelta(seconds=bucket)) * timedelta(seconds=bucket)
        groups.setdefault(start, []).append((row.ts, float(v)))
    return [(start, min(v for _, v in vs), max(v for _, v in vs), len(vs), vs[0][1], vs[-1][1],
             sum(v for _, v in vs) / len(vs)) for start, vs in sorted(groups.items())]


def store(device_id: str, batches: list[list[tuple[int, object, object]]], *, job: bool = True) -> None:
    """Each batch as the bridge stores it; received at T0, so fresh samples are the rollup job's, which then runs
    (on PostgreSQL: SQLite rolls up each batch)."""
    for batch in batches:
        items = [Inbound(device_id, [Sample(ts=T0 + timedelta(seconds=s), data={"a": a, "b": b})])
                 for s, a, b in batch]
        telemetry_ingest(items=items, received_at=T0)
    if job and connection.vendor == "postgresql":
        rollups_catch_up(now=T0 + timedelta(hours=6), since=T0 - timedelta(hours=1))


def store_late(device_id: str, batch: list[tuple[int, object, object]]) -> None:
    """Received a day after their time, after the job has passed their minutes: on PostgreSQL the batch marks
    them and the job's next pass (a day later) recomputes them; SQLite's batch rolls them up itself."""
    items = [Inbound(device_id, [Sample(ts=T0 + timedelta(seconds=s), data={"a": a, "b": b})]) for s, a, b in batch]
    telemetry_ingest(items=items, received_at=T0 + timedelta(days=1))
    if connection.vendor == "postgresql":
        rollups_catch_up(now=T0 + timedelta(days=1, minutes=2))


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(samples=samples, data=st.data())
def test_aggregates_equal_the_raw_rows_with_late_and_redelivered_samples(samples, data):
    device_id = f"h{next(_ids)}"
    device_register(device_id=device_id)
    delivered = data.draw(st.permutations(samples + data.draw(st.lists(st.sampled_from(samples), max_size=20))))
    cut = sorted(data.draw(st.lists(st.integers(0, len(delivered)), max_size=5)))
    batches = [delivered[i:j] for i, j in zip([0, *cut], [*cut, len(delivered)], strict=True)]
    late = data.draw(st.integers(0, len(batches)))  # the batches from here on arrive a day late
    store(device_id, batches[:late])
    for batch in batches[late:]:
        store_late(device_id, batch)
    for bucket in (7, 60, 300, 3600, 7200, 86400):
        for metric in ("a", "b"):
            got = telemetry_aggregate(device_id=device_id, metric=metric, since=T0, until=T0 + timedelta(hours=5),
                                      bucket=bucket)
            assert got.tier == tier_for(bucket)[0]
            want = direct(device_id, metric, got.since, got.until, bucket)
            assert [(b.start, b.min, b.max, b.count, b.first, b.last) for b in got.buckets] == [w[:6] for w in want]
            assert [b.avg for b in got.buckets] == pytest.approx([w[6] for w in want], rel=1e-9, abs=1e-6)


def test_rollups_are_kept_per_minute_and_per_hour_and_redelivery_changes_nothing():
    device_register(device_id="d1")
    store("d1", [[(0, 1, None), (30, 3, None), (70, 5, None)]])
    store("d1", [[(30, 3, None), (70, 5, None)]])  # redelivered
    store_late("d1", [(10, -1, None), (70, 5, None)])  # late, and redelivered late
    store("d1", [])  # the job passes again: it recomputes, it does not add
    minutes = {(r.bucket, r.count, r.min, r.max, r.sum, r.first, r.last)
               for r in RollupMinute.objects.filter(metric="a")}
    assert minutes == {(T0, 3, -1, 3, 3, 1, 3), (T0 + timedelta(minutes=1), 1, 5, 5, 5, 5, 5)}
    hour = RollupHour.objects.get(metric="a")
    assert (hour.bucket, hour.count, hour.first, hour.last) == (T0.replace(minute=0), 4, 1, 5)


def test_an_automatic_bucket_is_round_and_fits_the_points():
    assert bucket_for(timedelta(days=30), 600) == 7200
    assert bucket_for(timedelta(hours=1), 600) == 10
    assert bucket_for(timedelta(days=3650), 100) == 37 * 86400


def test_the_range_widens_to_whole_buckets_from_the_epoch():
    since, until = align(T0 + timedelta(seconds=1), T0 + timedelta(minutes=1, seconds=1), 60)
    assert (since, until) == (T0, T0 + timedelta(minutes=2))


@pytest.mark.skipif("connection.vendor != 'postgresql'")
def test_the_rollup_job_sees_a_batch_that_committed_after_its_pass():
    from devices.models import RollupWatermark

    RollupWatermark.objects.update_or_create(name="rollups", defaults={"upto": T0})
    device_register(device_id="d1")
    fresh = [Inbound("d1", [Sample(ts=T0 + timedelta(seconds=s), data={"a": s})]) for s in (10, 20, 30)]
    telemetry_ingest(items=fresh, received_at=T0 + timedelta(seconds=40))
    rollups_catch_up(now=T0 + timedelta(minutes=2))
    assert RollupMinute.objects.get(device_id="d1", metric="a").count == 3
    # Received before that pass but committed after it: the next pass looks back RECHECK and finds it.
    telemetry_ingest(items=[Inbound("d1", [Sample(ts=T0 + timedelta(seconds=25), data={"a": 99})])],
                     received_at=T0 + timedelta(seconds=45))
    rollups_catch_up(now=T0 + timedelta(minutes=3))
    minute = RollupMinute.objects.get(device_id="d1", metric="a")
    assert (minute.count, minute.max, minute.sum) == (4, 99, 159)
    assert RollupHour.objects.get(device_id="d1", metric="a").count == 4


@pytest.mark.skipif("connection.vendor != 'postgresql'")
def test_a_late_batch_marks_its_minutes_and_never_waits_for_the_job(transactional_db):
    """The job's pass holds its lock for as long as it reads (tens of seconds under load): a late batch stores
    meanwhile, and the next pass rolls its minutes up from the raw rows."""
    import threading

    from devices.models import RollupDirty
    from devices.rollups import JOB_LOCK

    device_register(device_id="d1")
    held, release = threading.Event(), threading.Event()

    def a_long_pass() -> None:  # as a pass in progress holds it, on its own connection
        from django.db import connection as own
        from django.db import transaction

        with transaction.atomic(), own.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", [JOB_LOCK])
            held.set()
            release.wait(30)
        own.close()

    job = threading.Thread(target=a_long_pass)
    job.start()
    try:
        assert held.wait(10)
        late = [Inbound("d1", [Sample(ts=T0 + timedelta(seconds=s), data={"a": s})]) for s in (5, 65, 70)]
        outcome = telemetry_ingest(items=late, received_at=T0 + timedelta(days=1))  # would block before
        assert outcome.accepted == [0, 1, 2]
        assert sorted(RollupDirty.objects.values_list("bucket", flat=True)) == [T0, T0 + timedelta(minutes=1)]
        assert rollups_catch_up(now=T0 + timedelta(days=1, minutes=2)) is None, "the pass in progress runs alone"
    finally:
        release.set()
        job.join()
    rollups_catch_up(now=T0 + timedelta(days=1, minutes=2))
    minutes = {(r.bucket, r.count, r.sum) for r in RollupMinute.objects.filter(device_id="d1", metric="a")}
    assert minutes == {(T0, 1, 5), (T0 + timedelta(minutes=1), 2, 135)}
    assert RollupHour.objects.get(device_id="d1", metric="a").count == 3
    assert not RollupDirty.objects.exists(), "what the pass read, it removed"
    telemetry_ingest(items=late, received_at=T0 + timedelta(days=2))  # redelivered: nothing new, nothing marked
    assert not RollupDirty.objects.exists()
