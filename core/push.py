"""Coalesced fan-out to dashboards: one group_send per bucket per batch, never one per message."""

from __future__ import annotations

import asyncio
import zlib
from collections import defaultdict
from datetime import datetime
from typing import Any, Protocol

from core.payloads import Sample
from core.wire import status_frame, telemetry_fragment

GROUP_PREFIX = "iotgw.devices."
PUSH_TYPE = "gateway.push"


class Layer(Protocol):
    """What iotgw uses of a Channels layer (channels_redis's or the in-memory one)."""

    async def group_send(self, group: str, message: dict[str, Any]) -> None: ...

    async def send(self, channel: str, message: dict[str, Any]) -> None: ...


def bucket_of(device_id: str, buckets: int) -> int:
    """The stable bucket of a device among `buckets` (IOTGW_PUSH_BUCKETS), the same in every process."""
    return zlib.crc32(device_id.encode()) % buckets if buckets > 1 else 0


def bucket_group(bucket: int) -> str:
    """The channel-layer group that carries a bucket's pushes."""
    return f"{GROUP_PREFIX}{bucket}"


class PushBatch:
    """Pushes gathered over one batch, pre-encoded, grouped by bucket (of `buckets`, IOTGW_PUSH_BUCKETS)."""

    def __init__(self, *, buckets: int = 1) -> None:
        self.buckets = buckets
        self._buckets: dict[int, dict[str, Any]] = {}
        self.size = 0  # samples, status changes and frames added
        # Holds a frame someone is waiting on (a command's answer): it goes out without waiting for the interval.
        self.urgent = False

    def _bucket(self, device_id: str) -> dict[str, Any]:
        b = bucket_of(device_id, self.buckets)
        if b not in self._buckets:
            self._buckets[b] = {"type": PUSH_TYPE, "telemetry": defaultdict(list), "status": {}, "frames": {}}
        return self._buckets[b]

    def telemetry(self, device_id: str, sample: Sample) -> None:
        """Add a sample as a pre-encoded item (with the time text it was made with)."""
        self._bucket(device_id)["telemetry"][device_id].append(telemetry_fragment(device_id, sample.ts_text,
                                                                                  sample.data))
        self.size += 1

    def status(self, device_id: str, online: bool, ts: datetime) -> None:
        """Add a status change as a pre-encoded frame."""
        self._bucket(device_id)["status"][device_id] = status_frame(device_id, online, ts)
        self.size += 1

    def frame(self, device_id: str, text: str) -> None:
        """Add any other pre-encoded frame about a device (e.g. a command update)."""
        self._bucket(device_id)["frames"].setdefault(device_id, []).append(text)
        self.size += 1
        self.urgent = True

    def merge(self, other: PushBatch) -> None:
        """Append a later batch's pushes (per device in order; a later status replaces an earlier one)."""
        for bucket, msg in other._buckets.items():
            mine = self._buckets.setdefault(
                bucket, {"type": PUSH_TYPE, "telemetry": defaultdict(list), "status": {}, "frames": {}})
            for device_id, items in msg["telemetry"].items():
                mine["telemetry"][device_id].extend(items)
            mine["status"].update(msg["status"])
            for device_id, texts in msg["frames"].items():
                mine["frames"].setdefault(device_id, []).extend(texts)
        self.size += other.size
        self.urgent = self.urgent or other.urgent

    def messages(self) -> list[tuple[str, dict[str, Any]]]:
        """(group, message) pairs ready for group_send; `bucket` lets a web process route without decoding."""
        out: list[tuple[str, dict[str, Any]]] = []
        for bucket, msg in self._buckets.items():
            msg["telemetry"] = dict(msg["telemetry"])
            msg["bucket"] = bucket
            out.append((bucket_group(bucket), msg))
        return out

    def __bool__(self) -> bool:
        return bool(self._buckets)


# A push that has not gone out by then is given up: with Redis frozen, a group_send would otherwise wait out
# the socket timeout (30 s), and the pushes behind it would hold ingest back.
PUSH_TIMEOUT = 2.0


async def push_send(layer: Layer, batch: PushBatch, *, timeout: float = PUSH_TIMEOUT) -> None:
    """Send a batch's messages, the buckets concurrently (each is a Redis round trip or two), within `timeout`.

    The layer is lossy, so a failure here is logged, not retried; buckets hold
    disjoint devices, so their order relative to each other does not matter.
    """
    async with asyncio.timeout(timeout):
        results = await asyncio.gather(*(layer.group_send(group, message) for group, message in batch.messages()),
                                       return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
