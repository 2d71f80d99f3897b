"""Dashboard frame decoding and encoding (pure)."""

from __future__ import annotations

from datetime import datetime, timezone

import orjson
import pytest

from core.errors import PayloadInvalid
from core.times import format_ts
from core.wire import decode_client_frame, snapshot_frames, telemetry_fragment, telemetry_frame


def test_subscribe_frame_accepts_list_or_star():
    assert decode_client_frame('{"type": "subscribe", "devices": ["a", "b"]}')["devices"] == ["a", "b"]
    assert decode_client_frame('{"type": "subscribe", "devices": "*"}')["devices"] == "*"


@pytest.mark.parametrize("text", [None, "not json", "[]", '{"type": "dance"}', '{"type": "subscribe", "devices": 3}',
                                  '{"type": "subscribe", "devices": ["a/#"]}'])
def test_bad_frames_are_rejected(text):
    with pytest.raises(PayloadInvalid):
        decode_client_frame(text)


def test_timestamps_sort_as_text():
    early = format_ts(datetime(2026, 1, 1, 0, 0, 0, 5, tzinfo=timezone.utc))
    late = format_ts(datetime(2026, 1, 1, 0, 0, 1, tzinfo=timezone.utc))
    assert early < late and late.endswith("+00:00")


def test_pre_encoded_fragments_join_into_a_valid_frame():
    ts = datetime(2026, 1, 1, tzinfo=timezone.utc)
    fragments = [telemetry_fragment("a", format_ts(ts), {"x": 1}), telemetry_fragment("b", format_ts(ts), {"y": 2})]
    frame = orjson.loads(telemetry_frame(fragments))
    assert frame["type"] == "telemetry"
    assert [i["device"] for i in frame["items"]] == ["a", "b"]


def test_a_large_snapshot_is_split_into_frames_under_the_cap():
    devices = [{"id": f"d{i:04d}", "name": "x" * 100, "latest": {"t": i}} for i in range(500)]
    frames = snapshot_frames(devices, 4096)
    assert len(frames) > 1 and all(len(f.encode()) <= 4096 for f in frames)
    parsed = [orjson.loads(f) for f in frames]
    assert [p.get("more", False) for p in parsed] == [True] * (len(frames) - 1) + [False]
    assert [d["id"] for p in parsed for d in p["devices"]] == [d["id"] for d in devices]


def test_an_empty_snapshot_is_one_frame():
    assert [orjson.loads(f) for f in snapshot_frames([], 4096)] == [{"type": "snapshot", "devices": []}]
