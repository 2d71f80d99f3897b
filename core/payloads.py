"""Pure decoding and validation of device payloads (SPEC §4): samples, status, JSON; no ORM here."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson

from core.errors import PayloadInvalid
from core.ids import METRIC_RE
from core.times import DEFAULT_MAX_SKEW, format_ts, parse_ts

MAX_STRING = 256


@dataclass(frozen=True, slots=True)
class Sample:
    """One validated sample: when, and its metrics; `assigned` when the gateway gave it its receive time.

    `ts_text` is `ts` as every store and frame writes it (core.times.format_ts), formatted once when
    the sample is made, so the hot path never formats a time twice.
    """

    ts: datetime
    data: dict[str, Any]
    assigned: bool = False
    ts_text: str = ""

    def __post_init__(self) -> None:
        if not self.ts_text:
            object.__setattr__(self, "ts_text", format_ts(self.ts))


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


def holds_nul(value: Any) -> bool:
    """Whether any string in a decoded JSON value (keys too) holds U+0000, which PostgreSQL refuses."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any("\x00" in k or holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(holds_nul(v) for v in value)
    return False


def storable_text(value: str) -> bool:
    """Whether every store and encoder takes this string: no NUL (PostgreSQL refuses it), no lone surrogate."""
    if "\x00" in value:
        return False
    if value.isascii():
        return True
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


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
    the service makes them unique per device (devices.services.telemetry.telemetry_ingest).
    """
    return samples_of(decode_json(payload, max_bytes=max_bytes), received_at=received_at, max_skew=max_skew)


def samples_of(doc: Any, *, received_at: datetime, max_skew: timedelta = DEFAULT_MAX_SKEW) -> list[Sample]:
    """The samples of a decoded telemetry document: one sample object, or a non-empty array of them."""
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
