"""The loops every bridge runs for history: partitions and retention (devices/services/history.py), and the rollup
job (devices/rollups.py).

It runs in the bridge process because every deployment has one (the all-in-one gateway too), and
ingest is what needs partitions ahead; `manage.py telemetry_maintenance` runs one pass from cron
instead, or as well. It uses a thread and a connection of its own, not the pipeline's database
thread, so a DETACH waiting for other transactions never holds up this bridge's batches.
"""

from __future__ import annotations

import asyncio
import logging

from asgiref.sync import sync_to_async
from django.db import DatabaseError, connection
from django.utils import timezone

from devices.rollups import rollups_catch_up
from devices.services.history import MaintenanceReport, Retention, telemetry_maintain
from devices.stats import IngestStats

logger = logging.getLogger("iotgw.history")


def maintain_once(retention: Retention) -> MaintenanceReport:
    """One pass on this thread's own connection, closed afterwards (the pool's thread may change)."""
    try:
        return telemetry_maintain(retention=retention)
    finally:
        connection.close()


def roll_up_once() -> None:
    """One pass of the rollup job on this thread's own connection (PostgreSQL; SQLite rolls up each batch)."""
    try:
        if connection.vendor == "postgresql":
            rollups_catch_up(now=timezone.now())
    finally:
        connection.close()


async def rollup_loop(*, interval: float, stats: IngestStats) -> None:
    """The rollup job every `interval` s; with several bridges, one runs each pass (an advisory lock)."""
    run = sync_to_async(roll_up_once, thread_sensitive=False)
    while True:
        await asyncio.sleep(interval)
        try:
            await run()
        except DatabaseError as exc:
            stats.counts["rollup_errors"] += 1
            logger.warning("rollup pass failed: %s", str(exc).strip()[:200])


async def maintenance_loop(*, retention: Retention, interval: float, stats: IngestStats) -> None:
    """A pass now and every `interval` s; a failed pass is logged and counted, the next one tries again."""
    run = sync_to_async(maintain_once, thread_sensitive=False)
    while True:
        try:
            report = await run(retention)
        except DatabaseError as exc:
            stats.counts["maintenance_errors"] += 1
            logger.warning("history maintenance failed: %s", str(exc).strip()[:200])
        else:
            if report.created or report.dropped or any(report.deleted.values()):
                logger.info("history maintenance: created %s, dropped %s, deleted %s",
                            report.created or "none", report.dropped or "none", report.deleted or "none")
        await asyncio.sleep(interval)
