"""The dashboard WebSocket (SPEC §7): subscribe, snapshot, live telemetry and status."""

from __future__ import annotations

import logging
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from bridge.push import bucket_group, bucket_of
from devices.exceptions import GatewayError, PayloadInvalid
from devices.models import Device
from devices.selectors import device_ids_visible_to, device_snapshots
from protocols.auth import header, origin_allowed
from protocols.wire import decode_client_frame, dumps, error_frame, telemetry_frame

logger = logging.getLogger("iotgw.ws")


def _subscription(user: Any, wanted: list[str] | str) -> tuple[set[str], bool, list[str], list[str]]:
    """(visible ids, everything?, missing ids, forbidden ids) for a subscribe request."""
    if wanted == "*":
        return device_ids_visible_to(user), bool(user.is_staff), [], []
    visible = device_ids_visible_to(user, wanted)
    hidden = [d for d in wanted if d not in visible]
    existing = set(Device.objects.filter(pk__in=hidden).values_list("pk", flat=True)) if hidden else set()
    return visible, False, [d for d in hidden if d not in existing], [d for d in hidden if d in existing]


class DashboardConsumer(AsyncWebsocketConsumer):
    """One operator's live view: only devices they own or share a group with (all for staff)."""

    async def connect(self) -> None:
        """Refuse the handshake without credentials, or with a cookie from a foreign Origin."""
        user = self.scope.get("user")
        if user is None or not user.is_authenticated or not user.is_active:
            await self.close()
            return
        if self.scope.get("auth") == "session" and not origin_allowed(header(self.scope, b"origin")):
            await self.close()
            return
        self.devices: set[str] = set()
        self.everything = False
        self.buckets: set[int] = set()
        await self.accept()

    async def disconnect(self, code: int) -> None:
        """Leave every group this socket joined."""
        for bucket in getattr(self, "buckets", ()):
            await self.channel_layer.group_discard(bucket_group(bucket), self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Decode a frame and dispatch it by type; a bad frame gets an error and the socket stays."""
        ref = None
        try:
            frame = decode_client_frame(text_data)
            ref = frame.get("ref")
            await getattr(self, "on_" + frame["type"])(frame)
        except GatewayError as exc:
            await self.send(error_frame(exc.code, str(exc), ref))

    async def on_ping(self, frame: dict) -> None:
        await self.send('{"type":"pong"}')

    async def on_subscribe(self, frame: dict) -> None:
        visible, everything, missing, forbidden = await database_sync_to_async(_subscription)(
            self.scope["user"], frame["devices"]
        )
        ref = frame.get("ref")
        if missing:
            await self.send(error_frame("unknown_device", f"no such device: {', '.join(missing[:20])}", ref))
        if forbidden:
            await self.send(error_frame("forbidden", f"not yours to see: {', '.join(forbidden[:20])}", ref))
        self.everything = self.everything or everything
        self.devices |= visible
        await self._join(range(self._bucket_count()) if self.everything else {bucket_of(d) for d in self.devices})
        snapshot = await database_sync_to_async(device_snapshots)(visible)
        await self.send(dumps({"type": "snapshot", "devices": snapshot}))

    async def on_unsubscribe(self, frame: dict) -> None:
        if frame["devices"] == "*":
            self.devices.clear()
            self.everything = False
        else:
            self.devices.difference_update(frame["devices"])
        wanted = set(range(self._bucket_count())) if self.everything else {bucket_of(d) for d in self.devices}
        for bucket in self.buckets - wanted:
            await self.channel_layer.group_discard(bucket_group(bucket), self.channel_name)
        self.buckets &= wanted

    async def on_command(self, frame: dict) -> None:
        raise PayloadInvalid("bad_request", "commands are not available on this gateway yet")

    async def _join(self, buckets) -> None:
        for bucket in set(buckets) - self.buckets:
            await self.channel_layer.group_add(bucket_group(bucket), self.channel_name)
            self.buckets.add(bucket)

    @staticmethod
    def _bucket_count() -> int:
        return settings.IOTGW_PUSH_BUCKETS

    def _sees(self, device_id: str) -> bool:
        return self.everything or device_id in self.devices

    async def gateway_push(self, message: dict) -> None:
        """A coalesced batch from the bridge: forward this socket's share, already encoded."""
        fragments = [f for device_id, items in message["telemetry"].items() if self._sees(device_id) for f in items]
        if fragments:
            await self.send(telemetry_frame(fragments))
        for device_id, text in message["status"].items():
            if self._sees(device_id):
                await self.send(text)
        for device_id, texts in message["frames"].items():
            if self._sees(device_id):
                for text in texts:
                    await self.send(text)
