"""synthhistory: a regular series per device, in the table live ingest writes, made once however often it runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command

from devices.aggregates import telemetry_aggregate
from devices.models import Device, Telemetry
from devices.selectors import device_secret_ok
from devices.services.synth import synth_devices, synth_history

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_each_device_gets_a_sample_every_interval_and_a_second_run_adds_none():
    ids = synth_devices(prefix="s-", count=3)
    assert synth_history(device_ids=ids, start=T0, end=T0 + timedelta(hours=1), interval=60) == 180
    assert synth_history(device_ids=ids, start=T0, end=T0 + timedelta(hours=1), interval=60) == 0
    times = list(Telemetry.objects.filter(device_id="s-0001").order_by("ts").values_list("ts", flat=True))
    assert times == [T0 + timedelta(minutes=m) for m in range(60)]
    data = Telemetry.objects.filter(device_id="s-0002").first().data
    assert set(data) == {"temp", "hum"} and 14 <= data["temp"] <= 26 and 40 <= data["hum"] <= 60


def test_the_synthetic_history_is_rolled_up_as_ingest_would():
    ids = synth_devices(prefix="s-", count=2)
    synth_history(device_ids=ids, start=T0, end=T0 + timedelta(hours=2), interval=30)
    synth_history(device_ids=ids, start=T0, end=T0 + timedelta(hours=2), interval=30)  # counted once
    temps = [d["temp"] for d in Telemetry.objects.filter(device_id="s-0001").values_list("data", flat=True)]
    hours = telemetry_aggregate(device_id="s-0001", metric="temp", since=T0, until=T0 + timedelta(hours=2),
                                bucket=3600)
    assert hours.tier == "hour" and [b.count for b in hours.buckets] == [120, 120]
    assert min(b.min for b in hours.buckets) == min(temps) and max(b.max for b in hours.buckets) == max(temps)
    assert sum(b.avg * b.count for b in hours.buckets) == pytest.approx(sum(temps))


def test_synthetic_devices_cannot_connect():
    (device_id,) = synth_devices(prefix="s-", count=1)
    assert not device_secret_ok(device_id, "") and not device_secret_ok(device_id, "anything")


def test_the_command_writes_devices_times_days_over_interval_rows(capsys):
    call_command("synthhistory", "--devices", "2", "--days", "0.5", "--interval", "600", "--no-progress")
    assert Device.objects.filter(pk__startswith="synth-").count() == 2
    assert Telemetry.objects.count() == 2 * 72 and capsys.readouterr().out.startswith("144 rows for 2 devices")
