"""`telemetry_maintenance`: one pass of partition upkeep and retention (what every bridge does hourly)."""

from __future__ import annotations

from django.core.management import BaseCommand

from devices.maintenance import maintain_once
from devices.partitions import timescale_version
from devices.services.history import Retention
from iotgw.config import retention


class Command(BaseCommand):
    help = ("Create the history tables' partitions ahead and drop (PostgreSQL) or delete (SQLite) what is past "
            "IOTGW_RETENTION_*; every bridge also does this every IOTGW_MAINTENANCE_SECONDS.")

    def handle(self, *args, **options):
        if version := timescale_version():
            self.stdout.write(f"TimescaleDB {version} is installed: see docs/history.md for hypertables, "
                              "compression and retention policies; native partitions are kept meanwhile")
        report = maintain_once(Retention(**retention()))
        if report.skipped:
            self.stdout.write("another process is maintaining the history tables; nothing done")
            return
        self.stdout.write(f"created {len(report.created)} partitions: {', '.join(report.created) or '-'}")
        self.stdout.write(f"dropped {len(report.dropped)} partitions: {', '.join(report.dropped) or '-'}")
        for table, n in report.deleted.items():
            self.stdout.write(f"deleted {n} rows from {table}")
