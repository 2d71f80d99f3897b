"""The bridge's hot-path encoders give exactly what protocols.wire gives, and frames stay under the cap."""

from datetime import UTC, datetime, timedelta, timezone

import orjson

from bridge.push import fragment, telemetry_frames
from protocols.wire import telemetry_fragment


def test_fragment_matches_wire_encoding():
    for ts in (datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), datetime(2026, 1, 2, 3, 4, 5, 678, tzinfo=UTC),
               datetime(2026, 1, 2, 5, 4, 5, tzinfo=timezone(timedelta(hours=2)))):
        assert fragment("d1", ts, {"t": 1.5, "ok": True}) == telemetry_fragment("d1", ts, {"t": 1.5, "ok": True})


def test_telemetry_frames_split_under_the_cap_and_keep_every_item():
    fragments = [telemetry_fragment(f"d{i}", datetime(2026, 1, 1, tzinfo=UTC), {"v": "é" * 50}) for i in range(500)]
    frames = telemetry_frames(fragments, 4096)
    assert len(frames) > 1
    assert all(len(f.encode()) <= 4096 for f in frames)
    items = [item for f in frames for item in orjson.loads(f)["items"]]
    assert [i["device"] for i in items] == [f"d{i}" for i in range(500)]


def test_no_fragments_no_frames():
    assert telemetry_frames([], 65536) == []
