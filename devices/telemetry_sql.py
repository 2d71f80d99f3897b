"""The statements behind `telemetry_ingest`: one per table per batch.

On PostgreSQL a batch is three statements whatever its size: lock the devices
(`SELECT … FOR UPDATE` in id order), insert every sample with
`json_to_recordset(…) ON CONFLICT DO NOTHING`, and update every touched device
the same way. Each batch travels as one JSON document that orjson encodes in C
and PostgreSQL decodes in its own process: Django's `bulk_update` (a `CASE WHEN`
per row and field) and psycopg's client-side quoting of arrays cost more CPU in
the bridge than the whole rest of the batch. Other databases (SQLite for the
all-in-one gateway) use the ORM.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from django.db import connection

from devices.models import Device, Telemetry

DEVICE = Device._meta.db_table
TELEMETRY = Telemetry._meta.db_table


@dataclass(slots=True)
class DeviceRow:
    """The columns of a device that ingest reads and writes."""

    id: str
    enabled: bool
    online: bool
    latest: dict[str, Any]
    last_seen: datetime | None


def devices_lock(ids: Sequence[str]) -> dict[str, DeviceRow]:
    """Lock the devices in id order (two bridges merging `latest` serialise) and read them."""
    if connection.vendor != "postgresql":
        return {
            d.id: DeviceRow(d.id, d.enabled, d.online, d.latest, d.last_seen)
            for d in Device.objects.select_for_update().filter(pk__in=ids)
            .only("id", "enabled", "online", "latest", "last_seen").order_by("pk")
        }
    with connection.cursor() as cur:
        # last_seen is not read back: ingest only ever overwrites it.
        cur.execute(f"SELECT id, enabled, online, latest::text FROM {DEVICE} "
                    "WHERE id = ANY(%s) ORDER BY id FOR UPDATE", [list(ids)])
        return {r[0]: DeviceRow(r[0], r[1], r[2], orjson.loads(r[3]), None) for r in cur.fetchall()}


def samples_insert(rows: Sequence[tuple[str, datetime, dict[str, Any]]], received_at: datetime) -> None:
    """Insert (device id, ts, data) rows; one already stored for its (device, ts) is skipped."""
    if not rows:
        return
    if connection.vendor != "postgresql":
        Telemetry.objects.bulk_create(
            [Telemetry(device_id=d, ts=ts, data=data, received_at=received_at) for d, ts, data in rows],
            ignore_conflicts=True,
        )
        return
    with connection.cursor() as cur:
        cur.execute(
            f"INSERT INTO {TELEMETRY} (device_id, ts, data, received_at) "
            "SELECT r.d, r.t, r.j, %s FROM json_to_recordset(%s::json) AS r(d text, t timestamptz, j jsonb) "
            "ON CONFLICT DO NOTHING",
            [received_at, orjson.dumps([{"d": d, "t": ts, "j": data} for d, ts, data in rows]).decode()],
        )


def devices_update(devices: Iterable[DeviceRow]) -> None:
    """Write back `latest`, `last_seen` and `online` of the devices a batch touched."""
    devices = list(devices)
    if not devices:
        return
    if connection.vendor != "postgresql":
        Device.objects.bulk_update(
            [Device(id=d.id, latest=d.latest, last_seen=d.last_seen, online=d.online) for d in devices],
            ["latest", "last_seen", "online"],
        )
        return
    doc = orjson.dumps([{"i": d.id, "l": d.latest, "s": d.last_seen, "o": d.online} for d in devices]).decode()
    with connection.cursor() as cur:
        cur.execute(
            f"UPDATE {DEVICE} AS d SET latest = u.l, last_seen = u.s, online = u.o "
            "FROM json_to_recordset(%s::json) AS u(i text, l jsonb, s timestamptz, o boolean) WHERE d.id = u.i",
            [doc],
        )


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
