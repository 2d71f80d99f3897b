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
from typing import Any

from django.conf import settings
from django.db import DatabaseError

from bridge.db import in_db_thread
from bridge.stats import BridgeStats
from core.push import PushBatch, push_send
from devices.services.devices import device_presence_sweep

logger = logging.getLogger("iotgw.bridge")


async def presence_loop(*, layer: Any, stats: BridgeStats, interval: float) -> None:
    """Sweep for silent devices every `interval` seconds, until cancelled."""
    sweep = in_db_thread(device_presence_sweep)
    while True:
        await asyncio.sleep(interval)
        try:
            device_ids, at = await sweep()
        except DatabaseError as exc:
            stats.counts["db_errors"] += 1
            logger.warning("presence sweep skipped: %s", str(exc).strip()[:200])
            continue
        if not device_ids:
            continue
        stats.counts["devices_gone_silent"] += len(device_ids)
        logger.info("marked offline after their silence: %s", ", ".join(device_ids[:20])
                    + (f" (+{len(device_ids) - 20})" if len(device_ids) > 20 else ""))
        push = PushBatch(buckets=settings.IOTGW_PUSH_BUCKETS)
        for device_id in device_ids:
            push.status(device_id, False, at)
        try:
            await push_send(layer, push)
        except Exception as exc:  # best-effort, like every push; the state is stored
            logger.warning("presence push to dashboards failed: %s", exc)
