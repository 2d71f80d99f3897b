"""Coalesced fan-out to dashboards: one group_send per bucket per batch, never one per message."""

from __future__ import annotations

import zlib
from collections import defaultdict
from datetime import datetime
from typing import Any

from django.conf import settings

from protocols.wire import status_frame, telemetry_fragment

GROUP_PREFIX = "iotgw.devices."
PUSH_TYPE = "gateway.push"


def bucket_of(device_id: str) -> int:
    """The stable bucket of a device, the same in every process."""
    return zlib.crc32(device_id.encode()) % settings.IOTGW_PUSH_BUCKETS


def bucket_group(bucket: int) -> str:
    """The channel-layer group that carries a bucket's pushes."""
    return f"{GROUP_PREFIX}{bucket}"


class PushBatch:
    """Pushes gathered over one batch, pre-encoded, grouped by bucket."""

    def __init__(self) -> None:
        self._buckets: dict[int, dict[str, Any]] = {}

    def _bucket(self, device_id: str) -> dict[str, Any]:
        b = bucket_of(device_id)
        if b not in self._buckets:
            self._buckets[b] = {"type": PUSH_TYPE, "telemetry": defaultdict(list), "status": {}, "frames": {}}
        return self._buckets[b]

    def telemetry(self, device_id: str, ts: datetime, data: dict[str, Any]) -> None:
        """Add a sample as a pre-encoded item."""
        self._bucket(device_id)["telemetry"][device_id].append(telemetry_fragment(device_id, ts, data))

    def status(self, device_id: str, online: bool, ts: datetime) -> None:
        """Add a status change as a pre-encoded frame."""
        self._bucket(device_id)["status"][device_id] = status_frame(device_id, online, ts)

    def frame(self, device_id: str, text: str) -> None:
        """Add any other pre-encoded frame about a device (e.g. a command update)."""
        self._bucket(device_id)["frames"].setdefault(device_id, []).append(text)

    def messages(self) -> list[tuple[str, dict[str, Any]]]:
        """(group, message) pairs ready for group_send."""
        out = []
        for bucket, msg in self._buckets.items():
            msg["telemetry"] = dict(msg["telemetry"])
            out.append((bucket_group(bucket), msg))
        return out

    def __bool__(self) -> bool:
        return bool(self._buckets)


async def push_send(layer: Any, batch: PushBatch) -> None:
    """Send a batch's messages; the layer is lossy, so a failure here is logged, not retried."""
    for group, message in batch.messages():
        await layer.group_send(group, message)
