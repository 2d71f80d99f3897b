"""A token bucket for per-connection and per-device rate limits; pure, no ORM."""

from __future__ import annotations

import time


class TokenBucket:
    """`rate` tokens a second, holding at most `burst`; each take() spends one."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, *, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = time.monotonic()

    def take(self) -> bool:
        """Spend a token if one is there; False when the bucket is empty."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False

    def wait(self) -> float:
        """Seconds until take() can succeed (0 when it can now)."""
        missing = 1 - min(self.burst, self.tokens + (time.monotonic() - self.stamp) * self.rate)
        return max(0.0, missing / self.rate) if self.rate > 0 else float("inf")


class BucketMap:
    """Buckets by key (e.g. device id), bounded so that many keys cannot exhaust memory."""

    def __init__(self, *, rate: float, burst: float, max_keys: int = 10_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: dict[str, TokenBucket] = {}

    def take(self, key: str) -> bool:
        """Spend a token of `key`'s bucket."""
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._buckets.clear()
            bucket = self._buckets[key] = TokenBucket(rate=self.rate, burst=self.burst)
        return bucket.take()

    def wait(self, key: str) -> float:
        """Seconds until `key` may take again."""
        bucket = self._buckets.get(key)
        return 0.0 if bucket is None else bucket.wait()
