"""Writes that keep the history tiers in shape: partitions created ahead, expired data dropped (docs/history.md)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import connection, transaction
from django.utils import timezone

from devices import partitions

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

    Runs in autocommit, outside any transaction: DETACH PARTITION … CONCURRENTLY requires it, and
    each SQLite batch commits on its own. Safe to run from several processes at once.
    """
    if connection.in_atomic_block:
        raise RuntimeError("telemetry_maintain must run outside a transaction (DETACH … CONCURRENTLY)")
    now = now or timezone.now()
    report = MaintenanceReport()
    if connection.vendor != "postgresql":
        for table in _tables():
            if days := retention.days(table):
                report.deleted[table] = _delete_before(table, now - timedelta(days=days))
        return report
    with connection.cursor() as cur:
        cur.execute("SELECT pg_try_advisory_lock(%s)", [ADVISORY_LOCK])
        if not cur.fetchone()[0]:
            report.skipped = True
            return report
    try:
        for table in _tables():
            report.created += partitions.partitions_create_ahead(table, today=now.date(), days=retention.ahead_days)
            if days := retention.days(table):
                report.dropped += partitions.partitions_drop_before(table, now - timedelta(days=days))
    finally:
        with connection.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock(%s)", [ADVISORY_LOCK])
    if report.dropped:
        partitions.cache.forget()
    return report


def _tables() -> list[str]:
    """The tier tables this database has (a rollup table appears with its migration)."""
    existing = set(connection.introspection.table_names())
    return [t for t in (RAW, MINUTE, HOUR) if t in existing]


def _delete_before(table: str, cutoff: datetime) -> int:
    """Delete rows older than `cutoff` in batches of DELETE_BATCH, each its own transaction."""
    column = partitions.SPANS[table][1]
    value = connection.ops.adapt_datetimefield_value(cutoff)
    total = 0
    while True:
        with transaction.atomic(), connection.cursor() as cur:
            cur.execute(f"DELETE FROM {table} WHERE rowid IN "
                        f"(SELECT rowid FROM {table} WHERE {column} < %s LIMIT {DELETE_BATCH})", [value])
            deleted = int(cur.rowcount)
        total += deleted
        if deleted < DELETE_BATCH:
            return total
