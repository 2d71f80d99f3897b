"""Pure payload rules of SPEC §4."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from devices.exceptions import PayloadInvalid
from protocols.payloads import parse_samples, parse_status, parse_topic, parse_ts

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
        (b'{"ts": -5, "x": 1}', "bad_sample"),
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
