"""Sample times: the one window a `ts` must lie in (SPEC §4), and the one text form they are written in."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

from core.errors import PayloadInvalid

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# A number `ts` below this is epoch seconds (up to 2286-11-20), from it on epoch milliseconds (from
# 1970-04-26): `time()` on a microcontroller, Shelly and Telegraf send seconds, JavaScript milliseconds.
EPOCH_SECONDS_BELOW = 10_000_000_000
# How far into the future a device's clock may run before its samples are refused (IOTGW_MAX_CLOCK_SKEW).
DEFAULT_MAX_SKEW = timedelta(days=1)
MAX_TS_TEXT = 64


def format_ts(ts: datetime) -> str:
    """Fixed-width UTC ISO-8601 with microseconds and a four-digit year: sorts as text in time order."""
    if ts.tzinfo is not UTC:
        ts = ts.astimezone(UTC)
    # isoformat pads the year to four digits (strftime's %Y does not below 1000 on Linux).
    return ts.isoformat(timespec="microseconds")


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
