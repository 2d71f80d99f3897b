"""`exporttelemetry [--format csv|ndjson] [--device D]… [--metric M]… [--since T] [--until T] [-o FILE]`."""

import sys

from django.core.management import BaseCommand, CommandError

from core.errors import PayloadInvalid
from core.ids import DEVICE_ID_RE, METRIC_RE
from core.times import parse_ts
from core.transfer import FORMATS, encode
from devices.models import Device
from devices.selectors import telemetry_samples


def _time(value: str | None, name: str):
    if value is None:
        return None
    try:
        return parse_ts(int(value) if value.isascii() and value.isdigit() else value)
    except (PayloadInvalid, ValueError, OverflowError):
        raise CommandError(f"--{name} must be ISO-8601 with an offset, or epoch seconds or milliseconds") from None


class Command(BaseCommand):
    help = "Stream telemetry as CSV or NDJSON (docs/history-export.md), in constant memory, to a file or stdout."

    def add_arguments(self, parser):
        parser.add_argument("--format", choices=FORMATS, default="csv")
        parser.add_argument("--device", action="append", default=[], help="a device id (repeatable; default: all)")
        parser.add_argument("--metric", action="append", default=[], help="a metric (repeatable; default: all)")
        parser.add_argument("--since", help="inclusive; ISO-8601 with offset, or epoch s or ms")
        parser.add_argument("--until", help="exclusive; ISO-8601 with offset, or epoch s or ms")
        parser.add_argument("-o", "--output", default="-", help="file to write (default: stdout)")

    def handle(self, *args, format, device, metric, since, until, output, **options):
        bad = [d for d in device if not DEVICE_ID_RE.fullmatch(d)] + [m for m in metric if not METRIC_RE.fullmatch(m)]
        if bad:
            raise CommandError(f"not a device id or metric name: {bad[0]!r}")
        ids = device or list(Device.objects.values_list("pk", flat=True))
        missing = sorted(set(ids) - set(Device.objects.filter(pk__in=ids).values_list("pk", flat=True)))
        if missing:
            raise CommandError(f"no device {missing[0]!r}")
        samples = telemetry_samples(device_ids=ids, metrics=metric or None, since=_time(since, "since"),
                                    until=_time(until, "until"))
        out = sys.stdout.buffer if output == "-" else open(output, "wb")
        try:
            for chunk in encode(format, samples):
                out.write(chunk)
        finally:
            if out is not sys.stdout.buffer:
                out.close()
            else:
                out.flush()
