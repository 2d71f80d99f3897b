"""WebSocket devices (SPEC §11): `/ws/device/`, a transport behind the seam in the web process.

A device opens the socket with its own credentials in the handshake (`Authorization: Basic
base64(id:secret)`, as HTTP ingest takes them) and sends telemetry, status and command-response
frames (core/device_frames.py). Each frame is read at once, so a bad one gets its `error`
frame at once and delays nothing; what it said is offered to the process's Intake
(devices/inprocess.py), stored in the pipeline's next batch, and the device gets `ack` after
the commit. Commands come down the socket from the process's dispatcher; one counts as `sent`
once the socket took it. The open socket is the device's presence: online while it is open
(refreshed within its `offline_after`), offline a grace period after it closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import orjson
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.utils import timezone

from core.device_frames import ack_frame, command_device_frame, decode_device_frame
from core.dialect import IotgwDecoder
from core.errors import DeliveryFailed, GatewayError, PayloadInvalid
from core.ratelimit import TokenBucket
from core.topics import STATUS, TELEMETRY, device_topic
from core.transport import Outbound, Rejected, Said
from core.wire import error_frame
from devices.inprocess import ProcessIngest, process_ingest
from devices.selectors import device_offline_after, device_secret_ok
from protocols import metrics
from protocols.daphne_fixes import DENIAL
from protocols.outbound import SCOPE_KEY, SendBudget

logger = logging.getLogger("iotgw.ws")

CLOSE_REVOKED = 4401
CLOSE_FLOODING = 4429
CLOSE_NOT_READING = 4013
CLOSE_REPLACED = 4409  # the same device opened another socket to this process


@dataclass(frozen=True, slots=True)
class DeviceSocketConfig:
    """A device socket's limits; each default is its variable's (README, Configuration)."""

    rate: float = 20.0  # IOTGW_WS_RATE: frames per second a client may send
    burst: float = 40.0  # IOTGW_WS_BURST
    send_buffer: int = 512 * 1024  # IOTGW_WS_SEND_BUFFER: unsent bytes past which the socket is not reading
    max_frame: int = 64 * 1024  # IOTGW_WS_MAX_FRAME
    max_payload: int = 64 * 1024  # IOTGW_MAX_PAYLOAD
    max_clock_skew: float = 86400.0  # IOTGW_MAX_CLOCK_SKEW
    recheck_seconds: float = 30.0  # IOTGW_WS_RECHECK_SECONDS: the device's credentials are checked again
    grace: float = 10.0  # IOTGW_WS_DEVICE_GRACE: seconds after the close before the device is offline
    offline_after: float = 600.0  # IOTGW_OFFLINE_AFTER: an open socket refreshes presence well within it
    ingest: dict[str, Any] = field(default_factory=dict)  # the process pipeline's keywords (devices/inprocess.py)


@dataclass(slots=True)
class Frame:
    """One envelope of the WebSocket transport: what a frame said, already decoded, and whom to ack."""

    topic: str
    payload: bytes
    decoded: list[Said]
    socket: DeviceConsumer | None
    ref: Any = None
    quiet: bool = False  # the socket's own presence (open, still open, closed): acked without a frame
    refused: Rejected | None = None  # why storage refused it (the device disabled meanwhile), told before the ack


class WsDevices:
    """The WebSocket devices of this process as one transport: its Inlet (acks) and Outlet (commands)."""

    name = "ws"

    def __init__(self, ingest: ProcessIngest, config: DeviceSocketConfig) -> None:
        self.ingest = ingest
        self.config = config
        self.decoder = IotgwDecoder(max_payload=config.max_payload,
                                    max_skew=timedelta(seconds=config.max_clock_skew))
        self.sockets: dict[str, DeviceConsumer] = {}
        self._closing: dict[str, asyncio.Task[None]] = {}
        self.dispatcher = ingest.dispatcher(self, transports=(self.name,), reach=lambda: self.sockets.keys())

    def offer(self, frames: list[Frame]) -> None:
        """Hand frames to the process's pipeline."""
        self.ingest.intake.offer(self, frames)

    def presence(self, device_id: str, online: bool, socket: DeviceConsumer | None) -> None:
        """Say the device is online (its socket is open) or offline (closed), batched like everything else."""
        topic = device_topic(device_id, STATUS)
        self.offer([Frame(topic, b"", [Said(device_id, online=online)], socket, quiet=True)])

    def attach(self, socket: DeviceConsumer) -> DeviceConsumer | None:
        """This socket is now its device's way down; returns the one it replaces."""
        pending = self._closing.pop(socket.device_id, None)
        if pending is not None:
            pending.cancel()
        previous = self.sockets.get(socket.device_id)
        self.sockets[socket.device_id] = socket
        return previous

    def detach(self, socket: DeviceConsumer) -> None:
        """The socket closed: unless another took over, the device is offline after the grace period."""
        if self.sockets.get(socket.device_id) is not socket:
            return
        del self.sockets[socket.device_id]
        self._closing[socket.device_id] = asyncio.ensure_future(self._offline_later(socket.device_id))

    async def _offline_later(self, device_id: str) -> None:
        await asyncio.sleep(self.config.grace)
        self._closing.pop(device_id, None)
        if device_id not in self.sockets:
            self.presence(device_id, False, None)

    # --- Inlet ----------------------------------------------------------------------------------

    def refused(self, frame: Frame, rejected: Rejected) -> None:
        """Storage refused what a frame said; its socket is told instead of an ack."""
        frame.refused = rejected

    def ack(self, batch: Sequence[Frame]) -> None:
        """After the commit: each frame's socket is told (an `ack` frame), in order."""
        for frame in batch:
            if frame.socket is not None:
                frame.socket.stored(frame)

    # --- Outlet ---------------------------------------------------------------------------------

    connected = True  # the sockets are in this process: it can always deliver to those it holds

    async def until_connected(self) -> None:
        return None

    async def until_disconnected(self) -> None:
        await asyncio.Event().wait()

    async def deliver(self, command: Outbound) -> None:
        """Send the command down the device's socket; `sent` once the socket took it."""
        socket = self.sockets.get(command.device_id)
        if socket is None:
            raise DeliveryFailed(f"device {command.device_id} has no socket here")
        await socket.send_command(command)


_transports: dict[int, WsDevices] = {}


def ws_devices(config: DeviceSocketConfig) -> WsDevices:
    """This event loop's WebSocket device transport, on its process pipeline."""
    ingest = process_ingest(**config.ingest)
    transport = _transports.get(id(ingest))
    if transport is None or transport.ingest is not ingest:
        transport = _transports[id(ingest)] = WsDevices(ingest, config)
    return transport


async def refuse(send: Any, scope: dict, status: int, code: int) -> None:
    """Refuse a handshake with an HTTP status where the server can (Daphne), else close with `code`."""
    if DENIAL in (scope.get("extensions") or {}):
        await send({"type": "websocket.http.response.start", "status": status, "headers": []})
        await send({"type": "websocket.http.response.body", "body": b""})
    else:
        await send({"type": "websocket.close", "code": code})


class DeviceConsumer(AsyncWebsocketConsumer):
    """One device's socket: frames in (batched, acked after the commit), commands out."""

    device_id = ""
    opened = False
    transport: WsDevices | None = None
    tasks: tuple[asyncio.Task[None], ...] = ()

    def __init__(self, *, config: DeviceSocketConfig | None = None) -> None:
        super().__init__()
        self.config = config or DeviceSocketConfig()

    async def websocket_connect(self, message: dict) -> None:
        """Refuse a handshake without valid device credentials (401), else open and say online."""
        device_id = self.scope.get("device_id")
        if not device_id:
            metrics.device_sockets_refused.inc()
            await refuse(self.base_send, self.scope, 401, CLOSE_REVOKED)
            return
        self.device_id = device_id
        self.limiter = TokenBucket(rate=self.config.rate, burst=self.config.burst)
        self.over_limit = 0
        self.budget = SendBudget(self.scope.get(SCOPE_KEY), self.config.send_buffer)
        self.outbox: deque[str] = deque()
        self.outbox_ready = asyncio.Event()
        self.transport = ws_devices(self.config)
        own_after = await database_sync_to_async(device_offline_after)(device_id)
        await self.accept()
        self.opened = True
        metrics.device_sockets_open.inc()
        previous = self.transport.attach(self)
        if previous is not None:
            await previous.close(code=CLOSE_REPLACED)
        await self.transport.ingest.hold(device_id)
        self.transport.presence(device_id, True, self)
        self.tasks = (asyncio.ensure_future(self._pump()), asyncio.ensure_future(self._recheck()),
                      asyncio.ensure_future(self._keep_present(own_after)))

    async def disconnect(self, code: int) -> None:
        """Give the device's way down back; it is offline after the grace period unless it returns."""
        for task in self.tasks:
            task.cancel()
        if not self.opened:
            return
        self.opened = False
        metrics.device_sockets_open.dec()
        assert self.transport is not None
        self.transport.detach(self)
        await self.transport.ingest.release(self.device_id)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Read a frame at once: a bad one is answered with `error`; a good one goes to the next batch."""
        if await self._throttled():
            return
        if self.budget.stuck():
            metrics.device_sockets_closed.labels(reason="not_reading").inc()
            await self.close(code=CLOSE_NOT_READING)
            return
        assert self.transport is not None
        ref = None
        try:
            frame = decode_device_frame(text_data if text_data is not None else bytes_data,
                                        device_id=self.device_id, received_at=timezone.now(),
                                        max_bytes=self.config.max_frame,
                                        max_skew=timedelta(seconds=self.config.max_clock_skew))
            ref = frame.ref
            if frame.kind == "ping":
                self._queue('{"type":"pong"}')
                return
            if self.transport.ingest.full:
                raise GatewayError("the gateway is catching up; send this frame again shortly")
        except PayloadInvalid as exc:
            metrics.device_frames.labels(outcome=exc.reason).inc()
            self.transport.ingest.stats.reject(source=self.device_id, reason=exc.reason, message=str(exc))
            self._queue(error_frame(exc.reason, str(exc), _ref_of(text_data)))
            return
        except GatewayError as exc:
            metrics.device_frames.labels(outcome="busy").inc()
            self._queue(error_frame("busy", str(exc), ref))
            return
        metrics.device_frames.labels(outcome="accepted").inc()
        topic = device_topic(self.device_id, TELEMETRY)
        self.transport.offer([Frame(topic, b"", frame.said, self, ref)])

    def stored(self, frame: Frame) -> None:
        """The pipeline committed what the frame said: tell the device (nothing for the socket's own presence)."""
        if frame.quiet:
            self.transport.ingest.nudge([self.device_id])  # now online here: its queued commands come down
        elif self.opened and frame.refused is not None:
            self._queue(error_frame(frame.refused.reason, frame.refused.message, frame.ref))
        else:
            assert self.transport is not None
            self.transport.ingest.count_stored(WsDevices.name, sum(len(s.samples) for s in frame.decoded))
            if self.opened:
                self._queue(ack_frame(frame.ref))

    async def send_command(self, command: Outbound) -> None:
        """Hand a command to the socket; DeliveryFailed when it is closed or its client does not read."""
        if not self.opened or self.budget.stuck():
            raise DeliveryFailed(f"device {self.device_id}'s socket cannot take it")
        await self.send(command_device_frame(command))

    def _queue(self, text: str) -> None:
        """Answers go out in order from one task; Daphne's send never waits, so the budget is checked there."""
        self.outbox.append(text)
        self.outbox_ready.set()

    async def _pump(self) -> None:
        while True:
            await self.outbox_ready.wait()
            self.outbox_ready.clear()
            while self.outbox:
                if self.budget.stuck():  # a device that does not read its answers is not kept
                    metrics.device_sockets_closed.labels(reason="not_reading").inc()
                    self.outbox.clear()
                    await self.close(code=CLOSE_NOT_READING)
                    return
                await self.send(self.outbox.popleft())

    async def _throttled(self) -> bool:
        """Token bucket per socket, as on the dashboard socket: `rate_limited` once, then close past a burst."""
        if self.limiter.take():
            self.over_limit = 0
            return False
        self.over_limit += 1
        if self.over_limit == 1:
            self._queue(error_frame("rate_limited", f"over {self.config.rate:g} frames/s; frames dropped"))
        elif self.over_limit == int(self.config.burst) + 1:
            metrics.device_sockets_closed.labels(reason="flooding").inc()
            await self.close(code=CLOSE_FLOODING)
        return True

    async def _recheck(self) -> None:
        """A device disabled, deleted or given a new secret loses its socket within the recheck interval."""
        secret = self.scope.get("device_secret", "")
        while True:
            await asyncio.sleep(self.config.recheck_seconds * random.uniform(0.75, 1.25))
            try:
                valid = await database_sync_to_async(device_secret_ok)(self.device_id, secret)
            except Exception as exc:  # a database hiccup is not a revocation
                logger.warning("could not re-check device %s's credentials: %s", self.device_id, exc)
                continue
            if not valid:
                metrics.device_sockets_closed.labels(reason="revoked").inc()
                await self.close(code=CLOSE_REVOKED)
                return

    async def _keep_present(self, own_after: int | None) -> None:
        """An open socket is presence: say so again well within the device's `offline_after`."""
        after = self.config.offline_after if own_after is None else own_after
        if after <= 0:
            return
        assert self.transport is not None
        while True:
            await asyncio.sleep(max(0.5, min(after / 3, 60.0)))
            self.transport.presence(self.device_id, True, self)


def _ref_of(text: str | bytes | None) -> Any:
    """The `ref` of a frame that was refused, when it is readable at all, to echo in the error."""
    if text is None:
        return None
    with contextlib.suppress(Exception):
        doc = orjson.loads(text)
        if isinstance(doc, dict) and isinstance(doc.get("ref"), str | int) and not isinstance(doc["ref"], bool):
            return doc["ref"] if len(str(doc["ref"])) <= 128 else None
    return None
