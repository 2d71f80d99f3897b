"""Presence: a device silent past its `offline_after` is marked offline, and its dashboards are told.

A device that never says `offline` — HTTP-only, or behind a half-open TCP link —
would otherwise stay online forever, and its commands would go `sent` and time
out instead of waiting `queued`. Each bridge sweeps every interval with one
UPDATE … RETURNING over the device table; with several bridges, each change is
made, and pushed, by exactly one of them.
"""

from __future__ import annotations

import asyncio
import logging

from django.db import DatabaseError

from devices.dbthread import in_db_thread
from devices.pusher import Pusher
from devices.services.devices import device_presence_sweep
from devices.stats import IngestStats

logger = logging.getLogger("iotgw.bridge")


async def presence_loop(*, pusher: Pusher, stats: IngestStats, interval: float, offline_after: float) -> None:
    """Sweep for devices silent past their `offline_after` (default `offline_after`) every `interval` s."""
    sweep = in_db_thread(device_presence_sweep)
    while True:
        await asyncio.sleep(interval)
        try:
            device_ids, at = await sweep(default_after=offline_after)
        except DatabaseError as exc:
            stats.counts["db_errors"] += 1
            logger.warning("presence sweep skipped: %s", str(exc).strip()[:200])
            continue
        if not device_ids:
            continue
        stats.counts["devices_gone_silent"] += len(device_ids)
        logger.info("marked offline after their silence: %s", ", ".join(device_ids[:20])
                    + (f" (+{len(device_ids) - 20})" if len(device_ids) > 20 else ""))
        push = pusher.batch()
        for device_id in device_ids:
            push.status(device_id, False, at)
        await pusher.send_now(push)
