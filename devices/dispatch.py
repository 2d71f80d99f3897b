"""The transport-neutral command dispatcher (SPEC §6): deliver what is queued, record `sent`, resolve, time out.

The database is the queue; nudges over the channel layer only make a bridge look sooner.
Every `interval` the dispatcher also sweeps: it times out and expires what is due and
delivers every queued command of an online device, so a lost nudge or a restarted
bridge delays a command by at most one interval and loses nothing. Delivery to the
device is at-least-once: a bridge killed between the delivery and recording `sent`
delivers again after its restart, so devices deduplicate on the command id.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import uuid
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from typing import Protocol, TypeVar

from django.db import DatabaseError, InterfaceError, OperationalError

from core.errors import DeliveryFailed
from core.push import PushBatch
from core.retry import Backoff, retry
from core.transport import Outbound, Outlet
from core.wire import CommandResponse, command_frame
from devices.dbthread import in_db_thread
from devices.models import Command
from devices.pipeline import Committed
from devices.pusher import Pusher
from devices.selectors import command_state
from devices.sent import SentWrites
from devices.services.commands import (
    COMMAND_FINAL,
    COMMAND_LEASE_SECONDS,
    command_claim,
    command_expire_due,
    command_lease_renew,
    command_mark_sent_many,
    command_resolve_many,
    command_time_out_due,
)
from devices.stats import IngestStats

logger = logging.getLogger("iotgw.bridge")

T = TypeVar("T")


class CommandListener(Protocol):
    """Told of commands that reached an end here (a response, a time-out, an expiry): alarm rules on failures."""

    async def commands_finished(self, commands: list[Command]) -> None: ...


class CommandDispatcher:
    """One process's command loop for one transport: claims, delivers, records and times out commands.

    Its collaborators are narrow: the `outlet` it delivers through, the lease `owner` it claims
    as (the bridge's client id), the `pusher` for dashboards and the `stats` it counts in. It is
    also the pipeline's ResponseResolver (responses arrive in ingest batches) and one of its
    BatchListeners (a device that came online gets its queued commands at once).
    """

    def __init__(self, *, outlet: Outlet, owner: str, stats: IngestStats, pusher: Pusher, interval: float = 1.0,
                 batch: int = 200, transports: Iterable[str] | None = None,
                 reach: Callable[[], Collection[str]] | None = None, housekeep: bool = True,
                 listeners: Sequence[CommandListener] = (), sent_linger: float = 0.005,
                 lease: float = COMMAND_LEASE_SECONDS) -> None:
        self._outlet = outlet
        self.listeners = list(listeners)
        # The device transports it delivers to (None: every device), and, for an outlet that holds
        # the devices' connections itself (a WebSocket device), the devices it can reach right now.
        self._transports = tuple(transports) if transports is not None else None
        self._reach = reach
        self._housekeeps = housekeep  # time out and expire what is due (the bridges do; a web process need not)
        self._owner = owner
        self._stats = stats
        self._pusher = pusher
        self._interval = interval
        self._batch = batch
        self._lease = lease  # how long a claim holds; renewed while the delivery is in flight
        self._wake = asyncio.Event()
        self._sweep_now = True  # at start: everything pending
        self._nudged: set[str] = set()
        # Deliveries in flight, and when their lease was taken or last renewed (loop time).
        self._inflight: dict[uuid.UUID, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._claim = in_db_thread(command_claim)
        self._mark_sent = in_db_thread(command_mark_sent_many)
        # Deliveries finished while a `sent` write is in flight wait for the next one: one write for all of them,
        # or none for those answered first (devices/sent.py).
        self._sent = SentWrites(write=self._write_sent, pusher=pusher, linger=sent_linger)
        self._renew = in_db_thread(command_lease_renew)
        self._resolve = in_db_thread(command_resolve_many)
        self._time_out = in_db_thread(command_time_out_due)
        self._expire = in_db_thread(command_expire_due)

    def nudge(self, device_ids: Iterable[str] | None = None) -> None:
        """Look for queued commands now: of these devices, or (None) of every device."""
        if device_ids is None:
            self._sweep_now = True
        else:
            self._nudged.update(device_ids)
        self._wake.set()

    async def committed(self, batch: Committed) -> None:
        """Devices that just came online get their waiting commands now, not at the next sweep."""
        if batch.came_online:
            self.nudge(batch.came_online)

    async def run(self) -> None:
        """Dispatch on nudges, sweep every interval, until cancelled; a reconnect sweeps at once."""
        follow = asyncio.ensure_future(self._follow_connection())
        try:
            await self._loop()
        finally:
            follow.cancel()

    async def _follow_connection(self) -> None:
        """What queued up while the transport was away goes out as soon as it is back."""
        while True:
            await self._outlet.until_connected()
            self.nudge()
            await self._outlet.until_disconnected()

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_sweep = loop.time()
        while True:
            delay = next_sweep - loop.time()
            if delay > 0 and not self._sweep_now:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancel that arrives as
                # the event is set (a nudge during shutdown), and the loop would never end.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
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
                self._stats.counts["db_errors"] += 1
                logger.warning("commands: database unavailable (%s); retrying", str(exc).strip()[:200])
                await asyncio.sleep(self._interval)
            except Exception:
                logger.exception("commands: dispatch failed; retrying at the next sweep")
                await asyncio.sleep(self._interval)

    async def _dispatch(self, device_ids: Iterable[str] | None) -> None:
        """Claim queued commands of online devices and deliver each without waiting for the others."""
        if not self._outlet.connected:
            return  # the sweep after the reconnect takes them; meanwhile another bridge may
        if self._reach is not None:
            reachable = self._reach()
            device_ids = [d for d in device_ids if d in reachable] if device_ids is not None else list(reachable)
            if not device_ids:
                return
        commands = await self._claim(owner=self._owner, device_ids=device_ids, exclude=set(self._inflight),
                                     limit=self._batch, transports=self._transports, lease=self._lease)
        for command in commands:
            self._inflight[command.id] = asyncio.get_running_loop().time()
            task = asyncio.ensure_future(self._deliver(command))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if len(commands) == self._batch:
            self.nudge(device_ids)

    async def _deliver(self, command: Command) -> None:
        """Deliver through the outlet, then record `sent` once it says the command was handed over."""
        outbound = Outbound(command_id=command.id, device_id=command.device_id, name=command.name,
                            params=command.params, expires_at=command.expires_at)
        try:
            # No queue while the transport is away: deliver raises DeliveryFailed at once (or when the
            # connection drops before the PUBACK), the command stays queued under our lease, and the
            # sweep after the reconnect delivers it again.
            await self._outlet.deliver(outbound)
            self._stats.counts["commands_sent"] += 1
            await self._sent.record(command)
        except DeliveryFailed as exc:
            logger.warning("command %s not delivered (%s); the next sweep retries it", command.id, exc)
        finally:
            self._inflight.pop(command.id, None)

    async def _write_sent(self, command_ids: list[uuid.UUID]) -> dict[uuid.UUID, Command]:
        """`sent` for a group of deliveries (a fleet-wide command: a few transactions, not one per device)."""
        return await self._retrying(functools.partial(self._mark_sent, command_ids=command_ids))

    async def _housekeep(self) -> None:
        """Renew leases of deliveries in flight, then time out and expire what is due."""
        # A lease is renewed once a third of it has passed, not at every sweep: a fleet-wide command's thousand
        # deliveries in flight would take the database thread for a renewal of all of them every second.
        now = asyncio.get_running_loop().time()
        due = [cid for cid, at in self._inflight.items() if now - at >= self._lease / 3]
        if due:
            await self._renew(owner=self._owner, command_ids=due, lease=self._lease)
            for command_id in due:
                if command_id in self._inflight:
                    self._inflight[command_id] = now
        if not self._housekeeps:
            return
        timed_out = await self._time_out()
        expired = await self._expire()
        self._stats.counts["commands_timed_out"] += len(timed_out)
        self._stats.counts["commands_expired"] += len(expired)
        await self._push(timed_out + expired)
        await self._tell(timed_out + expired)

    async def resolve(self, responses: list[tuple[str, CommandResponse]], push: PushBatch) -> None:
        """Apply a batch's responses (the pipeline acks them after this returns); count the ignored ones."""
        # Answers to deliveries whose `sent` is not written yet record it in their own transaction.
        taken = self._sent.take(r.command_id for _, r in responses)
        recorded: set[uuid.UUID] = set()
        try:
            outcomes = await self._retrying(lambda: self._resolve(responses))
            recorded = {c.id for c, _ in outcomes if c is not None and c.status != Command.QUEUED}
        finally:
            self._sent.settle(taken, recorded)
        await self._tell([c for c, _ in outcomes if c is not None and c.status in COMMAND_FINAL])
        for (device_id, response), (command, reason) in zip(responses, outcomes, strict=True):
            if command is not None:
                push.frame(device_id, command_frame(command_state(command)))
            if reason == "response_unmatched":
                continue  # a state message that would answer a command, with none waiting: nothing to count
            if reason is not None:
                self._stats.reject(source=device_id, reason=reason,
                                   message=f"response to command {response.command_id}")
            else:
                self._stats.counts["command_responses"] += 1

    async def _tell(self, commands: list[Command]) -> None:
        if not commands:
            return
        for listener in self.listeners:
            try:
                await listener.commands_finished(commands)
            except Exception:
                logger.exception("a command listener (%s) failed", type(listener).__name__)

    async def _retrying(self, call: Callable[[], Awaitable[T]]) -> T:
        """Retry while the database is away: a delivery or a response is recorded late, never dropped."""

        def failed(exc: BaseException, delay: float) -> None:
            self._stats.counts["db_errors"] += 1
            logger.warning("commands: database unavailable (%s); retrying in %.1fs", str(exc)[:200], delay)

        return await retry(call, on=(OperationalError, InterfaceError), backoff=Backoff(first=0.2, most=5.0),
                           failed=failed)

    async def _push(self, commands: list[Command]) -> None:
        push = self._pusher.batch()
        for command in commands:
            push.frame(command.device_id, command_frame(command_state(command)))
        await self._pusher.send_now(push)
