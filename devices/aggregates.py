"""The history's read side: per-bucket min, max, avg, count, first and last of one numeric metric.

A bucket of `b` seconds is read from the coarsest tier whose granularity divides `b` (per-hour
rollups, per-minute rollups, or the raw samples), so a month of a busy metric is a few hundred
rollup rows, not millions of samples. Buckets are aligned to the epoch (days to UTC midnight),
and the range is widened to whole buckets: since rounds down, until rounds up.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import connection

from devices.models import RollupHour, RollupMinute, Telemetry
from devices.rollups import LIMIT, Agg, numeric

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Bucket sizes an automatic bucket is chosen from (seconds): round numbers on a chart's axis.
NICE_BUCKETS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
                2 * 86400, 7 * 86400, 30 * 86400)
# (name, seconds, model): coarsest first.
TIERS = (("hour", 3600, RollupHour), ("minute", 60, RollupMinute))


@dataclass(frozen=True, slots=True)
class Bucket:
    """One bucket of a metric: its start and what the samples in it came to."""

    start: datetime
    min: float
    max: float
    avg: float
    count: int
    first: float
    first_ts: datetime
    last: float
    last_ts: datetime


@dataclass(frozen=True, slots=True)
class Aggregate:
    """A metric over a range in buckets: the aligned range, the tier read, the non-empty buckets in order."""

    since: datetime
    until: datetime
    bucket: int
    tier: str
    buckets: list[Bucket]


def bucket_for(span: timedelta, points: int) -> int:
    """The smallest round bucket (seconds) that draws `span` in at most `points` buckets."""
    want = span.total_seconds() / max(points, 1)
    for size in NICE_BUCKETS:
        if size >= want:
            return size
    return int(-(-want // 86400)) * 86400  # whole days beyond the list


def tier_for(bucket: int) -> tuple[str, int]:
    """The coarsest tier whose granularity divides `bucket`: ("hour", 3600), ("minute", 60) or ("raw", 1)."""
    for name, seconds, _ in TIERS:
        if bucket % seconds == 0:
            return name, seconds
    return "raw", 1


def align(since: datetime, until: datetime, bucket: int) -> tuple[datetime, datetime]:
    """The range widened to whole buckets counted from the epoch; OverflowError near the year 9999."""
    start = (since - EPOCH) // timedelta(seconds=bucket)
    end = -((EPOCH - until) // timedelta(seconds=bucket))
    return EPOCH + timedelta(seconds=start * bucket), EPOCH + timedelta(seconds=end * bucket)


def telemetry_aggregate(*, device_id: str, metric: str, since: datetime, until: datetime, bucket: int) -> Aggregate:
    """`metric` of one device over [since, until) in buckets of `bucket` seconds, from the coarsest tier that fits."""
    since, until = align(since, until, bucket)
    tier, _ = tier_for(bucket)
    if connection.vendor == "postgresql":
        rows = _postgresql(tier, device_id, metric, since, until, bucket)
    else:
        rows = _in_python(tier, device_id, metric, since, until, bucket)
    buckets = [Bucket(start, a.min, a.max, a.sum / a.count, a.count, a.first, a.first_ts, a.last, a.last_ts)
               for start, a in rows]
    return Aggregate(since, until, bucket, tier, buckets)


_RAW = f"""SELECT date_bin(%(b)s, ts, %(epoch)s) AS b, min(v), max(v), sum(v), count(*), min(ts),
       (array_agg(v ORDER BY ts))[1], max(ts), (array_agg(v ORDER BY ts DESC))[1]
FROM (SELECT ts, CASE WHEN jsonb_typeof(data -> %(m)s) <> 'number' THEN NULL
                      WHEN abs((data -> %(m)s)::numeric) < {LIMIT:g} THEN (data -> %(m)s)::float8 END AS v
      FROM {Telemetry._meta.db_table} WHERE device_id = %(d)s AND ts >= %(since)s AND ts < %(until)s) p
WHERE v IS NOT NULL GROUP BY 1 ORDER BY 1"""

_ROLLED = """SELECT date_bin(%(b)s, bucket, %(epoch)s) AS b, min(min), max(max), sum(sum), sum(count), min(first_ts),
       (array_agg(first ORDER BY first_ts))[1], max(last_ts), (array_agg(last ORDER BY last_ts DESC))[1]
FROM {table} WHERE device_id = %(d)s AND metric = %(m)s AND bucket >= %(since)s AND bucket < %(until)s
GROUP BY 1 ORDER BY 1"""


def _postgresql(tier: str, device_id: str, metric: str, since: datetime, until: datetime,
                bucket: int) -> list[tuple[datetime, Agg]]:
    """One GROUP BY over the tier's rows in range (the primary key's index bounds the scan)."""
    model = {"hour": RollupHour, "minute": RollupMinute}.get(tier)
    sql = _RAW if model is None else _ROLLED.format(table=model._meta.db_table)
    params: dict[str, Any] = {"b": timedelta(seconds=bucket), "epoch": EPOCH, "m": metric, "d": device_id,
                              "since": since, "until": until}
    with connection.cursor() as cur:
        cur.execute(sql, params)
        return [(b, Agg(mn, mx, sm, int(n), fts, first, lts, last))
                for b, mn, mx, sm, n, fts, first, lts, last in cur.fetchall()]


def _in_python(tier: str, device_id: str, metric: str, since: datetime, until: datetime,
               bucket: int) -> list[tuple[datetime, Agg]]:
    """SQLite (the all-in-one): the tier's rows in range, merged into buckets here."""
    step = timedelta(seconds=bucket)
    out: dict[datetime, Agg] = {}

    def add(ts: datetime, agg: Agg) -> None:
        start = EPOCH + ((ts - EPOCH) // step) * step
        if (found := out.get(start)) is None:
            out[start] = agg
        else:
            found.add(agg)

    model: Any = {"hour": RollupHour, "minute": RollupMinute}.get(tier)
    if model is None:
        for ts, data in (Telemetry.objects.filter(device_id=device_id, ts__gte=since, ts__lt=until)
                         .values_list("ts", "data").iterator(2000)):
            v = numeric(data.get(metric)) if isinstance(data, dict) else None
            if v is not None:
                add(ts, Agg(v, v, v, 1, ts, v, ts, v))
    else:
        for r in model.objects.filter(device_id=device_id, metric=metric, bucket__gte=since, bucket__lt=until):
            add(r.bucket, Agg(r.min, r.max, r.sum, r.count, r.first_ts, r.first, r.last_ts, r.last))
    return sorted(out.items())


@dataclass(frozen=True, slots=True)
class TierStats:
    """One tier's size: rows (PostgreSQL: the planner's estimate), bytes with indexes, its oldest time."""

    tier: str
    rows: int
    bytes: int | None
    oldest: datetime | None


def history_tier_stats() -> list[TierStats]:
    """Rows, bytes and the oldest sample of each tier (raw, minute, hour), cheaply enough for /metrics.

    PostgreSQL: rows and bytes summed over the partitions from the catalogue, never a count(*); the
    oldest time is that of the oldest partition holding a row, to the day (reading the exact minimum
    would scan a day of samples).
    """
    from devices import partitions  # the catalogue's view of the partitions

    tables = (("raw", Telemetry, "ts"), ("minute", RollupMinute, "bucket"), ("hour", RollupHour, "bucket"))
    out = []
    for tier, model, column in tables:
        table = model._meta.db_table
        if connection.vendor != "postgresql":
            qs: Any = model.objects.all()
            oldest = qs.order_by(column).values_list(column, flat=True).first()
            out.append(TierStats(tier, qs.count(), None, oldest))
            continue
        with connection.cursor() as cur:
            cur.execute("SELECT coalesce(sum(greatest(c.reltuples, 0)), 0), "
                        "coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_inherits i "
                        "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = %s::regclass", [table])
            rows, size = cur.fetchone()
            oldest = None
            for part in partitions.partitions_list(table):
                cur.execute(f'SELECT 1 FROM "{part.name}" LIMIT 1')
                if cur.fetchone():
                    oldest = datetime.combine(part.start, datetime.min.time(), UTC)
                    break
        out.append(TierStats(tier, int(rows), int(size), oldest))
    return out
