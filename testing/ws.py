"""A real `websockets` client on the dashboard socket, collecting frames."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable

import websockets


class Dashboard:
    """A real `websockets` client on /ws/dashboard/, collecting frames."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.frames: list[dict] = []

    @classmethod
    async def open(cls, url: str, token: str | None = None, **kwargs) -> Dashboard:
        headers = dict(kwargs.pop("additional_headers", None) or {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        ws = await websockets.connect(url, additional_headers=headers or None, max_size=None, **kwargs)
        return cls(ws)

    async def send(self, frame: dict) -> None:
        await self.ws.send(json.dumps(frame))

    async def next(self, predicate: Callable[[dict], bool] = lambda f: True, timeout: float = 15.0) -> dict:
        """The next frame matching `predicate` (frames before it are kept in `frames`)."""
        async with asyncio.timeout(timeout):
            while True:
                frame = json.loads(await self.ws.recv())
                self.frames.append(frame)
                if predicate(frame):
                    return frame

    async def subscribe(self, devices: list[str] | str) -> dict:
        """Subscribe and return the snapshot, its parts (frames with `more`) joined."""
        await self.send({"type": "subscribe", "devices": devices})
        snapshot = await self.next(lambda f: f["type"] == "snapshot")
        while snapshot.pop("more", False):
            part = await self.next(lambda f: f["type"] == "snapshot")
            snapshot["devices"] += part["devices"]
            snapshot["more"] = part.get("more", False)
        return snapshot

    async def telemetry_until(self, count: int, device: str, timeout: float = 15.0) -> list[dict]:
        """Collect telemetry items of a device until `count` have arrived."""
        items: list[dict] = []
        async with asyncio.timeout(timeout):
            while len(items) < count:
                frame = await self.next(lambda f: f["type"] == "telemetry", timeout=timeout)
                items.extend(i for i in frame["items"] if i["device"] == device)
        return items

    async def close(self) -> None:
        await self.ws.close()


class WsDevice:
    """A device on /ws/device/ through a real `websockets` client: frames out, answers collected by type."""

    def __init__(self, ws, device_id: str) -> None:
        self.ws = ws
        self.device_id = device_id
        self.frames: list[dict] = []
        self._ref = 0

    @classmethod
    async def open(cls, url: str, device_id: str, secret: str, **kwargs) -> WsDevice:
        """Connect with `Authorization: Basic base64(id:secret)` (raises websockets' InvalidStatus when refused)."""
        basic = base64.b64encode(f"{device_id}:{secret}".encode()).decode()
        ws = await websockets.connect(url, additional_headers={"Authorization": f"Basic {basic}"}, **kwargs)
        return cls(ws, device_id)

    async def send(self, kind: str, **fields) -> int:
        """Send a frame with a fresh `ref`; returns the ref."""
        self._ref += 1
        await self.ws.send(json.dumps({"type": kind, "ref": self._ref, **fields}))
        return self._ref

    async def next(self, predicate: Callable[[dict], bool] = lambda f: True, timeout: float = 15.0) -> dict:
        """The next frame matching `predicate` (every frame is kept in `frames`)."""
        async with asyncio.timeout(timeout):
            while True:
                frame = json.loads(await self.ws.recv())
                self.frames.append(frame)
                if predicate(frame):
                    return frame

    async def close(self) -> None:
        await self.ws.close()
