"""History maintenance: partitions created ahead, expired raw days dropped (PostgreSQL) or deleted (SQLite)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.db import connection

from core.payloads import Sample
from devices import partitions
from devices.models import RetentionPolicy, RollupMinute, Telemetry
from devices.rollups import rollups_catch_up
from devices.services.devices import device_register
from devices.services.history import Retention, telemetry_maintain
from devices.services.telemetry import Inbound, telemetry_ingest

pytestmark = pytest.mark.django_db(transaction=True)

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)


def _store_days(device_id: str, days: range) -> None:
    samples = [Sample(ts=NOW - timedelta(days=d), data={"v": d}) for d in days]
    # Received later than their time: late samples, rolled up by their batch (SQLite) or the job's next pass.
    telemetry_ingest(items=[Inbound(device_id, samples)], received_at=NOW + timedelta(minutes=5))
    if connection.vendor == "postgresql":
        rollups_catch_up(now=NOW + timedelta(minutes=6))


def test_expired_raw_days_are_gone_and_recent_ones_kept():
    device_register(device_id="d1")
    _store_days("d1", range(0, 10))
    report = telemetry_maintain(retention=Retention(raw_days=4.5), now=NOW)  # cutoff: a midnight
    kept = sorted(Telemetry.objects.values_list("data__v", flat=True))
    assert kept == [0, 1, 2, 3, 4]
    if connection.vendor == "postgresql":
        days = {f"devices_telemetry_p{(NOW - timedelta(days=d)):%Y%m%d}" for d in range(5, 10)}
        assert days <= set(report.dropped)  # days 5..9 before the cutoff, dropped whole (and older ones)
        cutoff = (NOW - timedelta(days=4.5)).date()
        assert all(p.start >= cutoff for p in partitions.partitions_list("devices_telemetry"))
    else:
        assert report.deleted["devices_telemetry"] == 5


def test_ingest_into_a_dropped_day_creates_its_partition_again():
    device_register(device_id="d1")
    _store_days("d1", range(0, 3))
    telemetry_maintain(retention=Retention(raw_days=0.5), now=NOW)
    _store_days("d1", range(2, 3))  # a late sample for a day just dropped
    assert sorted(Telemetry.objects.values_list("data__v", flat=True)) == [0, 2]


@pytest.mark.skipif("connection.vendor != 'postgresql'")
def test_partitions_are_created_ahead_of_today():
    report = telemetry_maintain(retention=Retention(ahead_days=2), now=NOW)
    starts = {p.start for p in partitions.partitions_list("devices_telemetry")}
    assert {NOW.date() + timedelta(days=d) for d in range(3)} <= starts
    assert len(report.created) <= 3


def test_the_command_runs_one_pass(capsys):
    call_command("telemetry_maintenance")
    assert "partitions" in capsys.readouterr().out


def test_a_device_or_group_policy_keeps_more_or_less_than_the_global_one():
    keep, short, member, forever = (device_register(device_id=d)[0] for d in ("keep", "short", "member", "forever"))
    plain = device_register(device_id="plain")[0]
    group = Group.objects.create(name="archive")
    member.groups.add(group)
    RetentionPolicy.objects.create(device=keep, raw_days=8.5)
    RetentionPolicy.objects.create(device=short, raw_days=1.5)
    RetentionPolicy.objects.create(group=group, raw_days=6.5)
    RetentionPolicy.objects.create(device=forever, raw_days=0, minute_days=1.5)
    for device in (keep, short, member, forever, plain):
        _store_days(device.id, range(0, 10))
    telemetry_maintain(retention=Retention(raw_days=3.5), now=NOW)
    kept = {d: sorted(Telemetry.objects.filter(device_id=d).values_list("data__v", flat=True))
            for d in ("keep", "short", "member", "forever", "plain")}
    assert kept == {"keep": list(range(9)), "short": [0, 1], "member": list(range(7)), "forever": list(range(10)),
                    "plain": [0, 1, 2, 3]}
    # Rollups follow their own tier's retention: the global one is forever, "forever" keeps 1.5 days of minutes.
    minutes = {d: RollupMinute.objects.filter(device_id=d).count() for d in ("plain", "forever")}
    assert minutes == {"plain": 10, "forever": 2}


def test_timescaledb_is_detected_only_where_installed():
    from devices.partitions import timescale_version

    if connection.vendor != "postgresql":
        assert timescale_version() is None
        return
    with connection.cursor() as cur:
        cur.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
        row = cur.fetchone()
    assert timescale_version() == (row[0] if row else None)
