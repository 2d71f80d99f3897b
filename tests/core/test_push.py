"""The push message: encoders match core.wire, frames stay under the cap, batches merge in order, buckets route."""

from datetime import UTC, datetime, timedelta, timezone

import orjson

from core.payloads import Sample
from core.times import format_ts
from core.wire import telemetry_fragment, telemetry_frames


def test_timestamps_are_fixed_width_utc_text_in_time_order():
    stamps = [datetime(999, 12, 31, 23, 59, 59, tzinfo=UTC), datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
              datetime(2026, 1, 2, 5, 4, 5, 1, tzinfo=timezone(timedelta(hours=2))),
              datetime(2026, 1, 2, 3, 4, 5, 678, tzinfo=UTC)]
    texts = [format_ts(ts) for ts in stamps]
    assert texts == ["0999-12-31T23:59:59.000000+00:00", "2026-01-02T03:04:05.000000+00:00",
                     "2026-01-02T03:04:05.000001+00:00", "2026-01-02T03:04:05.000678+00:00"]
    assert sorted(texts) == texts  # a four-digit year: the year 999 sorts first (strftime's %Y wrote "999")
    assert orjson.loads(telemetry_fragment("d1", format_ts(stamps[1]), {"ok": True}))["ts"] == texts[1]


def test_telemetry_frames_split_under_the_cap_and_keep_every_item():
    stamp = format_ts(datetime(2026, 1, 1, tzinfo=UTC))
    fragments = [telemetry_fragment(f"d{i}", stamp, {"v": "é" * 50}) for i in range(500)]
    frames = telemetry_frames(fragments, 4096)
    assert len(frames) > 1
    assert all(len(f.encode()) <= 4096 for f in frames)
    items = [item for f in frames for item in orjson.loads(f)["items"]]
    assert [i["device"] for i in items] == [f"d{i}" for i in range(500)]


def test_no_fragments_no_frames():
    assert telemetry_frames([], 65536) == []


def _batch(device_id: str, *values: int):
    from core.push import PushBatch

    push = PushBatch()
    for v in values:
        push.telemetry(device_id, Sample(ts=datetime(2026, 1, 1, 0, 0, v, tzinfo=UTC), data={"v": v}))
    return push


def _values(message: dict, device_id: str) -> list[int]:
    return [orjson.loads(f)["data"]["v"] for f in message["telemetry"].get(device_id, [])]


def test_merged_batches_keep_each_device_in_order_and_the_latest_status():
    first, later = _batch("d1", 1, 2), _batch("d1", 3)
    first.status("d1", True, datetime(2026, 1, 1, tzinfo=UTC))
    later.status("d1", False, datetime(2026, 1, 1, 0, 1, tzinfo=UTC))
    first.merge(later)
    [(_, message)] = first.messages()
    assert _values(message, "d1") == [1, 2, 3]
    assert orjson.loads(message["status"]["d1"])["online"] is False
    assert first.size == 5


def test_each_message_names_its_bucket_so_web_processes_route_without_decoding():
    from core.push import PushBatch, bucket_group, bucket_of

    push = PushBatch(buckets=4)
    for n in range(20):
        push.status(f"d{n}", True, datetime(2026, 1, 1, tzinfo=UTC))
    for group, message in push.messages():
        assert group == bucket_group(message["bucket"])
        assert {bucket_of(d, 4) for d in message["status"]} == {message["bucket"]}
    assert len(push.messages()) > 1
