"""Pure decoding and validation of device topics and payloads (SPEC §4); no ORM here."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from devices.exceptions import PayloadInvalid

DEVICE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
METRIC_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
MAX_STRING = 256
# Epoch milliseconds accepted for `ts`: 1970 up to the year 2100.
MAX_EPOCH_MS = 4_102_444_800_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

TELEMETRY = "telemetry"
STATUS = "status"
COMMAND_RESPONSE = "commands/response"
COMMANDS = "commands"  # gateway → device: the bridge sees its own publishes and skips them
INBOUND_KINDS = (TELEMETRY, STATUS, COMMAND_RESPONSE, COMMANDS)


@dataclass(frozen=True, slots=True)
class Sample:
    """One validated sample: when, and its metrics."""

    ts: datetime
    data: dict[str, Any]


def parse_topic(topic: str) -> tuple[str, str]:
    """Split `devices/{id}/{kind}` into (device id, kind); rejects any other topic."""
    parts = topic.split("/", 2)
    if len(parts) != 3 or parts[0] != "devices" or parts[2] not in INBOUND_KINDS:
        raise PayloadInvalid("bad_topic", f"topic {topic[:200]!r} is not a device topic")
    if not DEVICE_ID_RE.match(parts[1]):
        raise PayloadInvalid("bad_topic", f"device id {parts[1][:80]!r} is not valid")
    return parts[1], parts[2]


def decode_json(payload: bytes, *, max_bytes: int) -> Any:
    """Decode a JSON payload, classifying why it is rejected when it is."""
    if len(payload) > max_bytes:
        raise PayloadInvalid("too_large", f"payload of {len(payload)} bytes is over the {max_bytes}-byte limit")
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError:
            raise PayloadInvalid("not_utf8", "payload is not valid UTF-8") from None
        raise PayloadInvalid("not_json", "payload is not valid JSON") from None


def parse_ts(value: Any) -> datetime:
    """An ISO-8601 time with an offset, or epoch milliseconds, as an aware datetime."""
    if isinstance(value, bool):
        raise PayloadInvalid("bad_sample", "ts must be ISO-8601 with an offset or epoch milliseconds")
    if isinstance(value, (int, float)):
        if not (0 <= value <= MAX_EPOCH_MS) or (isinstance(value, float) and not math.isfinite(value)):
            raise PayloadInvalid("bad_sample", f"ts {value!r} is out of range for epoch milliseconds")
        return EPOCH + timedelta(milliseconds=value)
    if isinstance(value, str) and len(value) <= 64:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            return parsed.astimezone(UTC)
    raise PayloadInvalid("bad_sample", "ts must be ISO-8601 with an offset or epoch milliseconds")


def _check_metric(name: str, value: Any) -> None:
    if not METRIC_RE.match(name):
        raise PayloadInvalid("bad_sample", f"metric name {name[:80]!r} is not valid")
    if value is None or isinstance(value, (bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise PayloadInvalid("bad_sample", f"metric {name!r} is not a finite number")
        return
    if isinstance(value, str):
        if len(value) > MAX_STRING:
            raise PayloadInvalid("bad_sample", f"metric {name!r} is a string over {MAX_STRING} characters")
        return
    raise PayloadInvalid("bad_sample", f"metric {name!r} must be a number, boolean, short string or null")


def parse_sample(obj: Any, *, default_ts: datetime) -> Sample:
    """Validate one sample object."""
    if not isinstance(obj, dict):
        raise PayloadInvalid("bad_sample", "a sample must be a JSON object")
    data = {k: v for k, v in obj.items() if k != "ts"}
    if not data:
        raise PayloadInvalid("bad_sample", "a sample needs at least one metric")
    for name, value in data.items():
        _check_metric(name, value)
    ts = parse_ts(obj["ts"]) if "ts" in obj else default_ts
    return Sample(ts=ts, data=data)


def parse_samples(payload: bytes, *, received_at: datetime, max_bytes: int) -> list[Sample]:
    """Decode a telemetry payload: one sample or a non-empty array of them.

    Samples without `ts` get the receive time, plus one microsecond per
    position in the array, so that an array of them keeps every sample.
    """
    doc = decode_json(payload, max_bytes=max_bytes)
    items = doc if isinstance(doc, list) else [doc]
    if not items:
        raise PayloadInvalid("bad_sample", "an array of samples must not be empty")
    return [parse_sample(item, default_ts=received_at + timedelta(microseconds=i)) for i, item in enumerate(items)]


def parse_status(payload: bytes) -> bool:
    """`online` → True, `offline` → False; anything else is rejected."""
    text = payload.strip()
    if text == b"online":
        return True
    if text == b"offline":
        return False
    raise PayloadInvalid("bad_status", "status must be 'online' or 'offline'")
