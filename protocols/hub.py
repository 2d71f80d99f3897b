"""One channel-layer subscription per process for dashboard pushes, fanned out in-process.

Without it every dashboard joins the push buckets' groups itself, so the layer
delivers each bridge push once per dashboard (a receive, a deserialise or deep
copy and Channels' per-message `aclose_old_connections()` thread hop each).
The hub holds one channel of its own, joins a bucket's group while at least one
local dashboard needs that bucket, receives each push once, and puts it in the
bounded inbox of every local dashboard registered for that bucket. Each
consumer drains its own inbox (protocols.consumers), so a slow one never stalls
the hub or the others.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from typing import Any

from core.push import PUSH_TYPE, bucket_group
from core.retry import Backoff, retry

logger = logging.getLogger("iotgw.ws.hub")

# Back-off bounds after a layer error (Redis away): retry fast at first, then every second. A retry is one
# connection attempt per web process; with 5 s, dashboards stayed dark up to 5 s after a Sentinel had
# already promoted the replica (bench/failover.py: live again 6.8 s after the master's kill, 3.4 s of it
# the promotion).
BACKOFF_MIN = 0.1
BACKOFF_MAX = 1.0


async def receive_retrying(layer: Any, channel: str, on_error: Callable[[Exception, float], None]) -> dict:
    """The next message on `channel`; a layer error (Redis away) is reported to `on_error(exc, delay)`
    and retried after a jittered back-off that doubles up to BACKOFF_MAX."""
    return await retry(lambda: layer.receive(channel), on=(Exception,),
                       backoff=Backoff(first=BACKOFF_MIN, most=BACKOFF_MAX), failed=on_error)


class Routes:
    """Which local subscribers want which buckets, with the buckets the process as a whole needs. Pure."""

    def __init__(self) -> None:
        self._wants: dict[Hashable, frozenset[int]] = {}
        self._subscribers: dict[int, list[Hashable]] = {}

    def set(self, subscriber: Hashable, buckets: Iterable[int]) -> tuple[set[int], set[int]]:
        """Register (or update) a subscriber's buckets; returns (buckets newly needed, buckets no longer needed)."""
        new = frozenset(buckets)
        old = self._wants.get(subscriber, frozenset())
        self._wants[subscriber] = new
        joined, left = set(), set()
        for bucket in new - old:
            subscribers = self._subscribers.setdefault(bucket, [])
            if not subscribers:
                joined.add(bucket)
            subscribers.append(subscriber)
        for bucket in old - new:
            left |= self._drop(bucket, subscriber)
        return joined, left

    def remove(self, subscriber: Hashable) -> set[int]:
        """Forget a subscriber; returns the buckets no subscriber needs any more."""
        left: set[int] = set()
        for bucket in self._wants.pop(subscriber, frozenset()):
            left |= self._drop(bucket, subscriber)
        return left

    def _drop(self, bucket: int, subscriber: Hashable) -> set[int]:
        subscribers = self._subscribers[bucket]
        subscribers.remove(subscriber)
        if subscribers:
            return set()
        del self._subscribers[bucket]
        return {bucket}

    def targets(self, bucket: int | None) -> list[Hashable]:
        """The subscribers of a bucket; all of them for a message without one (they filter by device)."""
        if bucket is None:
            return list(self._wants)
        return list(self._subscribers.get(bucket, ()))

    @property
    def buckets(self) -> set[int]:
        """The buckets at least one subscriber needs."""
        return set(self._subscribers)

    def __contains__(self, subscriber: Hashable) -> bool:
        return subscriber in self._wants

    def __len__(self) -> int:
        return len(self._wants)


class Push:
    """A received push message, shared read-only by every inbox it is routed to.

    `shared()` memoises work that is the same for all of them (e.g. the frames of a
    dashboard that sees every device in the message), so it is done once, not per socket.
    """

    __slots__ = ("message", "_memo")

    def __init__(self, message: dict[str, Any]) -> None:
        self.message = message
        self._memo: dict[str, Any] = {}

    def shared(self, key: str, build: Callable[[], Any]) -> Any:
        """`build()`'s result, computed by the first caller only."""
        if key not in self._memo:
            self._memo[key] = build()
        return self._memo[key]


class Inbox:
    """A bounded FIFO of pushes for one consumer: when full, the oldest is dropped, never the hub blocked."""

    def __init__(self, capacity: int) -> None:
        self._items: deque[Push] = deque()
        self._capacity = max(1, capacity)
        self._ready = asyncio.Event()

    def put(self, push: Push) -> bool:
        """Queue a push; True when the oldest one had to be dropped to make room."""
        dropped = len(self._items) >= self._capacity
        if dropped:
            self._items.popleft()
        self._items.append(push)
        self._ready.set()
        return dropped

    async def get(self) -> Push:
        """The oldest push, waiting for one."""
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()

    def __len__(self) -> int:
        return len(self._items)


class PushHub:
    """One process-wide subscriber to the push buckets; see the module docstring."""

    def __init__(self, layer: Any, *, rejoin_every: float, on_drop: Any = None) -> None:
        self.layer = layer
        self.rejoin_every = rejoin_every
        self.on_drop = on_drop
        self.routes = Routes()
        self.channel: str | None = None
        self._joined: set[int] = set()  # buckets whose group the layer has (as far as we know) our channel in
        self._membership = asyncio.Lock()
        self._rejoin = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self.stopped = False

    async def attach(self, inbox: Inbox) -> None:
        """Register a dashboard's inbox (no buckets yet); the first one starts the hub."""
        self.routes.set(inbox, ())
        async with self._membership:
            if self.channel is None and not self.stopped:
                self.channel = await self.layer.new_channel()
                self._tasks = [asyncio.ensure_future(self._receive()), asyncio.ensure_future(self._keep_joined())]

    async def want(self, inbox: Inbox, buckets: Iterable[int]) -> None:
        """Route these buckets (and only these) to `inbox`; returns once the hub is in their groups.

        A layer error is logged, not raised: the hub re-joins when the layer is back.
        """
        if inbox not in self.routes:
            return  # detached meanwhile
        self.routes.set(inbox, buckets)
        try:
            await self._sync()
        except Exception as exc:
            logger.warning("could not join the push groups (will retry): %s", exc)
            self._rejoin.set()

    async def detach(self, inbox: Inbox) -> None:
        """Unregister an inbox; the last one out stops the hub and leaves its groups."""
        if inbox not in self.routes:
            return
        self.routes.remove(inbox)
        if len(self.routes):
            try:
                await self._sync()
            except Exception as exc:
                logger.warning("could not leave a push group: %s", exc)
            return
        self.stopped = True
        _forget(self)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await self._sync()
        except Exception as exc:  # the groups expire on their own
            logger.info("could not leave the push groups on stop: %s", exc)

    async def _sync(self, *, everything: bool = False) -> None:
        """Join the groups of the wanted buckets (all again with `everything`) and leave the others."""
        wanted = set() if self.stopped else self.routes.buckets
        if not everything and wanted == self._joined:
            return
        async with self._membership:
            if self.channel is None:
                return
            wanted = set() if self.stopped else self.routes.buckets
            for bucket in sorted(wanted if everything else wanted - self._joined):
                await self.layer.group_add(bucket_group(bucket), self.channel)
                self._joined.add(bucket)
            for bucket in sorted(self._joined - wanted):
                self._joined.discard(bucket)
                await self.layer.group_discard(bucket_group(bucket), self.channel)

    def route(self, message: dict[str, Any]) -> None:
        """Put a push in the inbox of every local dashboard of its bucket."""
        if message.get("type") != PUSH_TYPE:
            logger.warning("ignoring a %r message on the push hub's channel", message.get("type"))
            return
        push = Push(message)
        for inbox in self.routes.targets(message.get("bucket")):
            if inbox.put(push) and self.on_drop is not None:
                self.on_drop()

    async def _receive(self) -> None:
        """The one receive loop; a layer error (Redis away) backs off and asks for a re-join."""

        def failed(exc: Exception, delay: float) -> None:
            logger.warning("push hub could not receive (retrying in %.1fs): %s", delay, exc)
            self._rejoin.set()

        while True:
            message = await receive_retrying(self.layer, self.channel, failed)
            try:
                self.route(message)
            except Exception:
                logger.exception("push hub could not route a message")

    async def _keep_joined(self) -> None:
        """Re-join every wanted group now and then, and soon after an error.

        Group memberships vanish when Redis restarts without persistence and expire
        after the layer's group_expiry: re-adding is idempotent and refreshes both.
        """
        while True:
            try:
                await asyncio.wait_for(self._rejoin.wait(), self.rejoin_every)
            except TimeoutError:
                pass

            async def rejoin() -> None:
                self._rejoin.clear()
                await self._sync(everything=True)

            def failed(exc: BaseException, delay: float) -> None:
                logger.warning("push hub could not re-join its groups (retrying in %.1fs): %s", delay, exc)

            await retry(rejoin, on=(Exception,), backoff=Backoff(first=BACKOFF_MIN, most=BACKOFF_MAX), failed=failed)


_hubs: dict[tuple[asyncio.AbstractEventLoop, int], PushHub] = {}


def push_hub(layer: Any, *, rejoin_every: float, on_drop: Any = None) -> PushHub:
    """This event loop's hub for `layer`, created on first use (nothing runs until a dashboard attaches)."""
    key = (asyncio.get_running_loop(), id(layer))
    hub = _hubs.get(key)
    if hub is None or hub.layer is not layer:
        hub = _hubs[key] = PushHub(layer, rejoin_every=rejoin_every, on_drop=on_drop)
    return hub


def _forget(hub: PushHub) -> None:
    for key, value in list(_hubs.items()):
        if value is hub:
            del _hubs[key]
