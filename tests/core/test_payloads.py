"""Pure payload rules of SPEC §4."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import orjson
import pytest

from core.errors import PayloadInvalid
from core.payloads import parse_samples, parse_status
from core.times import format_ts, parse_ts
from core.topics import parse_topic

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)


def parse(payload: bytes, max_bytes: int = 1024):
    return parse_samples(payload, received_at=NOW, max_bytes=max_bytes)


def reason(payload: bytes, max_bytes: int = 1024) -> str:
    with pytest.raises(PayloadInvalid) as exc:
        parse(payload, max_bytes)
    return exc.value.reason


def test_single_sample_without_ts_gets_receive_time():
    [sample] = parse(b'{"temp": 21.5, "ok": true, "mode": "eco", "err": null}')
    assert sample.ts == NOW
    assert sample.data == {"temp": 21.5, "ok": True, "mode": "eco", "err": None}


def test_array_without_ts_keeps_every_sample_distinct_in_time():
    samples = parse(b'[{"a": 1}, {"a": 2}, {"a": 3}]')
    assert [s.data["a"] for s in samples] == [1, 2, 3]
    assert len({s.ts for s in samples}) == 3


def test_iso_ts_with_offset_is_normalised_to_utc():
    [sample] = parse(b'{"ts": "2026-01-01T01:00:00+01:00", "x": 1}')
    assert sample.ts == datetime(2026, 1, 1, tzinfo=timezone.utc)


def test_epoch_millisecond_ts():
    assert parse_ts(1767225600123) == datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(milliseconds=123)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b'{"x": "' + b"a" * 2000 + b'"}', "too_large"),
        (b'{"x": "\xc3\x28"}', "not_utf8"),
        (b"{nope", "not_json"),
        (b"42", "bad_sample"),
        (b"[]", "bad_sample"),
        (b'{"ts": 1}', "bad_sample"),
        (b'{"a b": 1}', "bad_sample"),
        (b'{"' + b"n" * 65 + b'": 1}', "bad_sample"),
        (b'{"x": [1]}', "bad_sample"),
        (b'{"x": "' + b"s" * 257 + b'"}', "bad_sample"),
        (b'{"ts": "2026-01-01T00:00:00", "x": 1}', "bad_sample"),
        (b'{"ts": true, "x": 1}', "bad_sample"),
        (b'{"ts": -5, "x": 1}', "ts_too_old"),
        (b'{"ts": "1969-12-31T23:59:59+00:00", "x": 1}', "ts_too_old"),
        (b'{"ts": "0500-01-01T00:00:00+00:00", "x": 1}', "ts_too_old"),
        (b'{"ts": "0001-01-01T00:00:00+14:00", "x": 1}', "ts_too_old"),
        (b'{"ts": "9999-12-31T23:59:59-14:00", "x": 1}', "ts_in_future"),
        (b'{"ts": "9999-01-01T00:00:00+00:00", "x": 1}', "ts_in_future"),
        (b'{"ts": 253402300800000, "x": 1}', "ts_in_future"),
        (b'{"ts": 1e300, "x": 1}', "ts_in_future"),
        (b'{"ts": "2026-01-01T00:00:00\\u0000+00:00", "x": 1}', "bad_sample"),
        (b'{"x": "nul\\u0000inside"}', "bad_sample"),
        (b'[{"x": 1}, {"y": "\\u0000"}]', "bad_sample"),
        (b'[{"x": 1}, {"y": {}}]', "bad_sample"),
    ],
)
def test_bad_payloads_are_rejected_with_their_reason(payload, expected):
    assert reason(payload, max_bytes=1024) == expected


def test_string_of_exactly_256_characters_is_accepted():
    [sample] = parse(b'{"x": "' + b"s" * 256 + b'"}')
    assert len(sample.data["x"]) == 256


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("devices/pump-1/telemetry", ("pump-1", "telemetry")),
        ("devices/pump-1/status", ("pump-1", "status")),
        ("devices/pump-1/commands/response", ("pump-1", "commands/response")),
    ],
)
def test_device_topics(topic, expected):
    assert parse_topic(topic) == expected


@pytest.mark.parametrize("topic", ["devices/pump-1/config", "other/pump-1/telemetry", "devices/-bad/telemetry",
                                   "devices/pump-1", "devices/a/b/telemetry"])
def test_topics_outside_the_table_are_rejected(topic):
    with pytest.raises(PayloadInvalid) as exc:
        parse_topic(topic)
    assert exc.value.reason == "bad_topic"


def test_status_payloads():
    assert parse_status(b"online") is True
    assert parse_status(b"offline") is False
    with pytest.raises(PayloadInvalid):
        parse_status(b"ONLINE!")


def test_samples_without_ts_are_marked_assigned_and_those_with_ts_are_not():
    plain, stamped = parse(b'[{"a": 1}, {"ts": 1767225600000, "a": 2}]')
    assert plain.assigned and not stamped.assigned


@pytest.mark.parametrize(("value", "expected"), [
    (1708179956, datetime(2024, 2, 17, 14, 25, 56, tzinfo=timezone.utc)),
    (1708179956.30, datetime(2024, 2, 17, 14, 25, 56, 300000, tzinfo=timezone.utc)),
    (1708179956300, datetime(2024, 2, 17, 14, 25, 56, 300000, tzinfo=timezone.utc)),
    (0, datetime(1970, 1, 1, tzinfo=timezone.utc)),
])
def test_epoch_seconds_and_milliseconds_are_told_apart_by_magnitude(value, expected):
    assert parse_ts(value) == expected


def test_epoch_seconds_never_land_in_1970():
    [sample] = parse(b'{"ts": 1764000000, "x": 1}')  # seconds, as time() on a microcontroller sends
    assert sample.ts.year == 2025


def test_a_clock_ahead_by_more_than_the_allowed_skew_is_refused_with_its_own_reason():
    skew = timedelta(hours=1)
    ok = NOW + skew
    assert parse_samples(b'{"ts": "%s", "x": 1}' % ok.isoformat().encode(), received_at=NOW, max_bytes=1024,
                         max_skew=skew)[0].ts == ok
    with pytest.raises(PayloadInvalid) as exc:
        parse_samples(b'{"ts": %d, "x": 1}' % ((ok.timestamp() + 1) * 1000), received_at=NOW, max_bytes=1024,
                      max_skew=skew)
    assert exc.value.reason == "ts_in_future"


@pytest.mark.parametrize("ts", [datetime(500, 1, 1, tzinfo=timezone.utc), datetime(1, 1, 1, tzinfo=timezone.utc),
                                datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc)])
def test_format_ts_always_writes_a_four_digit_year(ts):
    text = format_ts(ts)
    assert len(text) == len("2026-01-01T00:00:00.000000+00:00") and text[4] == "-"
    assert datetime.fromisoformat(text) == ts


def test_a_sample_formats_its_time_once_and_the_push_reuses_that_text(monkeypatch):
    import core.payloads
    import core.wire
    from core.push import PushBatch

    calls = []

    def counting(ts):
        calls.append(ts)
        return format_ts(ts)

    monkeypatch.setattr(core.payloads, "format_ts", counting)
    monkeypatch.setattr(core.wire, "format_ts", counting)
    samples = parse_samples(b'[{"ts": 1767225600000, "v": 1}, {"v": 2}, {"v": 3}]', received_at=NOW, max_bytes=1000)
    push = PushBatch()
    for sample in samples:
        push.telemetry("d1", sample)
    assert len(calls) == 3
    items = [orjson.loads(f) for f in push.messages()[0][1]["telemetry"]["d1"]]
    assert [i["ts"] for i in items] == [s.ts_text for s in samples] == [format_ts(s.ts) for s in samples]
