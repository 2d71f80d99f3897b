"""`synthhistory --devices N --days D --interval S`: a synthetic history to measure with (not shipped data)."""

import math
import sys
import time
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.management import BaseCommand, CommandError
from django.utils import timezone
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from devices.services.synth import synth_devices, synth_history


class Command(BaseCommand):
    help = ("Register N synthetic devices (no usable secret) and write a sample every S seconds for D days up to "
            "now (temp, hum), e.g. --devices 100 --days 30 --interval 26 for 10 million rows. Idempotent.")

    def add_arguments(self, parser):
        parser.add_argument("--devices", type=int, required=True)
        parser.add_argument("--days", type=float, required=True)
        parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples (default 10)")
        parser.add_argument("--prefix", default="synth-", help="device id prefix (default synth-)")
        parser.add_argument("--owner", help="username to own the devices")
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args, devices, days, interval, prefix, owner, no_progress, **options):
        if devices < 1 or days <= 0 or not 0.001 <= interval <= 86400:
            raise CommandError("--devices ≥ 1, --days > 0 and --interval between 0.001 and 86400 seconds")
        user = None
        if owner:
            user = get_user_model().objects.filter(username=owner).first()
            if user is None:
                raise CommandError(f"no user named {owner!r}")
        ids = synth_devices(prefix=prefix, count=devices, owner=user)
        end = timezone.now().replace(second=0, microsecond=0)
        start = end - timedelta(days=days)
        total = devices * math.ceil(days * 86400 / interval)
        columns = (TextColumn("synthhistory"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        began = time.monotonic()
        with Progress(*columns, console=Console(file=sys.stderr), disable=no_progress) as bar:
            task = bar.add_task("rows", total=total)
            written = synth_history(device_ids=ids, start=start, end=end, interval=interval,
                                    progress=lambda n: bar.advance(task, n))
        seconds = time.monotonic() - began
        self.stdout.write(f"{written} rows for {devices} devices from {start.isoformat()} to {end.isoformat()} "
                          f"in {seconds:.1f} s ({written / max(seconds, 1e-9):.0f} rows/s)")
