"""Identifiers: the one device-id pattern (model validator, URLs, parsers) and metric names (SPEC §3, §4)."""

from __future__ import annotations

import hashlib
import re

# Never an MQTT wildcard or a `/`: a device id is also a topic level and an MQTT username.
DEVICE_ID_BODY = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
DEVICE_ID_PATTERN = rf"^{DEVICE_ID_BODY}$"
DEVICE_ID_RE = re.compile(DEVICE_ID_PATTERN)
METRIC_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def is_device_id(value: object) -> bool:
    """Whether `value` is a string that can be a device id."""
    return isinstance(value, str) and DEVICE_ID_RE.fullmatch(value) is not None


# A child's name, escaped: letters, digits, `_` and `-` stay; each other character (`.` too, the escape)
# becomes `.` and its UTF-8 bytes in hex (`Living Room` → `Living.20Room`).
_CHILD_KEEP = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_CHILD_HASHED = 12  # hex digits of SHA-256 kept when an id would be longer than the pattern allows


def child_device_id(gateway_id: str, child_name: str) -> str:
    """The device id of a gateway's child: `<gateway>.<escaped name>`, hashed to fit 64 characters (docs/profiles.md).

    The same gateway and name always give the same id, so a child is found again without a lookup.
    """
    escaped = "".join(ch if ch in _CHILD_KEEP else "".join(f".{b:02x}" for b in ch.encode("utf-8", "surrogatepass"))
                      for ch in child_name)
    full = f"{gateway_id}.{escaped}"
    if len(full) <= 64:
        return full
    digest = hashlib.sha256(full.encode("utf-8", "surrogatepass")).hexdigest()[:_CHILD_HASHED]
    return f"{full[:64 - _CHILD_HASHED - 1]}.{digest}"
