"""Writes of historical telemetry from an export file: batched, idempotent on (device, ts), summarised."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth.models import User
from django.db import connection, transaction
from django.utils import timezone

from core.transfer import Rejected, Row
from devices import telemetry_sql
from devices.models import Device
from devices.rollups import rollups_catch_up
from devices.selectors import device_ids_visible_to

BATCH = 5000  # samples per transaction: the batch insert's sweet spot measured for ingest (IOTGW_MAX_BATCH)
MAX_EXAMPLES = 20
MAX_KNOWN = 100_000  # device ids remembered between batches; past it the memo starts again


@dataclass
class ImportSummary:
    """What an import did: samples imported, skipped as already stored, rejected by reason (with examples)."""

    imported: int = 0
    skipped: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    examples: list[Rejected] = field(default_factory=list)

    def reject(self, item: Rejected) -> None:
        """Count a rejection; keep the first few for people to read."""
        self.rejected[item.reason] += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(item)

    def as_dict(self) -> dict[str, Any]:
        """The summary as the API answers it."""
        return {
            "imported": self.imported, "skipped": self.skipped, "rejected": dict(sorted(self.rejected.items())),
            "examples": [{"line": e.line, "reason": e.reason, "message": e.message} for e in self.examples],
        }


def telemetry_import(
    *,
    rows: Iterable[Row | Rejected],
    user: User | None = None,
    batch: int = BATCH,
    progress: Callable[[ImportSummary], None] | None = None,
) -> ImportSummary:
    """Store samples read from an export file, `batch` per transaction; one already stored is skipped.

    With `user`, only devices that user may see are written (others are rejected as `unknown_device`,
    like missing ones); without, any registered device. History is all it writes: a device's
    `latest`, `last_seen` and online state stay what the device itself last said.
    """
    summary = ImportSummary()
    known: dict[str, bool] = {}
    pending: list[Row] = []
    for item in rows:
        if isinstance(item, Rejected):
            summary.reject(item)
            continue
        pending.append(item)
        if len(pending) >= batch:
            _store(pending, user, known, summary)
            pending = []
            if progress is not None:
                progress(summary)
    if pending:
        _store(pending, user, known, summary)
    if summary.imported and connection.vendor == "postgresql":
        # History is late by nature: its minutes are marked, and rolled up here (waiting for a bridge's pass
        # in progress), so aggregates include it when the import returns.
        rollups_catch_up(now=timezone.now(), wait=True)
    if progress is not None:
        progress(summary)
    return summary


def _store(rows: list[Row], user: User | None, known: dict[str, bool], summary: ImportSummary) -> None:
    if len(known) > MAX_KNOWN:
        known.clear()
    unseen = {r.device_id for r in rows} - known.keys()
    if unseen:
        found = (device_ids_visible_to(user, unseen) if user is not None
                 else set(Device.objects.filter(pk__in=unseen).values_list("pk", flat=True)))
        known.update({d: d in found for d in unseen})
    storable = []
    for row in rows:
        if known.get(row.device_id, False):
            storable.append((row.device_id, row.ts, row.data))
        else:
            summary.reject(Rejected(row.line, "unknown_device", f"no device {row.device_id!r}"))
    with transaction.atomic():
        inserted = telemetry_sql.samples_insert(storable, timezone.now())
    summary.imported += inserted
    summary.skipped += len(storable) - inserted
