"""The webhook signature: HMAC-SHA256 of `<timestamp>.<raw body>` with the endpoint's secret (docs/notifications.md)."""

from __future__ import annotations

import hashlib
import hmac
import secrets

SIGNATURE_HEADER = "X-Iotgw-Signature"
TIMESTAMP_HEADER = "X-Iotgw-Timestamp"
DELIVERY_HEADER = "X-Iotgw-Delivery"
EVENT_HEADER = "X-Iotgw-Event"


def new_secret() -> str:
    """A webhook secret: 32 random bytes, URL-safe."""
    return "whsec_" + secrets.token_urlsafe(32)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The header value: `sha256=` and the hex HMAC of the timestamp, a dot and the raw body."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, *, timestamp: str, body: bytes, header: str, now: float, tolerance: float = 300) -> bool:
    """What a receiver checks: a fresh timestamp (replays are refused) and a signature that matches."""
    try:
        ts = int(timestamp)
    except ValueError:
        return False
    if abs(now - ts) > tolerance:
        return False
    return hmac.compare_digest(signature(secret, ts, body), header)
