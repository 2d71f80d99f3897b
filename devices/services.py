"""Writes: registering devices and tokens, ingesting telemetry and status."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser, Group
from django.db import IntegrityError, transaction
from django.utils import timezone

from devices.exceptions import Conflict, PayloadInvalid
from devices.models import ApiToken, BridgeHeartbeat, Device, Telemetry
from protocols.payloads import DEVICE_ID_RE, Sample
from protocols.wire import format_ts

TOKEN_PREFIX = "iotgw_"


def secret_hash(secret: str) -> str:
    """SHA-256 of a high-entropy secret; a slow hash buys nothing for 192 random bits."""
    return hashlib.sha256(secret.encode()).hexdigest()


def device_register(
    *,
    device_id: str,
    name: str = "",
    owner: AbstractBaseUser | None = None,
    groups: Iterable[str] = (),
) -> tuple[Device, str]:
    """Register a device; returns it with its secret, which is not stored and never shown again."""
    if not DEVICE_ID_RE.match(device_id):
        raise PayloadInvalid("bad_device_id", f"device id {device_id!r} must match {DEVICE_ID_RE.pattern}")
    secret = secrets.token_urlsafe(24)
    try:
        with transaction.atomic():
            device = Device.objects.create(id=device_id, name=name or device_id, owner=owner,
                                           secret_hash=secret_hash(secret))
            device.groups.set([Group.objects.get_or_create(name=g)[0] for g in groups])
    except IntegrityError:
        raise Conflict(f"device {device_id!r} is already registered") from None
    return device, secret


def device_set_enabled(*, device_id: str, enabled: bool) -> Device:
    """Enable or disable a device; a disabled device's messages are rejected."""
    device = Device.objects.get(pk=device_id)
    device.enabled = enabled
    device.save(update_fields=["enabled"])
    return device


def token_create(*, user: AbstractBaseUser, name: str = "") -> str:
    """Create an API token for a user; returns the key, which only exists in this answer."""
    key = TOKEN_PREFIX + secrets.token_urlsafe(32)
    ApiToken.objects.create(user=user, name=name, prefix=key[:12], key_hash=secret_hash(key))
    return key


@dataclass(slots=True)
class IngestOutcome:
    """What a batch did: accepted items by index, rejections with reasons, status changes."""

    accepted: list[int] = field(default_factory=list)
    rejected: dict[int, str] = field(default_factory=dict)
    # (device id, online, when) for devices whose online flag changed.
    status_changes: list[tuple[str, bool, datetime]] = field(default_factory=list)


@dataclass(slots=True)
class Inbound:
    """One device message for `telemetry_ingest`: samples, or a status when `online` is set."""

    device_id: str
    samples: Sequence[Sample] = ()
    online: bool | None = None


def telemetry_ingest(*, items: Sequence[Inbound], received_at: datetime) -> IngestOutcome:
    """Store a batch of device messages in one transaction.

    Samples are stored once per (device, ts): a redelivered sample is a no-op.
    Unknown and disabled devices are rejected item by item; the rest commit.
    """
    outcome = IngestOutcome()
    ids = sorted({item.device_id for item in items})
    with transaction.atomic():
        # Locked in id order: two bridges merging `latest` for one device
        # serialise instead of losing each other's metrics.
        devices = {
            d.id: d
            for d in Device.objects.select_for_update()
            .filter(pk__in=ids)
            .only("id", "enabled", "online", "latest", "last_seen")
            .order_by("pk")
        }
        was_online = {d.id: d.online for d in devices.values()}
        rows: list[Telemetry] = []
        touched: dict[str, Device] = {}
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
            device.last_seen = received_at
            device.online = True if item.online is None else item.online
            for sample in item.samples:
                rows.append(Telemetry(device_id=device.id, ts=sample.ts, data=sample.data, received_at=received_at))
                _merge_latest(device.latest, sample)
        if rows:
            Telemetry.objects.bulk_create(rows, ignore_conflicts=True)
        if touched:
            Device.objects.bulk_update(list(touched.values()), ["latest", "last_seen", "online"])
    outcome.status_changes = [
        (d.id, d.online, received_at) for d in touched.values() if d.online != was_online[d.id]
    ]
    return outcome


def _merge_latest(latest: dict, sample: Sample) -> None:
    """Keep, per metric, the value of the newest sample by its own time."""
    ts = format_ts(sample.ts)
    for name, value in sample.data.items():
        current = latest.get(name)
        if current is None or current["ts"] <= ts:
            latest[name] = {"value": value, "ts": ts}


def bridge_heartbeat(*, client_id: str, connected: bool, counters: dict) -> None:
    """Record that a bridge is alive, whether it holds a broker connection, and its counters."""
    BridgeHeartbeat.objects.update_or_create(
        client_id=client_id, defaults={"beat_at": timezone.now(), "connected": connected, "counters": counters}
    )
