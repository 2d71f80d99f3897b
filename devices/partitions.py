"""PostgreSQL declarative partitions of the history tables: by UTC day (raw, per-minute) or month (per-hour).

Expiry is dropping a partition: `DETACH PARTITION … CONCURRENTLY` (no lock that stops ingest; it
cannot run in a transaction block) and then `DROP TABLE`. There is no default partition on
purpose: a row for a day without a partition would land there, and a default partition holding
rows of a day blocks creating that day's partition later. Partitions are created ahead by the
maintenance job (`devices/services/history.py`) and on demand by ingest for a day it has not
seen (`ensure`), so a late or imported sample always finds one.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import partial

from django.db import connection, transaction

# Per table: its span (a UTC "day" or "month") and the column it is partitioned by.
SPANS = {"devices_telemetry": ("day", "ts"), "devices_rollupminute": ("day", "bucket"),
         "devices_rolluphour": ("month", "bucket")}
_NAME = re.compile(r"_p(\d{8})$")
# How long a process trusts its list of partitions before it reads the catalogue again: a partition
# dropped meanwhile only concerns samples older than the retention, which would be dropped anyway.
CACHE_SECONDS = 60.0


def span_start(day: date, span: str) -> date:
    """The first day of the partition holding `day`."""
    return day.replace(day=1) if span == "month" else day


def span_next(start: date, span: str) -> date:
    """The first day of the next partition."""
    if span == "month":
        return (start.replace(day=28) + timedelta(days=4)).replace(day=1)
    return start + timedelta(days=1)


def partition_name(table: str, start: date) -> str:
    """`<table>_pYYYYMMDD`: the partition of `table` starting on `start`."""
    return f"{table}_p{start:%Y%m%d}"


@dataclass(frozen=True, slots=True)
class Partition:
    """One partition: its name and the UTC range [start, end) of its key."""

    name: str
    start: date
    end: date


def partitions_list(table: str) -> list[Partition]:
    """The partitions of `table`, oldest first (read from their names, which this module gives them)."""
    span = SPANS[table][0]
    with connection.cursor() as cur:
        cur.execute("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                    "WHERE i.inhparent = %s::regclass", [table])
        names = [row[0] for row in cur.fetchall()]
    found = []
    for name in names:
        if m := _NAME.search(name):
            start = datetime.strptime(m.group(1), "%Y%m%d").date()
            found.append(Partition(name, start, span_next(start, span)))
    return sorted(found, key=lambda p: p.start)


def partition_create(table: str, start: date) -> None:
    """Create the partition of `table` starting on `start` unless it exists (safe from several processes)."""
    span, _ = SPANS[table]
    end = span_next(start, span)
    with connection.cursor() as cur:
        cur.execute(f'CREATE TABLE IF NOT EXISTS "{partition_name(table, start)}" PARTITION OF "{table}" '
                    f"FOR VALUES FROM ('{start.isoformat()} 00:00:00+00') TO ('{end.isoformat()} 00:00:00+00')")


def partitions_create_ahead(table: str, *, today: date, days: int) -> list[str]:
    """Make sure the partitions from `today` to `today + days` exist; the names created."""
    span = SPANS[table][0]
    have = {p.start for p in partitions_list(table)}
    created, start = [], span_start(today, span)
    while start <= today + timedelta(days=days):
        if start not in have:
            partition_create(table, start)
            created.append(partition_name(table, start))
        start = span_next(start, span)
    return created


def partitions_drop_before(table: str, cutoff: datetime) -> list[str]:
    """Detach (concurrently) and drop every partition of `table` whose whole range is before `cutoff`.

    Must run outside a transaction block (autocommit), as DETACH … CONCURRENTLY requires; ingest
    goes on meanwhile. A partition left detached by an interrupted run is finalized first.
    """
    dropped = []
    for part in partitions_list(table):
        if datetime.combine(part.end, datetime.min.time(), UTC) > cutoff:
            break
        with connection.cursor() as cur:
            cur.execute(f'ALTER TABLE "{table}" DETACH PARTITION "{part.name}" CONCURRENTLY')
            cur.execute(f'DROP TABLE "{part.name}"')
        dropped.append(part.name)
    _finalize_pending(table)
    return dropped


def _finalize_pending(table: str) -> None:
    """A DETACH … CONCURRENTLY interrupted half-way leaves its partition pending: finish and drop it."""
    with connection.cursor() as cur:
        cur.execute("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                    "WHERE i.inhparent = %s::regclass AND i.inhdetachpending", [table])
        for (name,) in cur.fetchall():
            cur.execute(f'ALTER TABLE "{table}" DETACH PARTITION "{name}" FINALIZE')
            cur.execute(f'DROP TABLE "{name}"')


def timescale_version() -> str | None:
    """TimescaleDB's version when the extension is installed in this database (docs/history.md), else None."""
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cur:
        cur.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
        row = cur.fetchone()
    return str(row[0]) if row else None


class PartitionCache:
    """Which partitions exist, as one process last saw them; `ensure` creates the missing ones.

    A partition this process created counts as known once its transaction commits: until then
    (and forever after a rollback took it away) `ensure` creates it again if absent, a no-op when
    it is there.
    """

    def __init__(self) -> None:
        self._known: dict[str, set[date]] = {}
        self._read_at: dict[str, float] = {}
        self._unconfirmed: set[tuple[str, date]] = set()

    def ensure(self, table: str, days: Iterable[date]) -> None:
        """Make sure a partition holds each of `days` (in the caller's transaction: rows follow at once)."""
        span = SPANS[table][0]
        starts = {span_start(d, span) for d in days}
        known = self._known.get(table)
        if known is None or time.monotonic() - self._read_at[table] > CACHE_SECONDS:
            known = self._refresh(table)
        if not starts - self._trusted(table, known):
            return
        known = self._refresh(table)
        for start in sorted(starts - self._trusted(table, known)):
            partition_create(table, start)
            self._unconfirmed.add((table, start))
            transaction.on_commit(partial(self._confirm, table, start))

    def forget(self) -> None:
        """Read the catalogue again next time (after this process dropped partitions)."""
        self._known.clear()

    def _trusted(self, table: str, known: set[date]) -> set[date]:
        return {s for s in known if (table, s) not in self._unconfirmed}

    def _confirm(self, table: str, start: date) -> None:
        self._unconfirmed.discard((table, start))
        self._known.setdefault(table, set()).add(start)
        self._read_at.setdefault(table, time.monotonic())

    def _refresh(self, table: str) -> set[date]:
        self._known[table] = {p.start for p in partitions_list(table)}
        self._read_at[table] = time.monotonic()
        return self._known[table]


cache = PartitionCache()
