"""Per-minute and per-hour rollups of numeric metrics, maintained in the batch that inserts the samples.

Only the samples a batch really inserted are rolled up: on PostgreSQL the insert's `RETURNING`
feeds the rollup upserts in the same statement (data-modifying CTEs), on SQLite the rows not
already stored. A redelivered sample is skipped by the (device, ts) key, so it never counts
twice; a late one merges into its bucket, since min, max, sum, count, first and last merge
associatively. Booleans, strings and nulls are not rolled up, nor numbers of magnitude 1e200 and
more (their sums could overflow a double: PostgreSQL refuses that).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.db import connection

MINUTE, HOUR = "devices_rollupminute", "devices_rolluphour"
COLUMNS = "device_id, metric, bucket, min, max, sum, count, first_ts, first, last_ts, last"
LIMIT = 1e200

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
