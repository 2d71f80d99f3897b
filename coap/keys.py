"""Device credentials as the CoAP edge checks them: each (device, secret) answer cached for a few seconds.

A CoAP device sends a request per reading; checking its secret against the database each
time would be one query per sample on the process's one database thread. A verdict is
kept `ttl` seconds (a disabled device or a re-issued secret takes effect within it), for at
most `max_entries` pairs (then the cache starts over, as core.ratelimit.BucketMap does).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable

from devices.dbthread import in_db_thread
from devices.selectors import device_secret_ok

Check = Callable[[str, str], Awaitable[bool]]


class DeviceKeys:
    """Whether a secret opens a device, asked of the database at most once per `ttl` per (device, secret)."""

    def __init__(self, *, check: Check | None = None, ttl: float = 10.0, max_entries: int = 50_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._check = check or in_db_thread(device_secret_ok)
        self._ttl = ttl
        self._max = max_entries
        self._clock = clock
        self._verdicts: dict[tuple[str, bytes], tuple[bool, float]] = {}

    async def opens(self, device_id: str, secret: str) -> bool:
        """True when the device exists, is enabled, and the secret is its own."""
        # The secret's digest is the key, so the cache holds no secret in clear.
        key = (device_id, hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest())
        now = self._clock()
        known = self._verdicts.get(key)
        if known is not None and known[1] > now:
            return known[0]
        ok = bool(await self._check(device_id, secret))
        if len(self._verdicts) >= self._max:
            self._verdicts.clear()
        self._verdicts[key] = (ok, now + self._ttl)
        return ok
