"""Per-minute and per-hour rollups (partitioned by day and month on PostgreSQL), filled from the stored samples."""

from datetime import UTC, datetime

import django.db.models.deletion
from django.db import migrations, models

TABLES = {"devices_rollupminute": "day", "devices_rolluphour": "month"}
COLUMNS = "device_id, metric, bucket, min, max, sum, count, first_ts, first, last_ts, last"


def _fields():
    return [
        ("pk", models.CompositePrimaryKey("device_id", "metric", "bucket", blank=True, editable=False,
                                          primary_key=True, serialize=False)),
        ("metric", models.CharField(max_length=64)),
        ("bucket", models.DateTimeField()),
        ("min", models.FloatField()),
        ("max", models.FloatField()),
        ("sum", models.FloatField()),
        ("count", models.BigIntegerField()),
        ("first_ts", models.DateTimeField()),
        ("first", models.FloatField()),
        ("last_ts", models.DateTimeField()),
        ("last", models.FloatField()),
        ("device", models.ForeignKey(db_constraint=False, db_index=False,
                                     on_delete=django.db.models.deletion.CASCADE, related_name="+",
                                     to="devices.device")),
    ]


def _next(start, span):
    if span == "month":
        return start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1, day=1)
    return start.fromordinal(start.toordinal() + 1)


def _postgresql(cur):
    cur.execute("SELECT DISTINCT (ts AT TIME ZONE 'UTC')::date FROM devices_telemetry")
    days = {row[0] for row in cur.fetchall()} | {datetime.now(UTC).date()}
    for table, span in TABLES.items():
        # 8-byte columns first, then the variable ones: no alignment padding.
        cur.execute(f"CREATE TABLE {table} (bucket timestamptz NOT NULL, first_ts timestamptz NOT NULL, "
                    "last_ts timestamptz NOT NULL, min float8 NOT NULL, max float8 NOT NULL, sum float8 NOT NULL, "
                    "first float8 NOT NULL, last float8 NOT NULL, count bigint NOT NULL, "
                    "device_id varchar(64) NOT NULL, metric varchar(64) NOT NULL, "
                    f"CONSTRAINT {table}_pkey PRIMARY KEY (device_id, metric, bucket)) PARTITION BY RANGE (bucket)")
        starts = {d.replace(day=1) if span == "month" else d for d in days}
        for start in sorted(starts):
            cur.execute(f"CREATE TABLE {table}_p{start:%Y%m%d} PARTITION OF {table} FOR VALUES "
                        f"FROM ('{start} 00:00:00+00') TO ('{_next(start, span)} 00:00:00+00')")
    # The rollups of what is stored, computed as ingest computes them (devices/rollups.py), frozen here.
    cur.execute(f"""INSERT INTO devices_rollupminute ({COLUMNS})
        SELECT device_id, metric, date_trunc('minute', ts, 'UTC'), min(v), max(v), sum(v), count(*), min(ts),
               (array_agg(v ORDER BY ts))[1], max(ts), (array_agg(v ORDER BY ts DESC))[1]
        FROM (SELECT s.device_id, s.ts, e.key AS metric,
                     CASE WHEN jsonb_typeof(e.value) <> 'number' THEN NULL
                          WHEN abs((e.value)::numeric) < 1e200 THEN (e.value)::float8 END AS v
              FROM devices_telemetry s, jsonb_each(s.data) e) p
        WHERE v IS NOT NULL GROUP BY 1, 2, 3""")
    cur.execute(f"""INSERT INTO devices_rolluphour ({COLUMNS})
        SELECT device_id, metric, date_trunc('hour', bucket, 'UTC'), min(min), max(max), sum(sum), sum(count),
               min(first_ts), (array_agg(first ORDER BY first_ts))[1], max(last_ts),
               (array_agg(last ORDER BY last_ts DESC))[1]
        FROM devices_rollupminute GROUP BY 1, 2, 3""")


def _sqlite(apps, schema_editor):
    from devices.rollups import rollups_merge_sqlite  # the code ingest uses; SQLite's tables are small

    for name in ("RollupMinute", "RollupHour"):
        schema_editor.create_model(apps.get_model("devices", name))
    telemetry = apps.get_model("devices", "Telemetry")
    chunk = []
    for row in telemetry.objects.order_by("device_id", "ts").values_list("device_id", "ts", "data").iterator(5000):
        chunk.append(row)
        if len(chunk) == 5000:
            rollups_merge_sqlite(chunk)
            chunk = []
    rollups_merge_sqlite(chunk)


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        with schema_editor.connection.cursor() as cur:
            _postgresql(cur)
    else:
        _sqlite(apps, schema_editor)


def backwards(apps, schema_editor):
    with schema_editor.connection.cursor() as cur:
        for table in TABLES:
            cur.execute(f"DROP TABLE {table}")


class Migration(migrations.Migration):

    dependencies = [
        ("devices", "0008_history_partitioned_telemetry"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(state_operations=[
            migrations.CreateModel(name="RollupHour", fields=_fields(), options={"abstract": False}),
            migrations.CreateModel(name="RollupMinute", fields=_fields(), options={"abstract": False}),
        ]),
        migrations.RunPython(forwards, backwards, elidable=False),
    ]
