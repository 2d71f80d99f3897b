"""Keeps a running transport's profile router current: profiles and device assignments, re-read every few seconds."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from django.db import DatabaseError

from core.router import ProfileRouter
from devices.dbthread import in_db_thread
from devices.selectors import profiles_snapshot
from devices.services.profiles import profiles_install_builtin

logger = logging.getLogger("iotgw.profiles")

Changed = Callable[[list[str]], Awaitable[None]]


async def profiles_load(router: ProfileRouter, *, install: bool = False) -> bool:
    """Read the profiles and the directory once into the router; whether its topic filters changed."""
    if install:
        await in_db_thread(profiles_install_builtin)()
    profiles, directory = await in_db_thread(profiles_snapshot)()
    return router.update(profiles, directory)


async def profiles_follow(router: ProfileRouter, *, interval: float, changed: Changed | None = None) -> None:
    """Re-read every `interval` seconds until cancelled; `changed(filters)` when the filters to subscribe change.

    Polling, not a signal: a profile or a device's profile may change in any process (admin, API, a shell),
    and one small query per interval per bridge costs nothing next to its ingest.
    """
    while True:
        try:
            if await profiles_load(router) and changed is not None:
                await changed(router.filters())
        except DatabaseError as exc:
            logger.warning("profiles not re-read: %s", str(exc).strip()[:200])
        except Exception:
            logger.exception("profiles not re-read")
        await asyncio.sleep(interval)
