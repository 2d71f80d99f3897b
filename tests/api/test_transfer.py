"""Telemetry export and import over the API and manage.py: streamed, tenant-bound, idempotent, flat in memory."""

from __future__ import annotations

import io
import json
import tracemalloc
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client

from core.transfer import encode, read_rows
from devices.models import Telemetry
from devices.selectors import telemetry_samples
from devices.services.devices import device_register
from devices.services.telemetry_import import telemetry_import
from devices.services.tokens import token_create

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def store(device_id: str, n: int, *, start: datetime = T0, step: float = 10.0) -> None:
    rows = (f'{{"device":"{device_id}","ts":"{(start + timedelta(seconds=i * step)).isoformat()}",'
            f'"data":{{"t":{i / 4},"state":"{"on" if i % 2 else "off"}"}}}}' for i in range(n))
    summary = telemetry_import(rows=read_rows(io.BytesIO("\n".join(rows).encode())))
    assert summary.imported == n, summary


@pytest.fixture
def alice():
    users = get_user_model().objects
    alice, bob = users.create_user("alice"), users.create_user("bob")
    device_register(device_id="a1", owner=alice)
    device_register(device_id="a2", owner=alice)
    device_register(device_id="b1", owner=bob)
    for device_id in ("a1", "a2", "b1"):
        store(device_id, 30)
    return token_create(user=alice)


def get(path: str, token: str | None):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    return Client().get(path, **headers)


def body(reply) -> bytes:
    return b"".join(reply) if reply.streaming else reply.content  # sync: Django gathers the async stream


def post(path: str, token: str, data: bytes, content_type: str = "text/csv"):
    return Client().post(path, data=data, content_type=content_type, HTTP_AUTHORIZATION=f"Bearer {token}")


def test_export_streams_only_the_devices_the_caller_may_see(alice):
    reply = get("/api/telemetry/export?format=ndjson", alice)
    assert reply.status_code == 200 and reply["Content-Type"] == "application/x-ndjson"
    lines = [json.loads(line) for line in body(reply).splitlines()]
    assert {line["device"] for line in lines} == {"a1", "a2"} and len(lines) == 60
    assert lines[0] == {"device": "a1", "ts": "2026-01-01T00:00:00.000000+00:00", "data": {"t": 0.0, "state": "off"}}


def test_exporting_a_device_of_someone_else_is_as_absent_as_a_missing_one(alice):
    for device in ("b1", "nope"):
        reply = get(f"/api/telemetry/export?devices=a1,{device}", alice)
        assert reply.status_code == 404 and reply.json()["error"]["code"] == "unknown_device"
    assert get("/api/telemetry/export", None).status_code == 401


def test_export_filters_by_metric_and_half_open_time_range(alice):
    since, until = T0 + timedelta(seconds=100), T0 + timedelta(seconds=200)
    reply = get(f"/api/telemetry/export?devices=a2&metrics=t&since={since.isoformat().replace('+', '%2B')}"
                f"&until={int(until.timestamp() * 1000)}", alice)
    text = body(reply).decode()
    assert reply["Content-Type"].startswith("text/csv")
    assert text.splitlines() == ["device,ts,metric,value"] + [
        f"a2,{(T0 + timedelta(seconds=s)).isoformat(timespec='microseconds')},t,{s / 40}" for s in range(100, 200, 10)]


def test_bad_export_parameters_are_400(alice):
    for query in ("format=xml", "metrics=no%20spaces", "devices=bad/id", "since=yesterday"):
        reply = get(f"/api/telemetry/export?{query}", alice)
        assert reply.status_code == 400 and reply.json()["error"]["code"] == "bad_request", query


def test_an_export_imported_into_an_empty_history_restores_it_exactly(alice):
    for fmt in ("csv", "ndjson"):
        before = sorted(Telemetry.objects.values_list("device_id", "ts", "data"))
        exported = body(get(f"/api/telemetry/export?format={fmt}", alice))
        Telemetry.objects.filter(device_id__in=["a1", "a2"]).delete()
        reply = post("/api/telemetry/import", alice, exported)
        assert reply.status_code == 200 and reply.json() == {"imported": 60, "skipped": 0, "rejected": {},
                                                               "examples": []}
        assert sorted(Telemetry.objects.values_list("device_id", "ts", "data")) == before


def test_importing_again_skips_every_sample_already_stored(alice):
    exported = body(get("/api/telemetry/export?format=csv", alice))
    assert post("/api/telemetry/import", alice, exported).json()["skipped"] == 60
    assert Telemetry.objects.count() == 90


def test_import_counts_rejections_by_reason_and_writes_no_one_elses_device(alice):
    data = (b'{"device":"a1","ts":"2027-01-01T00:00:00+00:00","data":{"t":1}}\n'
            b'{"device":"b1","ts":"2027-01-01T00:00:00+00:00","data":{"t":1}}\n'
            b'{"device":"a1","ts":"2027-01-01T00:00:01+00:00","data":{"t":"a\\u0000"}}\n'
            b'{"device":"a1","ts":"not a time","data":{"t":1}}\n'
            b"not json\n")
    summary = post("/api/telemetry/import", alice, data, "application/x-ndjson").json()
    assert summary["imported"] == 1
    assert summary["rejected"] == {"bad_ts": 1, "not_json": 1, "nul": 1, "unknown_device": 1}
    assert [e["line"] for e in summary["examples"]] == [3, 4, 5, 2]
    assert not Telemetry.objects.filter(device_id="b1", ts__year=2027).exists()


def test_an_import_body_over_the_limit_is_refused_unread(alice, settings):
    settings.IOTGW_IMPORT_MAX_BYTES = 100
    reply = post("/api/telemetry/import", alice, b"x" * 101)
    assert reply.status_code == 413 and reply.json()["error"]["code"] == "too_large"


def export_peak(n_devices: int) -> tuple[int, int]:
    """Bytes of the export and the peak of Python allocations while streaming it."""
    tracemalloc.start()
    try:
        size = sum(len(c) for c in encode("csv", telemetry_samples(device_ids=[f"m{i}" for i in range(n_devices)],
                                                                   page=200), chunk_bytes=16 * 1024))
        return size, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_export_memory_stays_flat_however_long_the_history():
    for i in range(10):
        device_register(device_id=f"m{i}")
        store(f"m{i}", 600)
    small, small_peak = export_peak(1)
    large, large_peak = export_peak(10)
    assert large > 9 * small
    assert large_peak < 1.5 * small_peak, (small_peak, large_peak)


def test_the_commands_export_to_a_file_and_import_it_idempotently(alice, tmp_path, capsys):
    path = tmp_path / "a.ndjson"
    call_command("exporttelemetry", "--format", "ndjson", "--device", "a1", "--metric", "t", "-o", str(path))
    assert len(path.read_text().splitlines()) == 30
    Telemetry.objects.filter(device_id="a1").delete()
    call_command("importtelemetry", str(path), "--no-progress")
    assert "imported: 30" in capsys.readouterr().out
    call_command("importtelemetry", str(path), "--no-progress")
    out = capsys.readouterr().out
    assert "imported: 0" in out and "skipped (already stored): 30" in out
    assert set(Telemetry.objects.filter(device_id="a1").values_list("data", flat=True)[:1][0]) == {"t"}


def test_imported_history_is_rolled_up_and_a_reimport_changes_no_rollup(alice):
    from devices.aggregates import telemetry_aggregate

    def minutes():
        agg = telemetry_aggregate(device_id="a1", metric="t", since=T0, until=T0 + timedelta(minutes=5), bucket=60)
        return [(b.count, b.min, b.max, b.first, b.last) for b in agg.buckets]

    assert minutes() == [(6, 0.0, 1.25, 0.0, 1.25), (6, 1.5, 2.75, 1.5, 2.75), (6, 3.0, 4.25, 3.0, 4.25),
                         (6, 4.5, 5.75, 4.5, 5.75), (6, 6.0, 7.25, 6.0, 7.25)]
    exported = body(get("/api/telemetry/export?devices=a1&format=ndjson", alice))
    assert post("/api/telemetry/import", alice, exported).json()["skipped"] == 30
    assert minutes()[0] == (6, 0.0, 1.25, 0.0, 1.25)
