"""A device's credentials as HTTP and WebSocket devices show them: `Authorization: Basic` or `Bearer` (SPEC §8)."""

from __future__ import annotations

import base64
import binascii


def device_credentials(authorization: str | None, *, device_id: str | None = None) -> tuple[str, str] | None:
    """(device id, secret) from `Basic base64(id:secret)`, or from `Bearer <secret>` when the URL names the device.

    With `device_id` (the one the URL names), a Basic user must be that device. None when the header is
    missing, malformed or of another scheme.
    """
    scheme, _, value = (authorization or "").partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer":
        return (device_id, value) if device_id is not None and value else None
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, secret = base64.b64decode(value, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    if not sep or not user or (device_id is not None and user != device_id):
        return None
    return user, secret
