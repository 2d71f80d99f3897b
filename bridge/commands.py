"""Commands on the bridge side (SPEC §6): publish what is queued, record PUBACKs, apply responses, enforce time.

The database is the queue; nudges over the channel layer only make the bridge look sooner.
Every `interval` the dispatcher also sweeps: it times out and expires what is due and
publishes every queued command of an online device, so a lost nudge or a restarted
bridge delays a command by at most one interval and loses nothing. Delivery to the
device is at-least-once: a bridge killed between the publish and recording `sent`
publishes again after its restart, so devices deduplicate on the command id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError

from bridge.db import in_db_thread
from core.errors import PayloadInvalid
from core.push import PushBatch, push_send
from core.topics import COMMAND_RESPONSE, COMMANDS, device_topic
from core.wire import CommandResponse, command_frame, command_payload, parse_command_response
from devices.models import Command
from devices.selectors import command_state
from devices.services.commands import (
    command_claim,
    command_expire_due,
    command_lease_renew,
    command_mark_sent,
    command_resolve,
    command_time_out_due,
)

if TYPE_CHECKING:
    from bridge.runtime import Bridge

logger = logging.getLogger("iotgw.bridge")



def _resolve_all(responses: list[tuple[str, CommandResponse]]) -> list[tuple[Command | None, str | None]]:
    return [
        command_resolve(device_id=device_id, command_id=r.command_id, ok=r.ok, result=r.result, error=r.error)
        for device_id, r in responses
    ]


class CommandDispatcher:
    """One bridge's command loop: claims, publishes, records and times out commands."""

    def __init__(self, *, bridge: Bridge, interval: float = 1.0, batch: int = 200) -> None:
        self._bridge = bridge
        self._interval = interval
        self._batch = batch
        self._wake = asyncio.Event()
        self._sweep_now = True  # at start: everything pending
        self._nudged: set[str] = set()
        self._inflight: set[uuid.UUID] = set()
        self._tasks: set[asyncio.Task] = set()
        self._claim = in_db_thread(command_claim)
        self._mark_sent = in_db_thread(command_mark_sent)
        self._renew = in_db_thread(command_lease_renew)
        self._resolve = in_db_thread(_resolve_all)
        self._time_out = in_db_thread(command_time_out_due)
        self._expire = in_db_thread(command_expire_due)

    def nudge(self, device_ids: Iterable[str] | None = None) -> None:
        """Look for queued commands now: of these devices, or (None) of every device."""
        if device_ids is None:
            self._sweep_now = True
        else:
            self._nudged.update(device_ids)
        self._wake.set()

    async def run(self) -> None:
        """Dispatch on nudges, sweep every interval, until cancelled."""
        loop = asyncio.get_running_loop()
        next_sweep = loop.time()
        while True:
            delay = next_sweep - loop.time()
            if delay > 0 and not self._sweep_now:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
            self._wake.clear()
            devices, self._nudged = self._nudged, set()
            try:
                if self._sweep_now or loop.time() >= next_sweep:
                    self._sweep_now = False
                    next_sweep = loop.time() + self._interval
                    await self._housekeep()
                    await self._dispatch(None)
                elif devices:
                    await self._dispatch(devices)
            except DatabaseError as exc:
                self._bridge.stats.counts["db_errors"] += 1
                logger.warning("commands: database unavailable (%s); retrying", str(exc).strip()[:200])
                await asyncio.sleep(self._interval)
            except Exception:
                logger.exception("commands: dispatch failed; retrying at the next sweep")
                await asyncio.sleep(self._interval)

    async def _dispatch(self, device_ids: Iterable[str] | None) -> None:
        """Claim queued commands of online devices and publish each without waiting for the others."""
        if not self._bridge.connected.is_set():
            return  # the sweep after the reconnect takes them; meanwhile another bridge may
        commands = await self._claim(owner=self._bridge.client_id, device_ids=device_ids,
                                     exclude=set(self._inflight), limit=self._batch)
        for command in commands:
            self._inflight.add(command.id)
            task = asyncio.ensure_future(self._deliver(command))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if len(commands) == self._batch:
            self.nudge(device_ids)

    async def _deliver(self, command: Command) -> None:
        """Publish at QoS 1, then record `sent` once the broker has acknowledged it."""
        device_id = command.device_id
        payload = command_payload(command_id=str(command.id), name=command.name, params=command.params,
                                  expires_at=command.expires_at)
        try:
            # No queue while the broker is away: publish raises ConnectionError at once (or when the
            # connection drops before the PUBACK), the command stays queued under our lease, and the
            # sweep after the reconnect publishes it again. Response Topic and Correlation Data go
            # out on v5 only.
            await self._bridge.publish(device_topic(device_id, COMMANDS), payload, qos=1,
                                       response_topic=device_topic(device_id, COMMAND_RESPONSE),
                                       correlation_data=str(command.id).encode())
            sent = await self._retry(self._mark_sent, command_id=command.id)
        except ConnectionError as exc:
            logger.warning("command %s not published (%s); the next sweep retries it", command.id, exc)
            return
        finally:
            self._inflight.discard(command.id)
        self._bridge.stats.counts["commands_sent"] += 1
        if sent is not None:
            await self._push([sent])

    async def _housekeep(self) -> None:
        """Renew leases of publishes in flight, then time out and expire what is due."""
        if self._inflight:
            await self._renew(owner=self._bridge.client_id, command_ids=set(self._inflight))
        timed_out = await self._time_out()
        expired = await self._expire()
        self._bridge.stats.counts["commands_timed_out"] += len(timed_out)
        self._bridge.stats.counts["commands_expired"] += len(expired)
        await self._push(timed_out + expired)

    async def on_responses(self, responses: list[tuple[str, bytes]], push: PushBatch) -> None:
        """Apply a batch's responses (the Ingestor acks them after this returns); count the ignored ones."""
        stats = self._bridge.stats
        parsed: list[tuple[str, CommandResponse]] = []
        for device_id, payload in responses:
            try:
                parsed.append((device_id, parse_command_response(payload, max_bytes=settings.IOTGW_MAX_PAYLOAD)))
            except PayloadInvalid as exc:
                stats.reject(source=device_id, reason=exc.reason, message=str(exc))
        if not parsed:
            return
        outcomes = await self._retry(self._resolve, parsed)
        for (device_id, response), (command, reason) in zip(parsed, outcomes, strict=True):
            if command is not None:
                push.frame(device_id, command_frame(command_state(command)))
            if reason is not None:
                stats.reject(source=device_id, reason=reason, message=f"response to command {response.command_id}")
            else:
                stats.counts["command_responses"] += 1

    async def _retry(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Retry while the database is away: a PUBACK or a response is recorded late, never dropped."""
        delay = 0.2
        while True:
            try:
                return await call(*args, **kwargs)
            except (OperationalError, InterfaceError) as exc:
                self._bridge.stats.counts["db_errors"] += 1
                logger.warning("commands: database unavailable (%s); retrying in %.1fs", str(exc)[:200], delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _push(self, commands: list[Command]) -> None:
        if not commands:
            return
        push = PushBatch(buckets=settings.IOTGW_PUSH_BUCKETS)
        for command in commands:
            push.frame(command.device_id, command_frame(command_state(command)))
        try:
            await push_send(self._bridge.layer, push)
        except Exception as exc:  # best-effort, like every push; the state is stored
            logger.warning("command push to dashboards failed: %s", exc)
