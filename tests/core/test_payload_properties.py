"""Properties of the device payload and timestamp parsers: any input parses into the window, or is PayloadInvalid."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import orjson
from hypothesis import example, given, settings
from hypothesis import strategies as st

from core.errors import PayloadInvalid
from core.payloads import parse_samples
from core.times import EPOCH, format_ts, parse_ts

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
SKEW = timedelta(days=1)
TS_REASONS = {"bad_sample", "ts_too_old", "ts_in_future"}

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=300)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=70), inner, max_size=4), max_leaves=12)
metric_names = st.from_regex(r"\A[A-Za-z0-9_.:-]{1,64}\Z")
timestamps = (st.integers(min_value=-10**20, max_value=10**20) | st.floats(allow_nan=True, allow_infinity=True)
              | st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                             timezones=st.timezones()).map(lambda d: d.isoformat())
              | st.text(max_size=70) | st.booleans() | st.none())
samples = st.dictionaries(metric_names | st.just("ts"), scalars | timestamps, min_size=1, max_size=5)
payloads = (st.binary(max_size=200)
            | json_values.map(lambda doc: json.dumps(doc).encode())
            | (samples | st.lists(samples, max_size=5)).map(lambda doc: json.dumps(doc).encode()))


def assert_in_window_and_stable(ts: datetime) -> None:
    assert ts.tzinfo is not None and EPOCH <= ts <= NOW + SKEW
    assert parse_ts(format_ts(ts), now=NOW, max_skew=SKEW) == ts
    assert format_ts(parse_ts(format_ts(ts))) == format_ts(ts)


@settings(max_examples=600, deadline=None)
@given(payloads)
@example(b'{"ts": "0001-01-01T00:00:00+14:00", "x": 1}')
@example(b'{"ts": "9999-12-31T23:59:59-14:00", "x": 1}')
@example(b'{"ts": 1708179956.30, "x": "\\u0000"}')
def test_any_payload_parses_into_the_window_or_is_rejected(payload):
    try:
        parsed = parse_samples(payload, received_at=NOW, max_bytes=4096, max_skew=SKEW)
    except PayloadInvalid:
        return
    assert parsed
    for sample in parsed:
        assert_in_window_and_stable(sample.ts)
        assert sample.data and "ts" not in sample.data
        assert all("\x00" not in v for v in sample.data.values() if isinstance(v, str))
        orjson.dumps(sample.data)  # storable as it is


@settings(max_examples=1000, deadline=None)
@given(timestamps)
@example(10_000_000_000 - 1)
@example(10_000_000_000)
@example(1708179956.30)
def test_any_ts_parses_into_the_window_or_is_rejected_with_a_ts_reason(value):
    try:
        ts = parse_ts(value, now=NOW, max_skew=SKEW)
    except PayloadInvalid as exc:
        assert exc.reason in TS_REASONS
        return
    assert_in_window_and_stable(ts)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        # The documented rule: below 10^10 epoch seconds, from it on epoch milliseconds.
        assert ts == EPOCH + (timedelta(seconds=value) if value < 10**10 else timedelta(milliseconds=value))


@settings(max_examples=500, deadline=None)
@given(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)))
def test_format_ts_is_fixed_width_and_sorts_in_time_order(naive):
    ts = naive.replace(tzinfo=UTC)
    text = format_ts(ts)
    assert len(text) == 32 and text[4] == "-" and datetime.fromisoformat(text) == ts
    later = format_ts(ts + timedelta(microseconds=1)) if ts.year < 9999 or ts.month < 12 else None
    assert later is None or later > text
