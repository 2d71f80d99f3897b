"""Showing alarm transitions to dashboards: an `alarm` frame per change, through the devices' push buckets.

Best-effort like every push (the layer is lossy): the transition is in the database first,
and a dashboard that missed a frame sees the alarm in its next snapshot or page load.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from alarms.selectors import alarm_state
from alarms.services import Change
from core.push import Layer, PushBatch, push_send
from core.wire import alarm_frame

logger = logging.getLogger("iotgw.alarms")


def alarm_frames(changes: Iterable[Change]) -> list[tuple[str, str]]:
    """(device id, `alarm` frame) per change; reads who acknowledged it, so call it where the ORM may run."""
    return [(c.alarm.device_id, alarm_frame(alarm_state(c.alarm), event=c.event.kind)) for c in changes]


async def alarms_announce(layer: Layer | None, frames: list[tuple[str, str]], *, buckets: int) -> None:
    """Push `alarm` frames (from `alarm_frames`, made where the ORM may run) to their devices' dashboards.

    A failure is logged, never raised.
    """
    if layer is None or not frames:
        return
    push = PushBatch(buckets=buckets)
    for device_id, text in frames:
        push.frame(device_id, text)
    try:
        await push_send(layer, push)
    except Exception as exc:
        logger.warning("alarm change stored but not shown live: %s", exc)
