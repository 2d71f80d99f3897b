"""The migrations to the partitioned, id-less telemetry table keep every row and roll them up (PostgreSQL, SQLite)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from devices import grafana, partitions
from devices.models import RollupHour, RollupMinute, Telemetry

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [("devices", "0007_dialects_profiles")]
T0 = datetime(2025, 3, 30, 22, 0, tzinfo=UTC)


def _migrate(target):
    # As `manage.py migrate` does around every run (pre_migrate, post_migrate): the executor alone sends
    # no signals, and Grafana's views would block dropping the tables they read.
    grafana.views_drop()
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(target)
    grafana.views_create()
    partitions.cache.forget()  # the tables were rebuilt under this process's list of partitions


def test_migration_to_partitions_keeps_every_row_of_every_day():
    _migrate(BEFORE)
    rows = [(f"d{i % 3}", T0 + timedelta(hours=7 * i), f'{{"n": {i}}}', T0) for i in range(40)]  # ~12 days
    old = MigrationExecutor(connection).loader.project_state(BEFORE).apps.get_model("devices", "Device")
    for device in ("d0", "d1", "d2"):
        old.objects.create(id=device)
    with connection.cursor() as cur:
        for row in rows:
            cur.execute("INSERT INTO devices_telemetry (device_id, ts, data, received_at) VALUES (%s, %s, %s, %s)",
                        [row[0], connection.ops.adapt_datetimefield_value(row[1]), row[2],
                         connection.ops.adapt_datetimefield_value(row[3])])
    _migrate(MigrationExecutor(connection).loader.graph.leaf_nodes("devices"))
    stored = sorted((t.device_id, t.ts, t.data["n"]) for t in Telemetry.objects.all())
    assert stored == sorted((d, ts, i) for i, (d, ts, _, _) in enumerate(rows))
    # The rollups are filled from the rows already stored: one minute and one hour per sample here.
    assert sorted(RollupMinute.objects.values_list("sum", flat=True)) == list(range(40))
    assert RollupHour.objects.count() == 40
    if connection.vendor == "postgresql":
        with connection.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_inherits WHERE inhparent = 'devices_telemetry'::regclass")
            assert cur.fetchone()[0] >= 12  # one partition per day that held rows, and days ahead
