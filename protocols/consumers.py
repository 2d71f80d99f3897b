"""The dashboard WebSocket (SPEC §7): subscribe, snapshot, live telemetry and status."""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from typing import Any

from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from channels.utils import await_many_dispatch

from alarms.selectors import alarms_open_of
from core.channels import session_group, token_group, user_group
from core.errors import GatewayError
from core.push import bucket_of
from core.ratelimit import TokenBucket
from core.wire import (
    alarm_frame,
    command_frame,
    command_request,
    decode_client_frame,
    error_frame,
    snapshot_frames,
    telemetry_frames,
)
from devices.notify import command_announce
from devices.selectors import (
    command_state,
    device_snapshots,
    device_snapshots_visible_to,
    device_subscription,
    socket_credentials_valid,
)
from devices.services.commands import command_issue
from protocols import metrics
from protocols.auth import origin_allowed
from protocols.hub import Inbox, Push, PushHub, push_hub, receive_retrying
from protocols.outbound import SCOPE_KEY, SendBudget

logger = logging.getLogger("iotgw.ws")

# Close codes (4000-4999 are the application's): credentials gone, flooding, and a client that asks but
# never reads (4013 for WebSocket's 1013 "try again later", which autobahn lets no application send).
CLOSE_REVOKED = 4401
CLOSE_FLOODING = 4429
CLOSE_NOT_READING = 4013


def _log_receive_failure(exc: Exception, delay: float) -> None:
    # Debug: with Redis away every open socket would say it, and the hub already warns once.
    logger.debug("socket channel receive failed (retrying in %.1fs): %s", delay, exc)


@dataclass(frozen=True, slots=True)
class DashboardConfig:
    """A dashboard socket's limits; each default is its variable's (README, Configuration)."""

    rate: float = 20.0  # IOTGW_WS_RATE: frames per second a client may send
    burst: float = 40.0  # IOTGW_WS_BURST
    send_buffer: int = 512 * 1024  # IOTGW_WS_SEND_BUFFER: unsent bytes before pushes stop
    inbox: int = 256  # IOTGW_WS_INBOX: pushes queued for the socket in this process
    rejoin_every: float = 30.0  # IOTGW_PUSH_REJOIN_SECONDS
    recheck_seconds: float = 30.0  # IOTGW_WS_RECHECK_SECONDS
    max_frame: int = 64 * 1024  # IOTGW_WS_MAX_FRAME: Daphne refuses to send a larger frame
    push_buckets: int = 1  # IOTGW_PUSH_BUCKETS


class DashboardConsumer(AsyncWebsocketConsumer):
    """One operator's live view: only devices they own or share a group with (all for staff).

    Pushes come from the process's push hub (protocols.hub) into this socket's
    bounded inbox, drained in order by one task; `hold` keeps them queued while a
    subscribe sends its snapshot, so live telemetry never precedes it.

    A client that stops reading makes Daphne buffer what we send without bound, so
    pushes stop once IOTGW_WS_SEND_BUFFER bytes wait unsent (protocols.outbound);
    the socket is `behind` until its buffer has drained, then gets a fresh snapshot.
    """

    # Defaults for a socket refused or failed before connect() set them: clean-up runs on every exit path.
    opened = False
    closed_up = False
    behind = False
    auth_groups: tuple[str, ...] | list[str] = ()
    hub: PushHub | None = None
    recheck: asyncio.Task | None = None
    resync: asyncio.Task | None = None
    pump: asyncio.Task | None = None

    def __init__(self, *, config: DashboardConfig | None = None) -> None:
        super().__init__()
        self.config = config or DashboardConfig()

    async def __call__(self, scope, receive, send) -> None:
        """Channels' AsyncConsumer.__call__, but a channel-layer error (Redis away) does not end the socket."""
        self.scope = scope
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        self.channel_name = await self.channel_layer.new_channel()
        self.channel_receive = self._channel_receive
        self.base_send = send
        try:
            await await_many_dispatch([receive, self._channel_receive], self.dispatch)
        except StopConsumer:
            pass
        finally:  # also when a handler raised, or Daphne cancelled us, and disconnect() never ran
            await self._clean_up()

    async def dispatch(self, message: dict) -> None:
        """Channels' dispatch; a failing handler of a layer message is logged and the socket stays."""
        try:
            await super().dispatch(message)
        except StopConsumer:
            raise
        except Exception:
            if message.get("type") in ("websocket.connect", "websocket.disconnect"):
                raise  # the handshake or the close itself failed: nothing to keep open
            logger.exception("dashboard socket: the %r handler failed", message.get("type"))

    async def _channel_receive(self) -> dict:
        """The next message on this socket's own channel (revocations), retrying with back-off on a layer error."""
        return await receive_retrying(self.channel_layer, self.channel_name, _log_receive_failure)

    async def connect(self) -> None:
        """Refuse the handshake without credentials, or with a cookie from a foreign Origin."""
        user = self.scope.get("user")
        if user is None or not user.is_authenticated or not user.is_active:
            await self.close()
            return
        if self.scope.get("auth") == "session" and not origin_allowed(self.scope):
            await self.close()
            return
        self.devices: set[str] = set()
        self.everything = False
        self.limiter = TokenBucket(rate=self.config.rate, burst=self.config.burst)
        self.over_limit = 0
        self.budget = SendBudget(self.scope.get(SCOPE_KEY), self.config.send_buffer)
        self.auth_groups = self._auth_groups(user)
        for group in self.auth_groups:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()
        self.opened = True
        metrics.websockets_open.inc()
        self.recheck = asyncio.ensure_future(self._recheck_credentials())
        self.inbox = Inbox(self.config.inbox)
        self.hold = asyncio.Lock()
        hub = push_hub(self.channel_layer, rejoin_every=self.config.rejoin_every,
                       on_drop=metrics.ws_push_dropped.inc)
        self.hub = hub  # before attach: a failed attach is undone by the clean-up too
        await hub.attach(self.inbox)
        self.pump = asyncio.ensure_future(self._pump())

    def _auth_groups(self, user: Any) -> list[str]:
        """The groups through which a revoked token, a logout or a disabled user closes this socket."""
        groups = [user_group(user.pk)]
        if self.scope.get("token_id") is not None:
            groups.append(token_group(self.scope["token_id"]))
        if self._session_key():
            groups.append(session_group(self._session_key()))
        return groups

    def _session_key(self) -> str | None:
        """The session this socket stands on: its cookie's, or the one its ticket was fetched with."""
        if self.scope.get("auth") == "ticket":
            return self.scope.get("ticket_session_key")
        session = self.scope.get("session")
        return session.session_key if self.scope.get("auth") == "session" and session is not None else None

    async def disconnect(self, code: int) -> None:
        """Leave every group this socket joined."""
        await self._clean_up()

    async def _clean_up(self) -> None:
        """Undo connect(): the gauge, the tasks, the hub, the groups. Idempotent; each step runs whatever failed."""
        if self.closed_up:
            return
        self.closed_up = True
        if self.opened:
            metrics.websockets_open.dec()
        for task in (self.recheck, self.resync, self.pump):
            if task is not None:
                task.cancel()
        if self.hub is not None:
            try:
                await self.hub.detach(self.inbox)
            except Exception as exc:
                logger.warning("dashboard socket: could not leave the push hub: %s", exc)
        for group in self.auth_groups:
            try:
                await self.channel_layer.group_discard(group, self.channel_name)
            except Exception as exc:  # Redis away: the membership expires with the layer's group_expiry
                logger.info("dashboard socket: could not leave %s: %s", group, exc)

    async def _pump(self) -> None:
        """Deliver the inbox in order; a failed send is logged and the next push still goes out."""
        while True:
            push = await self.inbox.get()
            async with self.hold:
                if self.behind:
                    metrics.ws_push_skipped.inc()
                    continue
                try:
                    await self.deliver(push)
                except Exception as exc:
                    logger.warning("could not deliver a push to a dashboard: %s", exc)

    def _fall_behind(self) -> None:
        """Stop pushing to a socket whose client does not keep up; it gets a snapshot once drained."""
        metrics.ws_push_skipped.inc()
        if not self.behind:
            self.behind = True
            self.resync = asyncio.ensure_future(self._resync_when_drained())

    async def _resync_when_drained(self) -> None:
        """Once the client has read what was queued, a fresh snapshot replaces the pushes it missed."""
        while True:
            await self.budget.drained()
            try:
                async with self.hold:
                    await self._send_snapshot(None)
                    self.behind = False
                return
            except Exception as exc:  # e.g. the database away: try again shortly
                logger.warning("dashboard socket: could not send a catch-up snapshot: %s", exc)
                await asyncio.sleep(1.0)

    async def _recheck_credentials(self) -> None:
        """The layer may lose a revocation message: re-read the credentials now and then."""
        check = database_sync_to_async(socket_credentials_valid)
        while True:
            # Jittered: sockets opened together (a dashboard reload, a reconnect storm) would
            # otherwise all query at once, every interval, and stall the process's pushes.
            await asyncio.sleep(self.config.recheck_seconds * random.uniform(0.75, 1.25))
            try:
                valid = await check(user_id=self.scope["user"].pk, token_id=self.scope.get("token_id"),
                                    session_key=self._session_key())
            except Exception as exc:  # a database hiccup is not a revocation
                logger.warning("could not re-check socket credentials: %s", exc)
                continue
            if not valid:
                await self.sockets_revoke({})
                return

    async def sockets_revoke(self, message: dict) -> None:
        """The token was revoked, the session logged out or the user disabled: close with 4401."""
        metrics.websockets_closed.labels(reason="revoked").inc()
        await self.close(code=CLOSE_REVOKED)

    async def _throttled(self) -> bool:
        """Token bucket per socket: past the burst, say `rate_limited` once; past another burst, close."""
        if self.limiter.take():
            self.over_limit = 0
            return False
        self.over_limit += 1
        if self.over_limit == 1:
            await self.send(error_frame("rate_limited", f"over {self.config.rate:g} frames/s; frames dropped"))
        elif self.over_limit == int(self.config.burst) + 1:
            metrics.websockets_closed.labels(reason="flooding").inc()
            await self.close(code=CLOSE_FLOODING)
        return True

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Decode a frame and dispatch it by type; a bad frame, or any failure, gets an error and the socket stays."""
        ref = None
        if await self._throttled():
            return
        if self.budget.stuck():
            # Every answer would only pile up unread in this process.
            metrics.websockets_closed.labels(reason="not_reading").inc()
            await self.close(code=CLOSE_NOT_READING)
            return
        kind = "undecoded"
        try:
            frame = decode_client_frame(text_data)
            ref, kind = frame.get("ref"), frame["type"]
            await getattr(self, "on_" + kind)(frame)
        except GatewayError as exc:
            await self.send(error_frame(exc.code, str(exc), ref))
        except Exception:
            logger.exception("dashboard socket: a %s frame failed", kind)
            await self.send(error_frame("internal_error", "the server could not handle this frame", ref))

    async def on_ping(self, frame: dict) -> None:
        await self.send('{"type":"pong"}')

    async def on_subscribe(self, frame: dict) -> None:
        visible, everything, unknown = await database_sync_to_async(device_subscription)(
            self.scope["user"], frame["devices"]
        )
        if unknown:  # someone else's device is answered exactly like a missing one
            await self.send(error_frame("unknown_device", f"no such device: {', '.join(unknown[:20])}",
                                        frame.get("ref")))
        # The hub is in the buckets' groups before the snapshot is read, and what it
        # receives meanwhile waits in the inbox until the snapshot is out.
        async with self.hold:
            self.everything = self.everything or everything
            self.devices |= visible
            await self.hub.want(self.inbox, self._buckets())
            await self._send_snapshot(visible)

    async def _send_snapshot(self, device_ids: set[str] | None) -> None:
        """A snapshot of these devices, or (None) of everything this socket watches."""
        if device_ids is None and self.everything:
            snapshot = await database_sync_to_async(device_snapshots_visible_to)(self.scope["user"])
        else:
            wanted = self.devices if device_ids is None else device_ids
            snapshot = await database_sync_to_async(device_snapshots)(wanted)
        for text in snapshot_frames(snapshot, self.config.max_frame):
            await self.send(text)
        # Then the open alarms of those devices, as `alarm` frames (event "open"): a snapshot of them too.
        alarms = await database_sync_to_async(alarms_open_of)([d["id"] for d in snapshot])
        for state in alarms:
            await self.send(alarm_frame(state, event="open"))

    async def on_unsubscribe(self, frame: dict) -> None:
        if frame["devices"] == "*":
            self.devices.clear()
            self.everything = False
        else:
            self.devices.difference_update(frame["devices"])
        await self.hub.want(self.inbox, self._buckets())

    async def on_command(self, frame: dict) -> None:
        """Store the command, answer with its `command` frame (with the client's ref), then nudge the bridge."""
        request = command_request(frame)
        command = await database_sync_to_async(command_issue)(user=self.scope["user"], **request)
        state = command_state(command)
        state["ref"] = frame.get("ref")
        await self.send(command_frame(state))
        await command_announce(self.channel_layer, command, buckets=self.config.push_buckets)

    def _buckets(self) -> set[int]:
        """The push buckets of the devices this socket sees."""
        if self.everything:
            return set(range(self.config.push_buckets))
        return {bucket_of(d, self.config.push_buckets) for d in self.devices}

    def _sees(self, device_id: str) -> bool:
        return self.everything or device_id in self.devices

    async def deliver(self, push: Push) -> None:
        """A coalesced batch from the bridge, shared with other sockets (never mutated): forward this one's share."""
        message = push.message
        telemetry = message["telemetry"]
        if self.everything or telemetry.keys() <= self.devices:
            # The common case: the same frames for every socket that sees the whole batch, encoded once.
            frames = push.shared("telemetry", lambda: telemetry_frames(
                [f for items in telemetry.values() for f in items], self.config.max_frame))
        elif len(self.devices) < len(telemetry):
            # A socket watching a few devices looks them up rather than scanning the whole bucket:
            # with 100 such sockets that scan was most of the web process's work per push.
            fragments = [f for device_id in self.devices for f in telemetry.get(device_id, ())]
            frames = telemetry_frames(fragments, self.config.max_frame)
        else:
            fragments = [f for device_id, items in telemetry.items() if device_id in self.devices for f in items]
            frames = telemetry_frames(fragments, self.config.max_frame)
        for frame in frames:
            if not await self._push(frame):
                return
        for device_id, text in message["status"].items():
            if self._sees(device_id) and not await self._push(text):
                return
        for device_id, texts in message["frames"].items():
            if self._sees(device_id):
                for text in texts:
                    if not await self._push(text):
                        return

    async def _push(self, text: str) -> bool:
        """Send one pushed frame, unless the client has fallen behind; False once it has."""
        if self.behind or await self.budget.over():
            self._fall_behind()
            return False
        await self.send(text)
        return True
