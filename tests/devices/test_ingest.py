"""telemetry_ingest: once per (device, ts), newest value wins, bad devices rejected alone."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from devices.models import Device, Telemetry
from devices.services import Inbound, device_register, device_set_enabled, telemetry_ingest
from protocols.payloads import Sample

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
