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
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# A number `ts` below this is epoch seconds (up to 2286-11-20), from it on epoch milliseconds (from
# 1970-04-26): `time()` on a microcontroller, Shelly and Telegraf send seconds, JavaScript milliseconds.
EPOCH_SECONDS_BELOW = 10_000_000_000
# How far into the future a device's clock may run before its samples are refused (IOTGW_MAX_CLOCK_SKEW).
DEFAULT_MAX_SKEW = timedelta(days=1)
MAX_TS_TEXT = 64

TELEMETRY = "telemetry"
STATUS = "status"
COMMAND_RESPONSE = "commands/response"
COMMANDS = "commands"  # gateway → device: the bridge sees its own publishes and skips them
INBOUND_KINDS = (TELEMETRY, STATUS, COMMAND_RESPONSE, COMMANDS)


@dataclass(frozen=True, slots=True)
class Sample:
    """One validated sample: when, and its metrics; `assigned` when the gateway gave it its receive time."""

    ts: datetime
    data: dict[str, Any]
    assigned: bool = False


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


def parse_ts(value: Any, *, now: datetime | None = None, max_skew: timedelta = DEFAULT_MAX_SKEW) -> datetime:
    """An ISO-8601 time with an offset, or epoch seconds or milliseconds (EPOCH_SECONDS_BELOW), in UTC.

    Never before 1970 (`ts_too_old`); with `now`, never later than `now + max_skew` (`ts_in_future`).
    """
    ts = _to_datetime(value)
    if ts < EPOCH:
        raise PayloadInvalid("ts_too_old", f"ts {_shown(value)} is before 1970-01-01")
    if now is not None and ts > now + max_skew:
        raise PayloadInvalid("ts_in_future", f"ts {_shown(value)} is more than {max_skew} ahead of the gateway's clock")
    return ts


def _shown(value: Any) -> str:
    return repr(value)[:80]


def _to_datetime(value: Any) -> datetime:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value != value or value in (math.inf, -math.inf):
            raise PayloadInvalid("bad_sample", f"ts {_shown(value)} is not a finite number")
        if value < 0:
            raise PayloadInvalid("ts_too_old", f"ts {_shown(value)} is before 1970-01-01")
        try:
            if value < EPOCH_SECONDS_BELOW:
                return EPOCH + timedelta(seconds=value)
            return EPOCH + timedelta(milliseconds=value)
        except OverflowError:  # beyond the year 9999
            raise PayloadInvalid("ts_in_future", f"ts {_shown(value)} is beyond the year 9999") from None
    # Printable ASCII only: CPython's fromisoformat reads past a NUL ("…00\x00+00:00" parses).
    if isinstance(value, str) and len(value) <= MAX_TS_TEXT and value.isascii() and value.isprintable():
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            try:
                return parsed.astimezone(UTC)
            except OverflowError:  # e.g. 0001-01-01T00:00:00+14:00: its UTC time is before the year 1
                reason = "ts_too_old" if parsed.year < 1970 else "ts_in_future"
                raise PayloadInvalid(reason, f"ts {_shown(value)} is out of range in UTC") from None
    raise PayloadInvalid("bad_sample", "ts must be ISO-8601 with an offset, or epoch seconds or milliseconds")


def holds_nul(value: Any) -> bool:
    """Whether any string in a decoded JSON value (keys too) holds U+0000, which PostgreSQL refuses."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any("\x00" in k or holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(holds_nul(v) for v in value)
    return False


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
        if "\x00" in value:  # PostgreSQL refuses it in text and jsonb; refused on every database alike
            raise PayloadInvalid("bad_sample", f"metric {name!r} holds a NUL character (\\u0000)")
        return
    raise PayloadInvalid("bad_sample", f"metric {name!r} must be a number, boolean, short string or null")


def parse_sample(obj: Any, *, default_ts: datetime, now: datetime | None = None,
                 max_skew: timedelta = DEFAULT_MAX_SKEW) -> Sample:
    """Validate one sample object; without `ts` it gets `default_ts` and is marked `assigned`."""
    if not isinstance(obj, dict):
        raise PayloadInvalid("bad_sample", "a sample must be a JSON object")
    data = {k: v for k, v in obj.items() if k != "ts"}
    if not data:
        raise PayloadInvalid("bad_sample", "a sample needs at least one metric")
    for name, value in data.items():
        _check_metric(name, value)
    if "ts" not in obj:
        return Sample(ts=default_ts, data=data, assigned=True)
    return Sample(ts=parse_ts(obj["ts"], now=now, max_skew=max_skew), data=data)


def parse_samples(payload: bytes, *, received_at: datetime, max_bytes: int,
                  max_skew: timedelta = DEFAULT_MAX_SKEW) -> list[Sample]:
    """Decode a telemetry payload: one sample or a non-empty array of them.

    Samples without `ts` get the receive time, one microsecond apart within the array;
    the service makes them unique per device (devices.services.telemetry_ingest).
    """
    doc = decode_json(payload, max_bytes=max_bytes)
    items = doc if isinstance(doc, list) else [doc]
    if not items:
        raise PayloadInvalid("bad_sample", "an array of samples must not be empty")
    return [parse_sample(item, default_ts=received_at + timedelta(microseconds=i), now=received_at, max_skew=max_skew)
            for i, item in enumerate(items)]


def parse_status(payload: bytes) -> bool:
    """`online` → True, `offline` → False; anything else is rejected."""
    text = payload.strip()
    if text == b"online":
        return True
    if text == b"offline":
        return False
    raise PayloadInvalid("bad_status", "status must be 'online' or 'offline'")
