"""The one database thread of a process's async work (pipeline, dispatcher, presence, heartbeat)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asgiref.sync import sync_to_async
from django.db import DatabaseError, connection


def in_db_thread(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn` on the bridge's one database thread; after a database error the connection is closed, so a retry
    reconnects instead of reusing a broken one."""

    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except DatabaseError:
            connection.close()
            raise

    return sync_to_async(call, thread_sensitive=True)
