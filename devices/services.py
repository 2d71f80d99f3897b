"""Writes: registering devices and tokens, ingesting telemetry and status."""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, Group
from django.contrib.auth.signals import user_logged_out
from django.db import IntegrityError, transaction
from django.dispatch import receiver
from django.http import HttpRequest
from django.utils import timezone

from devices.exceptions import Conflict, DeviceUnknown, PayloadInvalid
from devices.models import ApiToken, BridgeHeartbeat, Device, Telemetry
from protocols.payloads import DEVICE_ID_RE, Sample
from protocols.wire import format_ts

logger = logging.getLogger("iotgw.devices")

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
    if device_id == settings.MQTT_BRIDGE_USERNAME:
        # The broker hooks would take this device for the bridge's all-powerful account.
        raise Conflict(f"device id {device_id!r} is the bridge's MQTT username")
    secret = secrets.token_urlsafe(24)
    try:
        with transaction.atomic():
            device = Device.objects.create(id=device_id, name=name or device_id, owner=owner,
                                           secret_hash=secret_hash(secret))
            device.groups.set([Group.objects.get_or_create(name=g)[0] for g in groups])
            _dynsec_after_commit("client_create", device_id=device_id, secret=secret)
    except IntegrityError:
        raise Conflict(f"device {device_id!r} is already registered") from None
    return device, secret


def device_set_enabled(*, device_id: str, enabled: bool) -> Device:
    """Enable or disable a device; a disabled device's messages are rejected."""
    with transaction.atomic():
        device = _device(device_id)
        device.enabled = enabled
        device.save(update_fields=["enabled"])
        _dynsec_after_commit("client_set_enabled", device_id=device_id, enabled=enabled)
    return device


def device_rotate_secret(*, device_id: str) -> str:
    """Give a device a new secret; returns it (shown once). The old one stops working at once."""
    secret = secrets.token_urlsafe(24)
    with transaction.atomic():
        device = _device(device_id)
        device.secret_hash = secret_hash(secret)
        device.save(update_fields=["secret_hash"])
        _dynsec_after_commit("client_set_password", device_id=device_id, secret=secret)
    return secret


def _device(device_id: str) -> Device:
    try:
        return Device.objects.select_for_update().get(pk=device_id)
    except Device.DoesNotExist:
        raise DeviceUnknown(f"no device {device_id!r}") from None


def _dynsec_after_commit(action: str, **kwargs: object) -> None:
    """Mirror a registry change into Mosquitto's dynamic security, once the change is committed."""
    if not settings.MQTT_DYNSEC:
        return
    from devices import dynsec

    transaction.on_commit(lambda: dynsec.apply(action, **kwargs))


def token_create(*, user: AbstractBaseUser, name: str = "") -> str:
    """Create an API token for a user; returns the key, which only exists in this answer."""
    key = TOKEN_PREFIX + secrets.token_urlsafe(32)
    ApiToken.objects.create(user=user, name=name, prefix=key[:12], key_hash=secret_hash(key))
    return key


def token_revoke(*, key: str | None = None, prefix: str | None = None, user: AbstractBaseUser | None = None) -> int:
    """Revoke tokens by key, by prefix, or all of a user's; their open WebSockets are closed. Returns how many."""
    if key is None and prefix is None and user is None:
        raise PayloadInvalid("bad_request", "name a token key, a prefix or a user")
    qs = ApiToken.objects.filter(revoked_at__isnull=True)
    if key is not None:
        qs = qs.filter(key_hash=secret_hash(key))
    if prefix is not None:
        qs = qs.filter(prefix=prefix[:12])
    if user is not None:
        qs = qs.filter(user=user)
    with transaction.atomic():
        ids = list(qs.select_for_update().values_list("pk", flat=True))
        ApiToken.objects.filter(pk__in=ids).update(revoked_at=timezone.now())
        transaction.on_commit(lambda: sockets_close(groups=[token_group(i) for i in ids]))
    return len(ids)


# Every dashboard socket joins the groups below, so that revoking a token, logging out
# or disabling a user can end it. The layer is lossy: the socket also re-checks its
# credentials every IOTGW_WS_RECHECK_SECONDS, so a lost message only delays the close.
SOCKET_CLOSE = "sockets.revoke"


def user_group(user_id: int) -> str:
    """The group of every socket of a user."""
    return f"iotgw.user.{user_id}"


def token_group(token_id: int) -> str:
    """The group of the sockets opened with one API token."""
    return f"iotgw.token.{token_id}"


def session_group(session_key: str) -> str:
    """The group of the sockets opened with one Django session (by a hash of its key)."""
    return "iotgw.session." + hashlib.sha256(session_key.encode()).hexdigest()[:40]


def sockets_close(*, groups: Iterable[str]) -> None:
    """Ask every dashboard socket in these groups to close (code 4401); best-effort."""
    layer = get_channel_layer()
    if layer is None:
        return
    for group in groups:
        try:
            async_to_sync(layer.group_send)(group, {"type": SOCKET_CLOSE})
        except Exception as exc:  # the database already says no; this only hurries the close
            logger.warning("could not close sockets of %s: %s", group, exc)


@receiver(user_logged_out)
def _close_session_sockets(sender: object, request: HttpRequest | None = None, **kwargs: object) -> None:
    """Logging out ends the WebSockets opened with that session."""
    key = getattr(getattr(request, "session", None), "session_key", None)
    if key:
        sockets_close(groups=[session_group(key)])


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
