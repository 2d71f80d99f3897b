"""Partitions a committed test made, dropped after it: they are tables, and a flush leaves them behind."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def new_partitions_dropped() -> Iterator[None]:
    """Drop the telemetry and rollup partitions created inside the block (PostgreSQL; elsewhere nothing)."""
    from django.db import connection

    if connection.vendor != "postgresql":
        yield
        return
    from devices import partitions, rollups, telemetry_sql

    tables = (telemetry_sql.TELEMETRY, rollups.MINUTE, rollups.HOUR)
    before = {table: {p.name for p in partitions.partitions_list(table)} for table in tables}
    try:
        yield
    finally:
        with connection.cursor() as cur:
            for table in tables:
                for partition in partitions.partitions_list(table):
                    if partition.name not in before[table]:
                        cur.execute(f'DROP TABLE IF EXISTS "{partition.name}"')
        partitions.cache.forget()
