"""The rollup job's watermark, and a BRIN index on the raw samples' ts for its range reads (PostgreSQL).

The rollups so far were maintained by ingest, so the job starts at the migration's time.
"""

from datetime import UTC, datetime

from django.db import migrations, models


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cur:
        # A few pages per day of samples (ts follows the insertion order); it bounds the job's scan of "the
        # last minutes" to the pages that hold them, at almost no cost to ingest.
        cur.execute("CREATE INDEX devices_telemetry_ts_brin ON devices_telemetry USING brin (ts)")
    apps.get_model("devices", "RollupWatermark").objects.create(name="rollups", upto=datetime.now(UTC))


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        with schema_editor.connection.cursor() as cur:
            cur.execute("DROP INDEX IF EXISTS devices_telemetry_ts_brin")


class Migration(migrations.Migration):

    dependencies = [
        ("devices", "0011_dialects_last_rejection"),
    ]

    operations = [
        migrations.CreateModel(
            name="RollupWatermark",
            fields=[
                ("name", models.CharField(max_length=32, primary_key=True, serialize=False)),
                ("upto", models.DateTimeField()),
            ],
        ),
        migrations.RunPython(forwards, backwards, elidable=False),
    ]
