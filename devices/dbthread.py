"""The database threads of a process's async work: the one for housekeeping (dispatcher, presence, heartbeat,
profile refreshes) and, on PostgreSQL, one of its own for ingest's commits."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asgiref.sync import sync_to_async
from django.db import DatabaseError, connection


def _closing_on_error(fn: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except DatabaseError:
            connection.close()
            raise

    return call


def in_db_thread(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn` on the process's one database thread; after a database error the connection is closed, so a retry
    reconnects instead of reusing a broken one."""
    return sync_to_async(_closing_on_error(fn), thread_sensitive=True)


# One thread, so commits keep their order; its own connection (Django's are per thread).
_INGEST = ThreadPoolExecutor(max_workers=1, thread_name_prefix="iotgw-ingest")


def in_ingest_thread(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn` on the process's ingest thread, with a connection of its own (PostgreSQL).

    A batch's commit never queues behind the database thread's housekeeping: heartbeats, command
    sweeps and claims, profile and alarm-rule refreshes each hold that thread for milliseconds (tens
    under load, py-spy on a loaded bridge), and every batch arriving meanwhile waited for them. On
    SQLite, which writes one transaction at a time whoever asks, it is the database thread. The MQTT
    bridge uses it; the web process's pipeline (HTTP and WebSocket devices) keeps the database thread,
    where its requests' own reads are (and a test's uncommitted rows are visible).
    """
    if connection.vendor != "postgresql":
        return in_db_thread(fn)
    return sync_to_async(_closing_on_error(fn), thread_sensitive=False, executor=_INGEST)

