"""Writes of what devices said: a batch of samples and status changes in one transaction (SPEC §4, §5)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from django.db import transaction

from core.payloads import Sample
from devices import telemetry_sql
from devices.services.children import children_create_on_sight


@dataclass(slots=True)
class IngestOutcome:
    """What a batch did: accepted items by index, rejections with reasons, status changes."""

    accepted: list[int] = field(default_factory=list)
    rejected: dict[int, str] = field(default_factory=dict)
    # (device id, online, when) for devices whose online flag changed.
    status_changes: list[tuple[str, bool, datetime]] = field(default_factory=list)
    # The samples of each accepted item as stored: a sample without `ts` may have moved on by a microsecond.
    samples: dict[int, list[Sample]] = field(default_factory=dict)
    # The accepted devices no command can be waiting on (`Device.answer_until` passed): their id-less answers
    # (a firmware's new state, docs/profiles.md `answers`) have nothing to resolve, so they skip the lookup.
    unanswerable: set[str] = field(default_factory=set)


@dataclass(slots=True)
class Inbound:
    """One device message for `telemetry_ingest`: samples, or a status when `online` is set."""

    device_id: str
    samples: Sequence[Sample] = ()
    online: bool | None = None
    # (gateway id, its own name) for a gateway's child: created on first sight when its profile says so.
    child_of: tuple[str, str] | None = None


def telemetry_ingest(*, items: Sequence[Inbound], received_at: datetime,
                     transports: Mapping[str, str] | None = None) -> IngestOutcome:
    """Store a batch of device messages in one transaction.

    `transports` names the transport each device was heard on in this batch (an Inlet's name);
    it is written with the rest of the device's row, so recording it costs no statement of its own.

    A sample with `ts` is stored once per (device, ts): a redelivered sample is a no-op.
    A sample without `ts` never collides with another one: it gets the first free microsecond
    of its device from its receive time on (the device row is locked, so this holds across
    bridges and HTTP ingest too). Unknown and disabled devices are rejected item by item; the rest commit.
    """
    outcome = IngestOutcome()
    ids = sorted({item.device_id for item in items})
    with transaction.atomic():
        # Locked in id order: two bridges merging `latest` for one device
        # serialise instead of losing each other's metrics.
        devices = telemetry_sql.devices_lock(ids)
        unseen = {item.device_id: item.child_of for item in items
                  if item.child_of is not None and item.device_id not in devices}
        if unseen:
            devices.update(telemetry_sql.devices_lock(children_create_on_sight(unseen)))
        was_online = {d.id: d.online for d in devices.values()}
        given: list[tuple[str, datetime, dict]] = []
        assigned: list[telemetry_sql.AssignedRow] = []
        touched: dict[str, telemetry_sql.DeviceRow] = {}
        for index, item in enumerate(items):
            device = devices.get(item.device_id)
            if device is None:
                outcome.rejected[index] = "unknown_device"
                continue
            if not device.enabled:
                outcome.rejected[index] = "disabled_device"
                continue
            outcome.accepted.append(index)
            touched[device.id] = device
            if device.answer_until is None or device.answer_until < received_at:
                outcome.unanswerable.add(device.id)
            device.last_seen = received_at
            if transports:
                device.transport = transports.get(device.id, device.transport)
            device.online = True if item.online is None else item.online
            for position, sample in enumerate(item.samples):
                if sample.assigned:
                    assigned.append(telemetry_sql.AssignedRow(device.id, sample.ts, sample.data, index, position))
                else:
                    given.append((device.id, sample.ts, sample.data))
        telemetry_sql.samples_insert(given, received_at)
        telemetry_sql.samples_insert_assigned(assigned, received_at)
        outcome.samples = {index: list(items[index].samples) for index in outcome.accepted}
        for row in assigned:
            kept = outcome.samples[row.index][row.position]
            if row.ts != kept.ts:  # moved on to a free microsecond: its time text changes with it
                outcome.samples[row.index][row.position] = Sample(ts=row.ts, data=row.data, assigned=True)
        for index in outcome.accepted:
            latest = devices[items[index].device_id].latest
            for sample in outcome.samples[index]:
                _merge_latest(latest, sample)
        telemetry_sql.devices_update(touched.values())
    outcome.status_changes = [
        (d.id, d.online, received_at) for d in touched.values() if d.online != was_online[d.id]
    ]
    return outcome


def _merge_latest(latest: dict, sample: Sample) -> None:
    """Keep, per metric, the value of the newest sample by its own time."""
    ts = sample.ts_text
    for name, value in sample.data.items():
        current = latest.get(name)
        # What ingest did not write (an admin's edit, an old release) is overwritten, never compared.
        if not isinstance(current, dict) or not isinstance(current.get("ts"), str) or current["ts"] <= ts:
            latest[name] = {"value": value, "ts": ts}
