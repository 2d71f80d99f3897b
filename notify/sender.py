"""The sender loop: claims due deliveries, sends each through its channel in a worker thread, records the outcome.

Several senders may run (one per process that starts it): claims skip rows another holds
(`SELECT … FOR UPDATE SKIP LOCKED` on PostgreSQL; SQLite's one writer serialises the claim) and
each claim is a lease. A sender killed mid-send never records its try; the lease runs out and
another sender (or it, restarted) sends again: at-least-once, and receivers may dedupe on the
`X-Iotgw-Delivery` id. It also runs the reminder sweep (held-back raises, repeats).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Sequence

from django.db import DatabaseError, InterfaceError

from devices.dbthread import in_db_thread
from notify.kinds import send
from notify.services import (
    Claimed,
    delivery_claim,
    delivery_finish,
    outbox_prune,
    reminders_sweep,
    sender_heartbeat,
)

PRUNE_EVERY = 60.0  # seconds between prunes of old events: a small delete, not worth doing every round
BEAT_EVERY = 5.0  # seconds between heartbeats; `notify --status` calls a sender silent for 30 s dead
HOST = socket.gethostname()[:64]

logger = logging.getLogger("iotgw.notify")


def sender_id() -> str:
    """A lease owner unique to this process."""
    return f"notify-{HOST[:24]}-{os.getpid()}-{secrets.token_hex(3)}"


class Sender:
    """One process's notification sender; every keyword has the default of its IOTGW_NOTIFY_* variable."""

    def __init__(self, *, owner: str | None = None, interval: float = 1.0, lease: float = 60.0, timeout: float = 10.0,
                 concurrency: int = 4, max_attempts: int = 12, retry_first: float = 10.0, retry_most: float = 600.0,
                 from_email: str = "", allowed_hosts: Sequence[str] = (), keep_days: float = 30.0) -> None:
        if lease <= timeout:
            raise ValueError("the lease must outlast a send (IOTGW_NOTIFY_LEASE > IOTGW_NOTIFY_TIMEOUT)")
        self.owner = owner or sender_id()
        self._interval, self._lease, self._timeout = interval, lease, timeout
        self._slots = max(1, concurrency)
        self._finish_options = {"max_attempts": max_attempts, "retry_first": retry_first, "retry_most": retry_most}
        self._from_email = from_email
        self._allowed_hosts = tuple(allowed_hosts)
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._claim = in_db_thread(delivery_claim)
        self._finish = in_db_thread(delivery_finish)
        self._sweep = in_db_thread(reminders_sweep)
        self._prune = in_db_thread(outbox_prune)
        self._keep_days = keep_days
        self._pruned_at = -PRUNE_EVERY
        self._beat = in_db_thread(sender_heartbeat)
        self._beat_at = -BEAT_EVERY

    async def run(self) -> None:
        """Claim and send until cancelled; a database outage is logged and waited out."""
        logger.info("notification sender %s running", self.owner)
        try:
            while True:
                try:
                    await self.step()
                except (DatabaseError, InterfaceError) as exc:
                    logger.warning("notification sender: database unavailable (%s)", str(exc).strip()[:200])
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._interval)
                self._wake.clear()
        finally:
            for task in self._inflight.values():
                task.cancel()

    async def step(self) -> int:
        """One round: the reminder sweep, then as many claims as there are free send slots."""
        await self._sweep()
        now = asyncio.get_running_loop().time()
        if now - self._beat_at >= BEAT_EVERY:
            self._beat_at = now
            await self._beat(owner=self.owner, host=HOST)
        if now - self._pruned_at >= PRUNE_EVERY:
            self._pruned_at = now
            await self._prune(keep_days=self._keep_days)
        free = self._slots - len(self._inflight)
        if free <= 0:
            return 0
        claimed: list[Claimed] = await self._claim(owner=self.owner, lease=self._lease, limit=free,
                                                   exclude=list(self._inflight))
        for item in claimed:
            task = asyncio.ensure_future(self._send(item))
            self._inflight[item.delivery_id] = task
            task.add_done_callback(self._done)
        return len(claimed)

    def _done(self, task: asyncio.Task[None]) -> None:
        for delivery_id, running in list(self._inflight.items()):
            if running is task:
                del self._inflight[delivery_id]
        self._wake.set()  # a free slot: look for more at once

    async def _send(self, item: Claimed) -> None:
        outcome = await asyncio.to_thread(send, item.channel, item.message, timeout=self._timeout,
                                          from_email=self._from_email, allowed_hosts=self._allowed_hosts)
        try:
            await self._finish(delivery_id=item.delivery_id, outcome=outcome, **self._finish_options)
        except (DatabaseError, InterfaceError) as exc:  # unrecorded: the lease runs out and it is sent again
            logger.warning("delivery %s sent but not recorded: %s", item.delivery_id, str(exc).strip()[:200])
        if not outcome.ok:
            logger.info("delivery %s to %s failed: %s", item.delivery_id, item.channel.name, outcome.error[:200])
