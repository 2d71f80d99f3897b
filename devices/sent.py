"""Recording `sent` after a delivery: one group write for every PUBACK that arrived meanwhile, or none at all.

A device that answers at once (most do) answers within a millisecond or two of the broker's PUBACK.
Written at once, `sent` took the one database thread just as the answer arrived, and the answer's
transaction waited for it: two transactions in a row on every command's round trip. So the write
lingers a few milliseconds, and an answer that arrives meanwhile takes its command out of it: the
answer's transaction records `sent` too (services.commands._apply), as it always did for an answer
that beat the PUBACK. Nothing is weaker for it: until either write commits the command stays
`queued` under this bridge's lease, exactly as between the PUBACK and an immediate write, and a
bridge that dies there delivers it again after its restart (at-least-once, docs/commands.md).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterable

from core.wire import command_frame
from devices.models import Command
from devices.pusher import Pusher
from devices.selectors import command_state

MarkSent = Callable[[list[uuid.UUID]], Awaitable[dict[uuid.UUID, Command]]]


class SentWrites:
    """The dispatcher's `sent` group commit; its frames go out in one push per write."""

    def __init__(self, *, write: MarkSent, pusher: Pusher, linger: float = 0.005) -> None:
        self._write = write
        self._pusher = pusher
        # How long a write waits for answers that would make it unnecessary; one-way commands never wait
        # (`sent` is their end), nor does a write whose group of deliveries grew while another was in flight.
        self._linger = linger
        self._waiting: dict[uuid.UUID, tuple[asyncio.Future[None], bool]] = {}  # id → (recorded, two-way)
        self._writer: asyncio.Task[None] | None = None

    async def record(self, command: Command) -> None:
        """Return once `sent` is recorded: by the next group write, or by the transaction of the answer."""
        recorded: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[command.id] = (recorded, not command.oneway)
        self._start()
        await recorded

    def take(self, command_ids: Iterable[uuid.UUID | None]) -> dict[uuid.UUID, asyncio.Future[None]]:
        """Answers to these commands are being stored: no write of `sent` for those still waiting for one."""
        return {cid: self._waiting.pop(cid)[0] for cid in command_ids if cid is not None and cid in self._waiting}

    def settle(self, taken: dict[uuid.UUID, asyncio.Future[None]], recorded: set[uuid.UUID]) -> None:
        """After the answers' transaction: the taken ones it moved on are done, the others are written here."""
        for command_id, future in taken.items():
            if command_id in recorded:
                if not future.done():
                    future.set_result(None)
            else:  # refused (another device's answer), or the transaction failed: `sent` still has to be written
                self._waiting[command_id] = (future, False)
        if self._waiting:
            self._start()

    def _start(self) -> None:
        if self._writer is None:
            self._writer = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        try:
            if self._linger > 0 and any(two_way for _, two_way in self._waiting.values()):
                await asyncio.sleep(self._linger)
            while self._waiting:
                batch, self._waiting = self._waiting, {}
                try:
                    sent = await self._write(list(batch))
                except Exception as exc:
                    for future, _ in batch.values():
                        if not future.done():  # its delivery may have been cancelled meanwhile
                            future.set_exception(exc)
                    continue
                for future, _ in batch.values():
                    if not future.done():
                        future.set_result(None)
                if sent:
                    push = self._pusher.batch()
                    for command in sent.values():
                        push.frame(command.device_id, command_frame(command_state(command)))
                    await self._pusher.offer(push)
        finally:
            self._writer = None
