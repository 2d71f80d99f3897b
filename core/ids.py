"""Identifiers: the one device-id pattern (model validator, URLs, parsers) and metric names (SPEC §3, §4)."""

from __future__ import annotations

import re

# Never an MQTT wildcard or a `/`: a device id is also a topic level and an MQTT username.
DEVICE_ID_BODY = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
DEVICE_ID_PATTERN = rf"^{DEVICE_ID_BODY}$"
DEVICE_ID_RE = re.compile(DEVICE_ID_PATTERN)
METRIC_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def is_device_id(value: object) -> bool:
    """Whether `value` is a string that can be a device id."""
    return isinstance(value, str) and DEVICE_ID_RE.fullmatch(value) is not None
