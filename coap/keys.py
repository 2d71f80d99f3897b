"""Device credentials as the CoAP edge checks them: stored secret hashes, fetched in batches, kept a few seconds.

A CoAP device sends a request per reading; asking the database about its secret each time
would be a query per sample on the process's one database thread, behind the commits. So a
device's stored hash is kept `ttl` seconds (a disabled device or a re-issued secret takes
effect within it), for at most `max_entries` devices (then the cache starts over, as
core.ratelimit.BucketMap does), and the devices not known yet are looked up together: every
request that arrives while one lookup runs waits for the next one, a single query for all
of them (200 devices starting at once cost one or two queries, not 200).
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Awaitable, Callable

from devices.secrets import secret_hash

Fetch = Callable[[list[str]], Awaitable[dict[str, str]]]

# Devices asked about in one query at most.
LOOKUP_BATCH = 500


def _registry_fetch() -> Fetch:
    from devices.dbthread import in_db_thread
    from devices.selectors import device_secret_hashes

    return in_db_thread(lambda ids: device_secret_hashes(ids))


class DeviceKeys:
    """The stored secret hashes of enabled devices, as the CoAP edge needs them: now, and without a query each."""

    def __init__(self, *, fetch: Fetch | None = None, ttl: float = 10.0, max_entries: int = 50_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._fetch = fetch or _registry_fetch()
        self._ttl = ttl
        self._max = max_entries
        self._clock = clock
        self._hashes: dict[str, tuple[str | None, float]] = {}
        self._pending: dict[str, asyncio.Future[str | None]] = {}
        self._lookup: asyncio.Task[None] | None = None

    async def opens(self, device_id: str, secret: str) -> bool:
        """True when the device exists, is enabled, and the secret is its own."""
        stored = await self.stored_hash(device_id)
        return stored is not None and hmac.compare_digest(stored, secret_hash(secret))

    async def stored_hash(self, device_id: str) -> str | None:
        """The device's stored secret hash (None: no such enabled device); DatabaseError while it is away."""
        known = self._hashes.get(device_id)
        if known is not None and known[1] > self._clock():
            return known[0]
        waiting = self._pending.get(device_id)
        if waiting is None:
            waiting = self._pending[device_id] = asyncio.get_running_loop().create_future()
            if self._lookup is None or self._lookup.done():
                self._lookup = asyncio.ensure_future(self._look_up())
        return await asyncio.shield(waiting)

    async def _look_up(self) -> None:
        """Ask for every device waiting, in batches, until none waits."""
        await asyncio.sleep(0)  # the other requests of the same read join this lookup
        while self._pending:
            batch = dict(list(self._pending.items())[:LOOKUP_BATCH])
            for device_id in batch:
                del self._pending[device_id]
            try:
                found = await self._fetch(list(batch))
            except Exception as exc:  # the database is away: these requests are answered 5.03, nothing cached
                for waiting in batch.values():
                    if not waiting.done():
                        waiting.set_exception(exc)
                continue
            if len(self._hashes) + len(batch) > self._max:
                self._hashes.clear()
            until = self._clock() + self._ttl
            for device_id, waiting in batch.items():
                stored = found.get(device_id)
                self._hashes[device_id] = (stored, until)
                if not waiting.done():
                    waiting.set_result(stored)
