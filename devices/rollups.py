"""Per-minute and per-hour rollups of numeric metrics, kept by a job from the raw rows.

On PostgreSQL, rolling each batch up in its own statement cost a third of ingest's throughput
(bench/history.py: 0.64 of a plain table; every sample touches its minute's and hour's row of
each metric). So there, ingest only inserts, and a job (`rollups_catch_up`, every bridge's
rollup loop, one at a time) replaces the rollups of the recent minutes from the raw rows:
minutes from its watermark minus RECHECK up to GRACE ago, then their hours from the minutes.
Recomputing, not adding, makes it idempotent, and RECHECK lets it see batches that committed
after its previous pass (up to RECHECK after they were received).

A sample older than GRACE when it arrives (late, redelivered, imported) may be in a minute the
job has passed, so its batch marks that device's minute (`RollupDirty`, in the insert's
statement; a redelivered sample is skipped by the (device, ts) key and marks nothing), and the
job's next pass recomputes every marked minute, and its hour, from the raw rows. Ingest never
waits for the job: a late batch used to take a shared lock against the job's pass, and under a
backlog (every sample late) each batch waited out whole passes (87 s, measured in a soak). The
pass reads in one snapshot (REPEATABLE READ), so the marks it removes are exactly those whose
rows it read; a batch committing meanwhile leaves its marks for the next pass. SQLite (the
all-in-one) rolls every batch up in Python, merging (min, max, sum, count, first and last merge
associatively). Booleans, strings and nulls are not rolled up, nor numbers of magnitude 1e200 and
more (their sums could overflow a double: PostgreSQL refuses that).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import connection

MINUTE, HOUR, DIRTY = "devices_rollupminute", "devices_rolluphour", "devices_rollupdirty"
COLUMNS = "device_id, metric, bucket, min, max, sum, count, first_ts, first, last_ts, last"
LIMIT = 1e200
# A sample older than this when received is rolled up by its batch; newer ones by the job.
GRACE = timedelta(seconds=60)
# How far before its watermark the job looks again, for batches that committed after its last pass: a
# batch commits within a second of its receive time, and a poisoned one, halved, within seconds.
# Each pass reads IOTGW_ROLLUP_SECONDS + RECHECK of raw rows: with 180 s and 30 s that was 7 times
# what is new, and at 8,500 samples/s a pass outlasted its interval (the job ran back to back).
RECHECK = timedelta(seconds=60)
JOB_LOCK = 0x10760017

_MERGE = """ON CONFLICT (device_id, metric, bucket) DO UPDATE SET
    min = LEAST(r.min, EXCLUDED.min), max = GREATEST(r.max, EXCLUDED.max),
    sum = r.sum + EXCLUDED.sum, count = r.count + EXCLUDED.count,
    first = CASE WHEN EXCLUDED.first_ts < r.first_ts THEN EXCLUDED.first ELSE r.first END,
    first_ts = LEAST(r.first_ts, EXCLUDED.first_ts),
    last = CASE WHEN EXCLUDED.last_ts > r.last_ts THEN EXCLUDED.last ELSE r.last END,
    last_ts = GREATEST(r.last_ts, EXCLUDED.last_ts)"""


def postgresql_ctes(source: str) -> str:
    """CTEs (after `WITH <source> AS (…),`) that roll `source`'s (device_id, ts, data) rows into both tiers.

    The CASE guards the casts: a string never reaches `::numeric`, an overflowing number never `::float8`.
    """
    return f"""
_pts AS (
  SELECT device_id, ts, metric, v FROM (
    SELECT s.device_id, s.ts, e.key AS metric,
           CASE WHEN jsonb_typeof(e.value) <> 'number' THEN NULL
                WHEN abs((e.value)::numeric) < {LIMIT:g} THEN (e.value)::float8 END AS v
    FROM {source} s, jsonb_each(s.data) e) p
  WHERE v IS NOT NULL),
_m AS (
  SELECT device_id, metric, date_trunc('minute', ts, 'UTC') AS bucket, min(v) AS min, max(v) AS max,
         sum(v) AS sum, count(*) AS count, min(ts) AS first_ts, (array_agg(v ORDER BY ts))[1] AS first,
         max(ts) AS last_ts, (array_agg(v ORDER BY ts DESC))[1] AS last
  FROM _pts GROUP BY 1, 2, 3),
_mi AS (
  INSERT INTO {MINUTE} AS r ({COLUMNS}) SELECT {COLUMNS} FROM _m {_MERGE}),
_hi AS (
  INSERT INTO {HOUR} AS r ({COLUMNS})
  SELECT device_id, metric, date_trunc('hour', bucket, 'UTC'), min(min), max(max), sum(sum), sum(count),
         min(first_ts), (array_agg(first ORDER BY first_ts))[1], max(last_ts),
         (array_agg(last ORDER BY last_ts DESC))[1]
  FROM _m GROUP BY 1, 2, 3 {_MERGE})"""


_REPLACE = """ON CONFLICT (device_id, metric, bucket) DO UPDATE SET min = EXCLUDED.min, max = EXCLUDED.max,
    sum = EXCLUDED.sum, count = EXCLUDED.count, first = EXCLUDED.first, first_ts = EXCLUDED.first_ts,
    last = EXCLUDED.last, last_ts = EXCLUDED.last_ts"""

def _recompute_minutes(source: str) -> str:
    """Replace the minute rollups of the raw rows `source` selects (a FROM … WHERE of devices_telemetry s)."""
    return f"""
WITH _pts AS (
  SELECT device_id, ts, metric, v FROM (
    SELECT s.device_id, s.ts, e.key AS metric,
           CASE WHEN jsonb_typeof(e.value) <> 'number' THEN NULL
                WHEN abs((e.value)::numeric) < {LIMIT:g} THEN (e.value)::float8 END AS v
    FROM {source}) p
  WHERE v IS NOT NULL),
_m AS (
  SELECT device_id, metric, date_trunc('minute', ts, 'UTC') AS bucket, min(v) AS min, max(v) AS max,
         sum(v) AS sum, count(*) AS count, min(ts) AS first_ts, (array_agg(v ORDER BY ts))[1] AS first,
         max(ts) AS last_ts, (array_agg(v ORDER BY ts DESC))[1] AS last
  FROM _pts GROUP BY 1, 2, 3)
INSERT INTO {MINUTE} AS r ({COLUMNS}) SELECT {COLUMNS} FROM _m {_REPLACE}"""


def _recompute_hours(source: str) -> str:
    """Replace the hour rollups from the minute rollups `source` selects (a FROM … WHERE of MINUTE m)."""
    return f"""
INSERT INTO {HOUR} AS r ({COLUMNS})
SELECT m.device_id, m.metric, date_trunc('hour', m.bucket, 'UTC'), min(m.min), max(m.max), sum(m.sum),
       sum(m.count), min(m.first_ts), (array_agg(m.first ORDER BY m.first_ts))[1], max(m.last_ts),
       (array_agg(m.last ORDER BY m.last_ts DESC))[1]
FROM {source} GROUP BY 1, 2, 3 {_REPLACE}"""


# The window's pass: minutes [%(start)s, %(end)s) from the raw rows, then their hours from the minutes.
_RECOMPUTE = _recompute_minutes("devices_telemetry s, jsonb_each(s.data) e "
                                "WHERE s.ts >= %(start)s AND s.ts < %(end)s")
_RECOMPUTE_HOURS = _recompute_hours(f"{MINUTE} m WHERE m.bucket >= %(start)s AND m.bucket < %(end)s")
# The marked minutes (device, bucket) of late batches, then every hour they are in.
_MARKED = "unnest(%(devices)s::text[], %(buckets)s::timestamptz[]) AS d(device_id, bucket)"
_RECOMPUTE_MARKED = _recompute_minutes(
    f"{_MARKED} JOIN devices_telemetry s ON s.device_id = d.device_id AND s.ts >= d.bucket "
    "AND s.ts < d.bucket + interval '1 minute', jsonb_each(s.data) e")
_RECOMPUTE_MARKED_HOURS = _recompute_hours(
    f"(SELECT DISTINCT device_id, date_trunc('hour', bucket, 'UTC') AS hour FROM {_MARKED}) h "
    f"JOIN {MINUTE} m ON m.device_id = h.device_id AND m.bucket >= h.hour AND m.bucket < h.hour + interval '1 hour'")
MARKED_CHUNK = 5000  # marked minutes per statement


def rollups_catch_up(*, now: datetime, since: datetime | None = None, wait: bool = False
                     ) -> tuple[datetime, datetime] | None:
    """One pass of the job (PostgreSQL; in a transaction): the minutes of the window it recomputed, or None
    (another pass runs; with `wait`, it waits for that one instead).

    The window is from the watermark minus RECHECK (or `since`) to GRACE before `now`, in whole
    minutes; then every minute late batches marked, wherever it is.
    """
    from django.db import transaction

    from devices import partitions
    from devices.models import RollupWatermark

    own = not connection.in_atomic_block  # inside a caller's transaction its snapshot rules (tests)
    with transaction.atomic(), connection.cursor() as cur:
        if own:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        if wait:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", [JOB_LOCK])
        else:
            cur.execute("SELECT pg_try_advisory_xact_lock(%s)", [JOB_LOCK])
            if not cur.fetchone()[0]:
                return None
        mark = RollupWatermark.objects.select_for_update().filter(name="rollups").first()
        end = floor_minute(now - GRACE)
        start = floor_minute(since if since is not None else (mark.upto if mark else end) - RECHECK)
        cur.execute(f"SELECT DISTINCT device_id, bucket FROM {DIRTY}")
        marked = cur.fetchall()
        days = {bucket.astimezone(UTC).date() for _, bucket in marked}
        if start < end:
            days |= {(start + timedelta(days=d)).date() for d in range((end - start).days + 1)} | {end.date()}
        for table in (MINUTE, HOUR):
            partitions.cache.ensure(table, days)
        if start < end:
            cur.execute(_RECOMPUTE, {"start": start, "end": end})
            hour_end = end.replace(minute=0) + timedelta(hours=1)
            cur.execute(_RECOMPUTE_HOURS, {"start": start.replace(minute=0), "end": hour_end})
        for i in range(0, len(marked), MARKED_CHUNK):
            chunk = {"devices": [d for d, _ in marked[i:i + MARKED_CHUNK]],
                     "buckets": [b for _, b in marked[i:i + MARKED_CHUNK]]}
            cur.execute(_RECOMPUTE_MARKED, chunk)
            cur.execute(_RECOMPUTE_MARKED_HOURS, chunk)
        if marked:
            cur.execute(f"DELETE FROM {DIRTY}")  # the rows this snapshot sees: the ones just read
        if start < end:
            upto = max(end, mark.upto) if mark else end
            RollupWatermark.objects.update_or_create(name="rollups", defaults={"upto": upto})
    return start, end


@dataclass(slots=True)
class Agg:
    """A bucket's aggregate as it is being built."""

    min: float
    max: float
    sum: float
    count: int
    first_ts: datetime
    first: float
    last_ts: datetime
    last: float

    def add(self, other: Agg) -> None:
        """Merge another aggregate of the same bucket into this one."""
        self.min, self.max = min(self.min, other.min), max(self.max, other.max)
        self.sum += other.sum
        self.count += other.count
        if other.first_ts < self.first_ts:
            self.first_ts, self.first = other.first_ts, other.first
        if other.last_ts > self.last_ts:
            self.last_ts, self.last = other.last_ts, other.last


Key = tuple[str, str, datetime]


def numeric(value: Any) -> float | None:
    """The value as a float if it is rolled up (a number, not a boolean, below LIMIT), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        v = float(value)
    except OverflowError:
        return None
    return v if abs(v) < LIMIT else None


def floor_minute(ts: datetime) -> datetime:
    """The start of `ts`'s UTC minute."""
    return ts.astimezone(UTC).replace(second=0, microsecond=0)


def rollups_of(rows: Iterable[tuple[str, datetime, dict[str, Any]]]) -> tuple[dict[Key, Agg], dict[Key, Agg]]:
    """Per-minute and per-hour aggregates of (device id, ts, data) rows."""
    minutes: dict[Key, Agg] = {}
    for device_id, ts, data in rows:
        bucket = floor_minute(ts)
        for metric, value in data.items():
            v = numeric(value)
            if v is None:
                continue
            agg = Agg(v, v, v, 1, ts, v, ts, v)
            key = (device_id, metric, bucket)
            if (found := minutes.get(key)) is None:
                minutes[key] = agg
            else:
                found.add(agg)
    hours: dict[Key, Agg] = {}
    for (device_id, metric, bucket), agg in minutes.items():
        key = (device_id, metric, bucket.replace(minute=0))
        if (found := hours.get(key)) is None:
            hours[key] = Agg(agg.min, agg.max, agg.sum, agg.count, agg.first_ts, agg.first, agg.last_ts, agg.last)
        else:
            found.add(agg)
    return minutes, hours


def rollups_merge_sqlite(rows: Iterable[tuple[str, datetime, dict[str, Any]]]) -> None:
    """Merge the rollups of newly inserted rows into both tiers (SQLite: computed here, one upsert per tier)."""
    minutes, hours = rollups_of(rows)
    dt = connection.ops.adapt_datetimefield_value
    merge = _MERGE.replace("LEAST", "min").replace("GREATEST", "max")
    with connection.cursor() as cur:
        for table, aggs in ((MINUTE, minutes), (HOUR, hours)):
            if aggs:
                cur.executemany(
                    f"INSERT INTO {table} AS r ({COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                    f"{merge}",
                    [(d, m, dt(b), a.min, a.max, a.sum, a.count, dt(a.first_ts), a.first, dt(a.last_ts), a.last)
                     for (d, m, b), a in aggs.items()])
