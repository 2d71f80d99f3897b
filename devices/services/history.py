"""Writes that keep the history tiers in shape: partitions created ahead, expired data dropped (docs/history.md)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import connection, transaction
from django.utils import timezone

from devices import partitions
from devices.models import Device, RetentionPolicy

logger = logging.getLogger("iotgw.history")

RAW, MINUTE, HOUR = "devices_telemetry", "devices_rollupminute", "devices_rolluphour"
# One maintainer at a time across processes (every bridge runs the loop); the others skip their turn.
ADVISORY_LOCK = 0x10760016
# Rows per DELETE on SQLite: each is its own short transaction, so ingest interleaves with them.
DELETE_BATCH = 5000


@dataclass(frozen=True, slots=True)
class Retention:
    """How long each tier is kept, in days (0: forever), and how many days of partitions to create ahead."""

    raw_days: float = 0.0
    minute_days: float = 0.0
    hour_days: float = 0.0
    ahead_days: int = 3

    def days(self, table: str) -> float:
        """The retention of one tier's table."""
        return {RAW: self.raw_days, MINUTE: self.minute_days, HOUR: self.hour_days}[table]


@dataclass(slots=True)
class MaintenanceReport:
    """What one run did: partitions created and dropped, rows deleted (SQLite), or skipped (another ran)."""

    created: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    deleted: dict[str, int] = field(default_factory=dict)
    skipped: bool = False


def telemetry_maintain(*, retention: Retention, now: datetime | None = None) -> MaintenanceReport:
    """Create partitions ahead and drop (PostgreSQL) or delete in batches (SQLite) what is past its retention.

    Per tier, whole partitions go once older than the longest retention in force (the global one
    and every device's or group's policy); a device kept for less then loses its older rows by
    batched deletes along its primary key. Runs in autocommit, outside any transaction: DETACH
    PARTITION … CONCURRENTLY requires it, and each batch commits on its own. Safe to run from
    several processes at once.
    """
    if connection.in_atomic_block:
        raise RuntimeError("telemetry_maintain must run outside a transaction (DETACH … CONCURRENTLY)")
    now = now or timezone.now()
    report = MaintenanceReport()
    pg = connection.vendor == "postgresql"
    if pg:
        with connection.cursor() as cur:
            cur.execute("SELECT pg_try_advisory_lock(%s)", [ADVISORY_LOCK])
            if not cur.fetchone()[0]:
                report.skipped = True
                return report
    try:
        per_device = device_retention(retention)
        for table in _tables():
            if pg:
                report.created += partitions.partitions_create_ahead(table, today=now.date(),
                                                                     days=retention.ahead_days)
            _expire(table, retention.days(table), per_device.get(table, {}), now, report)
    finally:
        if pg:
            with connection.cursor() as cur:
                cur.execute("SELECT pg_advisory_unlock(%s)", [ADVISORY_LOCK])
    if report.dropped:
        partitions.cache.forget()
    return report


def _expire(table: str, default: float, own: dict[str, float], now: datetime, report: MaintenanceReport) -> None:
    """One tier: everything past the longest retention in force, then each device past its own shorter one."""
    days = [default, *own.values()]
    if all(days) and days:
        horizon = now - timedelta(days=max(days))
        if connection.vendor == "postgresql":
            report.dropped += partitions.partitions_drop_before(table, horizon)
        else:
            report.deleted[table] = _delete_before(table, horizon)
    longest = max(days) if all(days) else 0.0
    shorter = {d: v for d, v in own.items() if v and (not longest or v < longest)}
    if default and (not longest or default < longest):
        for device_id in _devices_without(own):
            shorter[device_id] = default
    for device_id, keep in shorter.items():
        n = _delete_before(table, now - timedelta(days=keep), device_id=device_id)
        if n:
            report.deleted[table] = report.deleted.get(table, 0) + n


def device_retention(retention: Retention) -> dict[str, dict[str, float]]:
    """Per tier table, the devices whose retention differs from the global one: {device id: days (0: forever)}."""
    out: dict[str, dict[str, float]] = {RAW: {}, MINUTE: {}, HOUR: {}}
    fields = {RAW: "raw_days", MINUTE: "minute_days", HOUR: "hour_days"}
    policies = list(RetentionPolicy.objects.all())
    by_group = {p.group_id: p for p in policies if p.group_id is not None}
    own = {p.device_id: p for p in policies if p.device_id is not None}
    members: dict[str, list[int]] = {}
    if by_group:
        for device_id, group_id in Device.groups.through.objects.filter(group_id__in=list(by_group)).values_list(
                "device_id", "group_id"):
            members.setdefault(device_id, []).append(group_id)
    for table, name in fields.items():
        for device_id in set(own) | set(members):
            mine = getattr(own[device_id], name) if device_id in own else None
            if mine is None:
                groups = [getattr(by_group[g], name) for g in members.get(device_id, [])]
                groups = [v for v in groups if v is not None]
                mine = (0.0 if 0 in groups else max(groups)) if groups else None
            if mine is not None and mine != retention.days(table):
                out[table][device_id] = mine
    return out


def _devices_without(own: dict[str, float]) -> list[str]:
    """Devices kept for the global retention (no policy of their own for this tier)."""
    return [d for d in Device.objects.values_list("id", flat=True) if d not in own]


def _tables() -> list[str]:
    """The tier tables this database has (a rollup table appears with its migration)."""
    existing = set(connection.introspection.table_names())
    return [t for t in (RAW, MINUTE, HOUR) if t in existing]


def _delete_before(table: str, cutoff: datetime, *, device_id: str | None = None) -> int:
    """Delete rows older than `cutoff` (of one device) in batches of DELETE_BATCH, each its own transaction.

    With a device, the batch is found along the primary key (device, …, ts): no scan of the table.
    """
    column = partitions.SPANS[table][1]
    where, params = f"{column} < %s", [connection.ops.adapt_datetimefield_value(cutoff)]
    if device_id is not None:
        where, params = f"device_id = %s AND {where}", [device_id, *params]
    key = "ctid" if connection.vendor == "postgresql" else "rowid"
    # ctid is unique per partition only: the pair (tableoid, ctid) names a row of a partitioned table.
    pick, cols = ("(tableoid, ctid)", "tableoid, ctid") if key == "ctid" else (key, key)
    total = 0
    while True:
        with transaction.atomic(), connection.cursor() as cur:
            cur.execute(f"DELETE FROM {table} WHERE {pick} IN "
                        f"(SELECT {cols} FROM {table} WHERE {where} LIMIT {DELETE_BATCH})", params)
            deleted = int(cur.rowcount)
        total += deleted
        if deleted < DELETE_BATCH:
            return total
