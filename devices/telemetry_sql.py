"""The statements behind `telemetry_ingest`: one per table per batch.

On PostgreSQL a batch is three statements whatever its size: lock the devices
(`SELECT … FOR UPDATE` in id order), insert every sample with
`json_to_recordset(…) ON CONFLICT DO NOTHING` (late samples also rolled up in
that statement, devices/rollups.py), and update every touched device the same
way. Each batch travels as one JSON document that orjson encodes in C
and PostgreSQL decodes in its own process: Django's `bulk_update` (a `CASE WHEN`
per row and field) and psycopg's client-side quoting of arrays cost more CPU in
the bridge than the whole rest of the batch. Other databases (SQLite for the
all-in-one gateway) use the ORM.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from django.db import IntegrityError, connection

from devices import partitions, rollups
from devices.models import Device, Telemetry

DEVICE = Device._meta.db_table
TELEMETRY = Telemetry._meta.db_table


@dataclass(slots=True)
class DeviceRow:
    """The columns of a device that ingest reads and writes."""

    id: str
    enabled: bool
    online: bool
    # On PostgreSQL it starts empty and gathers the batch's newest value per metric, which `devices_update`
    # merges into the stored one in SQL (the stored one is never read into the bridge); elsewhere it is the
    # stored one, merged here and written back whole.
    latest: dict[str, Any]
    last_seen: datetime | None
    transport: str | None = None  # the transport it was seen on in this batch; None: unchanged
    answer_until: datetime | None = None  # read only: until when an id-less answer may be for a command of its


def devices_lock(ids: Sequence[str]) -> dict[str, DeviceRow]:
    """Lock the devices in id order (two bridges merging `latest` serialise) and read them."""
    if connection.vendor != "postgresql":
        return {
            d.id: DeviceRow(d.id, d.enabled, d.online, d.latest if isinstance(d.latest, dict) else {}, d.last_seen,
                            answer_until=d.answer_until)
            for d in Device.objects.select_for_update().filter(pk__in=ids)
            .only("id", "enabled", "online", "latest", "last_seen", "answer_until").order_by("pk")
        }
    with connection.cursor() as cur:
        # last_seen is not read back: ingest only ever overwrites it; latest is merged in SQL (devices_update).
        cur.execute(f"SELECT id, enabled, online, answer_until FROM {DEVICE} "
                    "WHERE id = ANY(%s) ORDER BY id FOR UPDATE", [list(ids)])
        return {r[0]: DeviceRow(r[0], r[1], r[2], {}, None, answer_until=r[3]) for r in cur.fetchall()}


def samples_insert(rows: Sequence[tuple[str, datetime, dict[str, Any]]], received_at: datetime) -> int:
    """Insert (device id, ts, data) rows and roll them up; one already stored for its (device, ts) is skipped.

    How many were new (the rest were stored already).
    """
    if not rows:
        return 0
    if connection.vendor != "postgresql":
        first: dict[tuple[str, datetime], tuple[str, datetime, dict[str, Any]]] = {}
        for row in rows:
            first.setdefault((row[0], row[1]), row)
        stored = _stored_keys(first)
        new = [row for key, row in first.items() if key not in stored]
        Telemetry.objects.bulk_create(
            [Telemetry(device_id=d, ts=ts, data=data, received_at=received_at) for d, ts, data in new])
        rollups.rollups_merge_sqlite(new)
        return len(new)
    _ensure_partitions(ts for _, ts, _ in rows)
    late_before = received_at - rollups.GRACE
    doc = orjson.dumps([{"d": d, "t": ts, "j": data} for d, ts, data in rows]).decode()
    with _forgetting_partitions_on_refusal(), connection.cursor() as cur:
        if not any(ts < late_before for _, ts, _ in rows):  # fresh: the rollup job's (devices/rollups.py)
            cur.execute(_INSERT, [received_at, doc])
            return int(cur.rowcount)
        # Late: in a minute the job may have passed, so its minutes are marked for the job's next pass to
        # recompute, in the same statement; nothing here waits for the job.
        cur.execute(_INSERT_LATE, [received_at, doc, late_before])
        return int(cur.fetchone()[0])


_INSERT = (f"INSERT INTO {TELEMETRY} (device_id, ts, data, received_at) "
           "SELECT r.d, r.t, r.j, %s FROM json_to_recordset(%s::json) AS r(d text, t timestamptz, j jsonb) "
           "ON CONFLICT DO NOTHING")
# The minutes of the late rows a batch inserted (RETURNING: a redelivered row marks nothing), for the job.
_INSERT_LATE = (f"WITH ins AS ({_INSERT} RETURNING device_id, ts), "
                f"_d AS (INSERT INTO {rollups.DIRTY} (device_id, bucket) "
                "SELECT DISTINCT device_id, date_trunc('minute', ts, 'UTC') FROM ins WHERE ts < %s) "
                "SELECT count(*) FROM ins")


def _ensure_partitions(times: Iterable[datetime]) -> None:
    """The partitions of the raw and rollup tables that these sample times need."""
    days = {t.astimezone(UTC).date() for t in times}
    for table in (TELEMETRY, rollups.MINUTE, rollups.HOUR):
        partitions.cache.ensure(table, days)


@contextmanager
def _forgetting_partitions_on_refusal() -> Iterator[None]:
    """A row without its partition means this process's list of them is stale (another one dropped a day, or
    the table was rebuilt): forget it, so the retry of the batch (the pipeline halves it) creates what is missing."""
    try:
        yield
    except IntegrityError as exc:
        if "no partition" in str(exc):
            partitions.cache.forget()
        raise


def _stored_keys(keys: Iterable[tuple[str, datetime]]) -> set[tuple[str, datetime]]:
    """Which (device id, ts) are stored already (SQLite; in chunks, under its limit of query variables)."""
    keys = list(keys)
    found: set[tuple[str, datetime]] = set()
    for i in range(0, len(keys), 500):
        chunk = keys[i:i + 500]
        found |= set(Telemetry.objects.filter(device_id__in={d for d, _ in chunk}, ts__in={t for _, t in chunk})
                     .values_list("device_id", "ts"))
    return found & set(keys)


@dataclass(slots=True)
class AssignedRow:
    """A sample without `ts`: its receive time, moved on to its device's first free microsecond here."""

    device_id: str
    ts: datetime
    data: dict[str, Any]
    index: int  # the item and the position of its sample, to give the caller the stored time back
    position: int


ONE_MICROSECOND = timedelta(microseconds=1)
MAX_ROUNDS = 1000


def samples_insert_assigned(rows: Sequence[AssignedRow], received_at: datetime) -> None:
    """Insert samples without `ts`, each at a microsecond no other sample of its device holds.

    Callers hold the devices' row locks, so no other writer stores for them meanwhile. Times are
    first made unique per device in the batch, then a row whose time is taken is moved past the
    device's last one and tried again (rare: two batches in one microsecond, or a clock behind).
    """
    last: dict[str, datetime] = {}
    for row in rows:
        previous = last.get(row.device_id)
        if previous is not None and row.ts <= previous:
            row.ts = previous + ONE_MICROSECOND
        last[row.device_id] = row.ts
    pending = list(rows)
    for _ in range(MAX_ROUNDS):
        if not pending:
            return
        taken = _insert_returning_taken(pending, received_at)
        pending = [row for row in pending if (row.device_id, row.ts) in taken]
        for row in pending:
            row.ts = last[row.device_id] = last[row.device_id] + ONE_MICROSECOND
    raise RuntimeError(f"{len(pending)} samples without ts found no free microsecond in {MAX_ROUNDS} tries")


def _insert_returning_taken(rows: Sequence[AssignedRow], received_at: datetime) -> set[tuple[str, datetime]]:
    """Insert (and roll up) what is free; the (device, ts) of the rows that were not, because the time is taken."""
    keys = {(r.device_id, r.ts) for r in rows}
    if connection.vendor != "postgresql":
        taken = _stored_keys(keys)
        new = [r for r in rows if (r.device_id, r.ts) not in taken]
        Telemetry.objects.bulk_create([Telemetry(device_id=r.device_id, ts=r.ts, data=r.data, received_at=received_at)
                                       for r in new])
        rollups.rollups_merge_sqlite((r.device_id, r.ts, r.data) for r in new)
        return taken
    _ensure_partitions(r.ts for r in rows)
    with _forgetting_partitions_on_refusal(), connection.cursor() as cur:
        # Samples without ts are received now: never late, the rollup job's.
        cur.execute(f"{_INSERT} RETURNING device_id, ts",
                    [received_at, orjson.dumps([{"d": r.device_id, "t": r.ts, "j": r.data} for r in rows]).decode()])
        return keys - set(cur.fetchall())


def devices_update(devices: Iterable[DeviceRow]) -> None:
    """Write back `latest`, `last_seen`, `online` and (when it was seen on one) `transport` of a batch's devices."""
    devices = list(devices)
    if not devices:
        return
    if connection.vendor != "postgresql":
        fields = ["latest", "last_seen", "online"]
        plain = [d for d in devices if d.transport is None]
        seen_on = [d for d in devices if d.transport is not None]
        for rows, columns in ((plain, fields), (seen_on, [*fields, "transport"])):
            if rows:
                Device.objects.bulk_update(
                    [Device(id=d.id, latest=d.latest, last_seen=d.last_seen, online=d.online,
                            transport=d.transport or "") for d in rows], columns)
        return
    doc = orjson.dumps([{"i": d.id, "l": d.latest, "s": d.last_seen, "o": d.online, "t": d.transport}
                        for d in devices]).decode()
    with connection.cursor() as cur:
        cur.execute(f"UPDATE {DEVICE} AS d SET latest = {_LATEST_MERGED}, last_seen = u.s, online = u.o, "
                    "transport = COALESCE(u.t, d.transport) "
                    "FROM json_to_recordset(%s::json) AS u(i text, l jsonb, s timestamptz, o boolean, t text) "
                    "WHERE d.id = u.i", [doc])


# The stored `latest` with each of the batch's metrics (u.l) whose time is not older than the stored one's:
# the newest value per metric by its own time, as `_merge_latest` keeps it, without reading the row out.
# Times compare as text: core.times.format_ts writes them fixed-width, so text order is time order.
_STORED = "(CASE jsonb_typeof(d.latest) WHEN 'object' THEN d.latest ELSE '{}'::jsonb END)"  # an admin's typo too
_LATEST_MERGED = (f"{_STORED} || COALESCE((SELECT jsonb_object_agg(e.key, e.value) FROM jsonb_each(u.l) AS e "
                  f"WHERE ({_STORED} -> e.key ->> 'ts') IS NULL "
                  f"OR ({_STORED} -> e.key ->> 'ts') <= (e.value ->> 'ts')), '{{}}'::jsonb)")


def devices_mark_silent(now: datetime, default_after: float) -> list[str]:
    """Mark offline every online device silent for longer than its `offline_after` (or the default); their ids.

    One statement whatever the fleet: it scans the device table, never telemetry. A
    device whose ingest commits meanwhile is re-checked after its row lock (PostgreSQL)
    or serialised with it (SQLite), so a fresh sample is never overruled. Several
    bridges may run it at once: each row changes, and is returned, once.
    """
    after = f"COALESCE(offline_after, {float(default_after)!r})"
    if connection.vendor == "postgresql":
        silent = f"last_seen < %s::timestamptz - {after} * interval '1 second'"
    else:
        silent = f"julianday(last_seen) < julianday(%s) - {after} / 86400.0"
    with connection.cursor() as cur:
        cur.execute(f"UPDATE {DEVICE} SET online = FALSE WHERE online AND {after} > 0 "
                    f"AND (last_seen IS NULL OR {silent}) RETURNING id",
                    [connection.ops.adapt_datetimefield_value(now)])
        return [row[0] for row in cur.fetchall()]
