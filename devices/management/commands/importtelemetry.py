"""`importtelemetry FILE [--format csv|ndjson] [--batch N]`: import an export, idempotent on (device, ts)."""

import sys

import rich.progress
from django.core.management import BaseCommand, CommandError
from rich.console import Console

from core.transfer import FORMATS, read_rows
from devices.services.telemetry_import import BATCH, ImportSummary, telemetry_import


class Command(BaseCommand):
    help = ("Import telemetry from a CSV or NDJSON export (docs/history-export.md); samples already stored "
            "for their (device, ts) are skipped. Prints a summary; exits 1 when any line was rejected.")

    def add_arguments(self, parser):
        parser.add_argument("file", help="the export to read ('-' for stdin)")
        parser.add_argument("--format", choices=FORMATS, help="default: detected from the first line")
        parser.add_argument("--batch", type=int, default=BATCH, help=f"samples per transaction (default {BATCH})")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")

    def handle(self, *args, file, format, batch, no_progress, **options):
        console = Console(file=sys.stderr)
        if file == "-":
            summary = telemetry_import(rows=read_rows(sys.stdin.buffer, format), batch=batch)
        else:
            try:
                opened = rich.progress.open(file, "rb", description="importing", console=console,
                                            disable=no_progress)
            except OSError as exc:
                raise CommandError(f"cannot read {file}: {exc.strerror}") from None
            with opened as stream:
                summary = telemetry_import(rows=read_rows(stream, format), batch=batch)
        self._report(summary)
        if summary.rejected:
            sys.exit(1)

    def _report(self, summary: ImportSummary) -> None:
        self.stdout.write(f"imported: {summary.imported}")
        self.stdout.write(f"skipped (already stored): {summary.skipped}")
        self.stdout.write(f"rejected: {sum(summary.rejected.values())}")
        for reason, count in sorted(summary.rejected.items()):
            self.stdout.write(f"  {reason}: {count}")
        for example in summary.examples:
            self.stderr.write(f"line {example.line}: {example.reason}: {example.message}")
