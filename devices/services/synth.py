"""A synthetic history for measurements: devices and a regular sample series written fast, never shipped data."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from django.contrib.auth.models import User
from django.db import connection, transaction
from django.utils import timezone

from devices import partitions, rollups, telemetry_sql
from devices.models import Device

# Rows per statement on PostgreSQL (about a second each here): long enough to amortise, short enough to show progress.
ROWS_PER_STATEMENT = 200_000
BATCH = 5000
PALETTE = 1440  # distinct samples per device and day: one a minute


def synth_devices(*, prefix: str, count: int, owner: User | None = None) -> list[str]:
    """Ids `<prefix>0000`…, registered if missing, with no usable secret (they cannot connect)."""
    ids = [f"{prefix}{i:04d}" for i in range(count)]
    Device.objects.bulk_create([Device(id=i, name="synthetic", owner=owner, secret_hash="") for i in ids],
                               ignore_conflicts=True)
    return ids


def synth_history(
    *,
    device_ids: list[str],
    start: datetime,
    end: datetime,
    interval: float,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write a sample every `interval` seconds in [start, end) for each device (`temp`, `hum`); rows written.

    Samples already there are kept (ON CONFLICT DO NOTHING, as ingest). PostgreSQL generates the rows
    itself (generate_series), about a million a few seconds here; elsewhere they go through the batch insert.
    """
    if not device_ids or end <= start:
        return 0
    step = timedelta(seconds=interval)
    window = step * max(1, ROWS_PER_STATEMENT // len(device_ids))
    written = 0
    at = start
    while at < end:
        until = min(at + window, end)
        if connection.vendor == "postgresql":
            count = _generate_sql(device_ids, at, until, interval)
        else:
            count = _generate_python(device_ids, at, until, step)
        written += count
        if progress is not None:
            progress(count)
        at = until
    return written


def _generate_sql(device_ids: list[str], start: datetime, end: datetime, interval: float) -> int:
    # A daily wave of temperature and humidity (SPEC §4's shape of a sample), each device a phase of its own.
    # The values come from a palette of PALETTE samples built once per statement: building a jsonb
    # per row cost 4-5 µs here, four times the insert itself. The rows go in as ingest's do: into
    # the day's partitions, rolled up in the same statement from exactly the rows inserted.
    day, days = start.astimezone(UTC).date(), set()
    while day <= end.astimezone(UTC).date():
        days.add(day)
        day += timedelta(days=1)
    with transaction.atomic(), connection.cursor() as cur:
        for table in (telemetry_sql.TELEMETRY, rollups.MINUTE, rollups.HOUR):
            partitions.cache.ensure(table, days)
        cur.execute(
            f"WITH p AS (SELECT array_agg(jsonb_build_object("
            "'temp', round((20 + 5 * sin(k * 2 * pi() / {n}) + random())::numeric, 2), "
            "'hum', round((50 + 10 * cos(k * 2 * pi() / {n}))::numeric, 1)) ORDER BY k) AS a "
            "FROM generate_series(0, {n} - 1) AS k), "
            f"ins AS (INSERT INTO {telemetry_sql.TELEMETRY} (device_id, ts, data, received_at) "
            "SELECT d.id, s.ts, p.a[1 + mod(floor(extract(epoch FROM s.ts) * {n} / 86400)::bigint + d.n * 37, {n})], "
            "%s "
            "FROM p, unnest(%s::text[]) WITH ORDINALITY AS d(id, n) "
            "CROSS JOIN generate_series(%s::timestamptz, %s::timestamptz - interval '1 microsecond', "
            "make_interval(secs => %s)) AS s(ts) "
            "ON CONFLICT DO NOTHING RETURNING device_id, ts, data), ".replace("{n}", str(PALETTE))
            + rollups.postgresql_ctes("ins") + " SELECT count(*) FROM ins",
            [timezone.now(), device_ids, start, end, interval],
        )
        return int(cur.fetchone()[0])


def _generate_python(device_ids: list[str], start: datetime, end: datetime, step: timedelta) -> int:
    written = 0
    rows: list[tuple[str, datetime, dict[str, Any]]] = []
    for row in _samples(device_ids, start, end, step):
        rows.append(row)
        if len(rows) >= BATCH:
            written += _insert(rows)
            rows = []
    return written + _insert(rows)


def _insert(rows: list[tuple[str, datetime, dict[str, Any]]]) -> int:
    with transaction.atomic():
        return telemetry_sql.samples_insert(rows, timezone.now())


def _samples(device_ids: list[str], start: datetime, end: datetime, step: timedelta
             ) -> Iterator[tuple[str, datetime, dict[str, Any]]]:
    for n, device_id in enumerate(device_ids, 1):
        ts = start
        while ts < end:
            phase = ts.timestamp() / 13751 + n  # 13751 s: a day is 2π of it
            yield device_id, ts, {"temp": round(20 + 5 * math.sin(phase) + random.random(), 2),
                                  "hum": round(50 + 10 * math.cos(phase), 1)}
            ts += step
