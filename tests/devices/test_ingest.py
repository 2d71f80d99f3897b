"""telemetry_ingest: once per (device, ts), newest value wins, bad devices rejected alone."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from core.payloads import Sample
from devices.models import Device, Telemetry
from devices.services.devices import device_register, device_set_enabled
from devices.services.telemetry import Inbound, telemetry_ingest

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def sample(seconds: int, **data) -> Sample:
    return Sample(ts=T0 + timedelta(seconds=seconds), data=data)


def test_redelivered_sample_is_stored_once():
    device_register(device_id="d1")
    for _ in range(2):
        telemetry_ingest(items=[Inbound("d1", [sample(1, x=1)])], received_at=T0)
    assert Telemetry.objects.filter(device_id="d1").count() == 1


def test_latest_keeps_the_newest_sample_by_its_own_time():
    device_register(device_id="d1")
    telemetry_ingest(items=[Inbound("d1", [sample(10, temp=20, hum=40)])], received_at=T0)
    telemetry_ingest(items=[Inbound("d1", [sample(5, temp=99)])], received_at=T0)  # late, older
    latest = Device.objects.get(pk="d1").latest
    assert latest["temp"]["value"] == 20 and latest["hum"]["value"] == 40


def test_unknown_and_disabled_devices_are_rejected_without_blocking_the_batch():
    device_register(device_id="good")
    device_register(device_id="off")
    device_set_enabled(device_id="off", enabled=False)
    outcome = telemetry_ingest(
        items=[Inbound("ghost", [sample(1, x=1)]), Inbound("off", [sample(1, x=1)]), Inbound("good", [sample(1, x=1)])],
        received_at=T0,
    )
    assert outcome.rejected == {0: "unknown_device", 1: "disabled_device"}
    assert outcome.accepted == [2]
    assert list(Telemetry.objects.values_list("device_id", flat=True)) == ["good"]


def test_status_and_telemetry_report_online_changes_once():
    device_register(device_id="d1")
    outcome = telemetry_ingest(items=[Inbound("d1", online=True), Inbound("d1", [sample(1, x=1)])], received_at=T0)
    assert outcome.status_changes == [("d1", True, T0)]
    outcome = telemetry_ingest(items=[Inbound("d1", online=False)], received_at=T0)
    assert outcome.status_changes == [("d1", False, T0)]


def test_samples_without_ts_never_collide_within_a_batch_or_across_batches():
    device_register(device_id="d1")
    at = T0  # every sample gets the same receive time: the worst case
    plain = [Sample(ts=at, data={"n": n}, assigned=True) for n in range(3)]
    outcome = telemetry_ingest(items=[Inbound("d1", plain[:2]), Inbound("d1", plain[2:])], received_at=at)
    telemetry_ingest(items=[Inbound("d1", [Sample(ts=at, data={"n": 3}, assigned=True)])], received_at=at)
    telemetry_ingest(items=[Inbound("d1", [sample(0, n=4)])], received_at=at)  # a sample *with* this ts, later
    stored = list(Telemetry.objects.filter(device_id="d1").order_by("ts").values_list("ts", "data__n"))
    assert [n for _, n in stored] == [0, 1, 2, 3] and len({ts for ts, _ in stored}) == 4
    assert [s.ts for s in outcome.samples[0] + outcome.samples[1]] == [ts for ts, _ in stored[:3]]
    assert Device.objects.get(pk="d1").latest["n"]["value"] == 3


def test_a_redelivered_sample_with_ts_is_still_stored_once_beside_samples_without():
    device_register(device_id="d1")
    for _ in range(2):
        telemetry_ingest(items=[Inbound("d1", [sample(1, x=1), Sample(ts=T0, data={"y": 1}, assigned=True)])],
                         received_at=T0)
    assert Telemetry.objects.filter(device_id="d1", data__has_key="x").count() == 1
    assert Telemetry.objects.filter(device_id="d1", data__has_key="y").count() == 2


def test_the_transport_a_device_was_last_heard_on_is_recorded_with_its_batch():
    device_register(device_id="d1")
    device_register(device_id="d2")
    assert Device.objects.get(pk="d1").transport == "", "not seen yet"
    telemetry_ingest(items=[Inbound("d1", [sample(1, x=1)]), Inbound("d2", online=True)], received_at=T0,
                     transports={"d1": "ws", "d2": "coap"})
    telemetry_ingest(items=[Inbound("d1", [sample(2, x=2)])], received_at=T0, transports={"d1": "http"})
    telemetry_ingest(items=[Inbound("d2", [sample(3, x=3)])], received_at=T0)  # a caller that does not say
    assert dict(Device.objects.values_list("id", "transport")) == {"d1": "http", "d2": "coap"}


def test_latest_survives_a_stored_value_ingest_did_not_write():
    """`latest` is merged where it is stored; what an admin or an old release left there never breaks a batch."""
    device_register(device_id="d1")
    Device.objects.filter(pk="d1").update(latest={"old": {"value": 1, "ts": "2025-01-01T00:00:00.000000+00:00"},
                                                  "odd": "not an object"})
    telemetry_ingest(items=[Inbound("d1", [sample(1, odd=2, x=3)])], received_at=T0)
    latest = Device.objects.get(pk="d1").latest
    assert latest["old"]["value"] == 1 and latest["odd"]["value"] == 2 and latest["x"]["value"] == 3
    Device.objects.filter(pk="d1").update(latest=[])
    telemetry_ingest(items=[Inbound("d1", [sample(2, x=4)])], received_at=T0)
    assert Device.objects.get(pk="d1").latest == {"x": {"value": 4, "ts": sample(2).ts_text}}
