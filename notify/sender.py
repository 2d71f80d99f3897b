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
import functools
import logging
import math
import os
import secrets
import socket
from collections.abc import Sequence

from django.db import DatabaseError, InterfaceError

from devices.dbthread import in_db_thread
from notify.kinds import Outcome, send
from notify.services import (
    Claimed,
    deliveries_finish,
    delivery_claim,
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
    """One process's notification sender; every keyword has the default of its IOTGW_NOTIFY_* variable.

    It claims ahead, up to a few deliveries per send slot (as many as can start before their lease
    would run out), sends them from `concurrency` workers, and records the outcomes that have
    gathered in one transaction: a commit per try, on a busy database, held it to a few per second.
    """

    def __init__(self, *, owner: str | None = None, interval: float = 1.0, lease: float = 60.0, timeout: float = 10.0,
                 concurrency: int = 4, max_attempts: int = 12, retry_first: float = 10.0, retry_most: float = 600.0,
                 from_email: str = "", allowed_hosts: Sequence[str] = (), keep_days: float = 30.0) -> None:
        if lease <= timeout:
            raise ValueError("the lease must outlast a send (IOTGW_NOTIFY_LEASE > IOTGW_NOTIFY_TIMEOUT)")
        self.owner = owner or sender_id()
        self._interval, self._lease, self._timeout = interval, lease, timeout
        self._slots = max(1, concurrency)
        # A claimed delivery may wait for the ones ahead of it in its slot: all must start within the lease.
        self._depth = self._slots * max(1, int(lease // timeout) - 1)
        self._finish_options = {"max_attempts": max_attempts, "retry_first": retry_first, "retry_most": retry_most}
        self._send = functools.partial(send, timeout=timeout, from_email=from_email, allowed_hosts=tuple(allowed_hosts))
        self._keep_days = keep_days
        self._queue: asyncio.Queue[Claimed] = asyncio.Queue()
        self._held: set[str] = set()  # claimed and not yet recorded
        self._outcomes: list[tuple[str, Outcome]] = []
        self._wake, self._recorded = asyncio.Event(), asyncio.Event()
        self._claim = in_db_thread(delivery_claim)
        self._finish = in_db_thread(deliveries_finish)
        self._sweep = in_db_thread(reminders_sweep)
        self._prune = in_db_thread(outbox_prune)
        self._beat = in_db_thread(sender_heartbeat)
        self._last = {"sweep": -math.inf, "beat": -math.inf, "prune": -math.inf}

    async def run(self) -> None:
        """Claim, send and record until cancelled; a database outage is logged and waited out."""
        logger.info("notification sender %s running", self.owner)
        tasks = [asyncio.ensure_future(self._worker()) for _ in range(self._slots)]
        tasks.append(asyncio.ensure_future(self._recorder()))
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
            for task in tasks:
                task.cancel()

    async def step(self) -> int:
        """One round: what is due every so often (sweep, heartbeat, prune), then claims for the free places."""
        now = asyncio.get_running_loop().time()
        if self._due("sweep", self._interval, now):
            await self._sweep()
        if self._due("beat", BEAT_EVERY, now):
            await self._beat(owner=self.owner, host=HOST)
        if self._due("prune", PRUNE_EVERY, now):
            await self._prune(keep_days=self._keep_days)
        free = self._depth - len(self._held)
        if free <= 0:
            return 0
        claimed: list[Claimed] = await self._claim(owner=self.owner, lease=self._lease, limit=free,
                                                   exclude=list(self._held))
        for item in claimed:
            self._held.add(item.delivery_id)
            self._queue.put_nowait(item)
        return len(claimed)

    def _due(self, what: str, every: float, now: float) -> bool:
        if now - self._last[what] < every:
            return False
        self._last[what] = now
        return True

    async def _worker(self) -> None:
        while True:
            item = await self._queue.get()
            outcome = await asyncio.to_thread(self._send, item.channel, item.message)
            if not outcome.ok:
                logger.info("delivery %s to %s failed: %s", item.delivery_id, item.channel.name, outcome.error[:200])
            self._outcomes.append((item.delivery_id, outcome))
            self._recorded.set()

    async def _recorder(self) -> None:
        """Record every outcome gathered so far in one transaction; on a database error, keep them and retry
        (past their lease another sender sends them again: at-least-once)."""
        while True:
            await self._recorded.wait()
            self._recorded.clear()
            batch, self._outcomes = self._outcomes, []
            try:
                await self._finish(outcomes=batch, **self._finish_options)
            except (DatabaseError, InterfaceError) as exc:
                logger.warning("%d tries sent but not recorded yet: %s", len(batch), str(exc).strip()[:200])
                self._outcomes[:0] = batch
                await asyncio.sleep(self._interval)
                self._recorded.set()
                continue
            self._held.difference_update(d for d, _ in batch)
            self._wake.set()  # places are free: claim more now
