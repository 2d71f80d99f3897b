"""Writes on devices: registering, enabling and disabling, new secrets, presence by silence."""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from datetime import datetime

from django.conf import settings
from django.contrib.auth.models import Group, User
from django.db import IntegrityError, transaction
from django.utils import timezone

from core.errors import Conflict, DeviceUnknown, PayloadInvalid
from core.ids import DEVICE_ID_RE
from core.payloads import storable_text
from devices import signals, telemetry_sql
from devices.models import Device
from devices.secrets import mosquitto_password_hash, secret_hash


def device_register(
    *,
    device_id: str,
    name: str = "",
    owner: User | None = None,
    groups: Iterable[str] = (),
    offline_after: int | None = None,
) -> tuple[Device, str]:
    """Register a device; returns it with its secret, which is not stored and never shown again."""
    if not isinstance(device_id, str) or not DEVICE_ID_RE.fullmatch(device_id):
        raise PayloadInvalid("bad_device_id", f"device id {device_id!r} must match {DEVICE_ID_RE.pattern}")
    groups = list(groups)
    _check_text("name", name, DEVICE_NAME_MAX)
    for group in groups:
        _check_text("group", group, GROUP_NAME_MAX, required=True)
    if offline_after is not None and offline_after < 0:
        raise PayloadInvalid("bad_request", "offline_after must be 0 (never) or a number of seconds")
    if device_id == settings.MQTT_BRIDGE_USERNAME:
        # The broker hooks would take this device for the bridge's all-powerful account.
        raise Conflict(f"device id {device_id!r} is the bridge's MQTT username")
    secret = secrets.token_urlsafe(24)
    try:
        with transaction.atomic():
            device = Device.objects.create(id=device_id, name=name or device_id, owner=owner,
                                           secret_hash=secret_hash(secret),
                                           mqtt_password_hash=mosquitto_password_hash(secret),
                                           offline_after=offline_after)
            device.groups.set([Group.objects.get_or_create(name=g)[0] for g in groups])
            signals.send_on_commit(signals.device_registered, device_id=device_id, secret=secret)
    except IntegrityError:
        raise Conflict(f"device {device_id!r} is already registered") from None
    return device, secret


# The columns' lengths (Device.name, auth's Group.name): PostgreSQL refuses longer values.
DEVICE_NAME_MAX = 200
GROUP_NAME_MAX = 150


def _check_text(what: str, value: str, max_length: int, *, required: bool = False) -> None:
    """A name the database will store as given: bounded, without NUL."""
    if not isinstance(value, str) or len(value) > max_length or (required and not value) or not storable_text(value):
        raise PayloadInvalid("bad_request", f"{what} must be text of {int(required)} to {max_length} characters "
                             "without NUL")


def device_set_enabled(*, device_id: str, enabled: bool) -> Device:
    """Enable or disable a device; a disabled device's messages are rejected."""
    with transaction.atomic():
        device = _device(device_id)
        device.enabled = enabled
        device.save(update_fields=["enabled"])
        signals.send_on_commit(signals.device_enabled_changed, device_id=device_id, enabled=enabled)
    return device


def device_rotate_secret(*, device_id: str) -> str:
    """Give a device a new secret; returns it (shown once). The old one stops working at once."""
    secret = secrets.token_urlsafe(24)
    with transaction.atomic():
        device = _device(device_id)
        device.secret_hash = secret_hash(secret)
        device.mqtt_password_hash = mosquitto_password_hash(secret)
        device.save(update_fields=["secret_hash", "mqtt_password_hash"])
        signals.send_on_commit(signals.device_secret_changed, device_id=device_id, secret=secret)
    return secret


def _device(device_id: str) -> Device:
    try:
        return Device.objects.select_for_update().get(pk=device_id)
    except Device.DoesNotExist:
        raise DeviceUnknown(f"no device {device_id!r}") from None


def device_presence_sweep(*, default_after: float, now: datetime | None = None) -> tuple[list[str], datetime]:
    """Mark offline the devices silent past their `offline_after` (else `default_after` s; 0: never); (ids, when)."""
    now = now or timezone.now()
    with transaction.atomic():
        return telemetry_sql.devices_mark_silent(now, default_after), now
