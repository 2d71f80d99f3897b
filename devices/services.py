"""Writes: registering devices and tokens, ingesting telemetry and status."""

from __future__ import annotations

import base64
import hashlib
import logging
import secrets
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, Group
from django.contrib.auth.signals import user_logged_out
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.dispatch import receiver
from django.http import HttpRequest
from django.utils import timezone

from core.errors import Conflict, DeviceDisabled, DeviceUnknown, PayloadInvalid
from core.ids import DEVICE_ID_RE
from core.payloads import Sample, storable_text
from core.times import format_ts
from core.wire import command_fields
from devices import telemetry_sql
from devices.models import ApiToken, BridgeHeartbeat, Command, Device

logger = logging.getLogger("iotgw.devices")

TOKEN_PREFIX = "iotgw_"


def secret_hash(secret: str) -> str:
    """SHA-256 of a high-entropy secret; a slow hash buys nothing for 192 random bits."""
    return hashlib.sha256(secret.encode()).hexdigest()


# Mosquitto's password-file hash ("$7$", PBKDF2-SHA512, 12-byte salt), as `mosquitto_passwd` writes it.
# The iteration count is Mosquitto's own default: the secret is random, so the count adds nothing.
MOSQUITTO_HASH_ITERATIONS = 101


def mosquitto_password_hash(secret: str, *, salt: bytes | None = None) -> str:
    """A secret in the form a Mosquitto `password_file` line holds after `username:`."""
    salt = salt if salt is not None else secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", secret.encode(), salt, MOSQUITTO_HASH_ITERATIONS)
    return f"$7${MOSQUITTO_HASH_ITERATIONS}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def device_register(
    *,
    device_id: str,
    name: str = "",
    owner: AbstractBaseUser | None = None,
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
            _dynsec_after_commit("client_create", device_id=device_id, secret=secret)
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
        _dynsec_after_commit("client_set_enabled", device_id=device_id, enabled=enabled)
    return device


def device_rotate_secret(*, device_id: str) -> str:
    """Give a device a new secret; returns it (shown once). The old one stops working at once."""
    secret = secrets.token_urlsafe(24)
    with transaction.atomic():
        device = _device(device_id)
        device.secret_hash = secret_hash(secret)
        device.mqtt_password_hash = mosquitto_password_hash(secret)
        device.save(update_fields=["secret_hash", "mqtt_password_hash"])
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


def token_revoke(*, key: str | None = None, prefix: str | None = None, user: AbstractBaseUser | None = None,
                 name: str | None = None) -> int:
    """Revoke tokens by key, by prefix, or a user's (all, or those of one name); their open WebSockets are closed.

    Returns how many.
    """
    if key is None and prefix is None and user is None:
        raise PayloadInvalid("bad_request", "name a token key, a prefix or a user")
    qs = ApiToken.objects.filter(revoked_at__isnull=True)
    if key is not None:
        qs = qs.filter(key_hash=secret_hash(key))
    if prefix is not None:
        qs = qs.filter(prefix=prefix[:12])
    if user is not None:
        qs = qs.filter(user=user)
    if name is not None:
        qs = qs.filter(name=name)
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
    # The samples of each accepted item as stored: a sample without `ts` may have moved on by a microsecond.
    samples: dict[int, list[Sample]] = field(default_factory=dict)


@dataclass(slots=True)
class Inbound:
    """One device message for `telemetry_ingest`: samples, or a status when `online` is set."""

    device_id: str
    samples: Sequence[Sample] = ()
    online: bool | None = None


def telemetry_ingest(*, items: Sequence[Inbound], received_at: datetime) -> IngestOutcome:
    """Store a batch of device messages in one transaction.

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
            device.last_seen = received_at
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
        if current is None or current["ts"] <= ts:
            latest[name] = {"value": value, "ts": ts}


def device_presence_sweep(*, now: datetime | None = None) -> tuple[list[str], datetime]:
    """Mark offline the devices silent past their `offline_after` (default IOTGW_OFFLINE_AFTER); (ids, when)."""
    now = now or timezone.now()
    with transaction.atomic():
        return telemetry_sql.devices_mark_silent(now, settings.IOTGW_OFFLINE_AFTER), now


def bridge_heartbeat(*, client_id: str, connected: bool, counters: dict) -> None:
    """Record that a bridge is alive, whether it holds a broker connection, and its counters."""
    BridgeHeartbeat.objects.update_or_create(
        client_id=client_id, defaults={"beat_at": timezone.now(), "connected": connected, "counters": counters}
    )


def bridge_retire(*, client_id: str) -> bool:
    """Forget a retired bridge's heartbeat (its session is gone); whether it had one."""
    return BridgeHeartbeat.objects.filter(client_id=client_id).delete()[0] > 0


# --- commands (SPEC §6) --------------------------------------------------------------

COMMAND_FINAL = frozenset({Command.SUCCEEDED, Command.FAILED, Command.TIMED_OUT, Command.EXPIRED, Command.CANCELLED})
# How long a bridge's claim on a command it is publishing holds; it renews while the PUBACK is awaited.
COMMAND_LEASE_SECONDS = 30.0


def _transition(command: Command, status: str, at: datetime) -> None:
    """Move a command to `status` and record when; the caller saves it."""
    command.status = status
    command.updated_at = at
    command.history = [*command.history, {"status": status, "at": format_ts(at)}]
    if status == Command.SENT:
        command.sent_at = at
        command.deadline = None if command.oneway else at + timedelta(seconds=command.timeout)
        command.lease_owner, command.lease_until = "", None
    if status in COMMAND_FINAL or (status == Command.SENT and command.oneway):
        command.finished_at = at


def command_issue(
    *,
    user: AbstractBaseUser,
    device_id: str,
    name: str,
    params: dict | None = None,
    timeout: float | None = None,
    expires_in: float | None = None,
    oneway: bool = False,
    idempotency_key: str | None = None,
    ref: str | int | None = None,
) -> Command:
    """Store a command `queued` for a device the user may command; the caller then nudges the bridge.

    An `idempotency_key` is unique per device: issuing it again returns the first command unchanged.
    A device the user may not see is as unknown as one that does not exist, so ids cannot be probed.
    """
    from devices.selectors import devices_visible_to  # selectors imports this module

    fields = command_fields(name=name, params=params, timeout=timeout, expires_in=expires_in, oneway=oneway,
                            idempotency_key=idempotency_key, ref=ref)
    if not isinstance(device_id, str) or not DEVICE_ID_RE.fullmatch(device_id):
        raise DeviceUnknown(f"no such device: {str(device_id)[:80]!r}")
    device = devices_visible_to(user).filter(pk=device_id).only("id", "enabled").first()
    if device is None:
        raise DeviceUnknown(f"no such device: {device_id}")
    if not device.enabled:
        raise DeviceDisabled(f"device {device_id} is disabled")
    key = fields["idempotency_key"]
    if key is not None and (first := Command.objects.filter(device_id=device_id, idempotency_key=key).first()):
        return first
    now = timezone.now()
    command = Command(
        id=uuid.uuid4(), device_id=device_id, issued_by=user, name=fields["name"], params=fields["params"],
        oneway=fields["oneway"], timeout=fields["timeout"], idempotency_key=key, ref=fields["ref"],
        status=Command.QUEUED, created_at=now, updated_at=now, expires_at=now + timedelta(seconds=fields["expires_in"]),
        history=[{"status": Command.QUEUED, "at": format_ts(now)}],
    )
    try:
        with transaction.atomic():
            command.save(force_insert=True)
    except IntegrityError:
        # Two issues with one key raced: the other one stored first.
        first = Command.objects.filter(device_id=device_id, idempotency_key=key).first() if key else None
        if first is None:
            raise
        return first
    return command


def command_cancel(*, user: AbstractBaseUser, command_id: uuid.UUID | str) -> Command:
    """Cancel a command still `queued` and not being published; Conflict otherwise."""
    from devices.selectors import command_get

    command_get(user=user, command_id=command_id)
    now = timezone.now()
    with transaction.atomic():
        command = Command.objects.select_for_update().get(pk=command_id)
        if command.status != Command.QUEUED:
            raise Conflict(f"command is {command.status}; only a queued command can be cancelled")
        if command.lease_until is not None and command.lease_until > now:
            raise Conflict("command is being published to the device; it can no longer be cancelled")
        _transition(command, Command.CANCELLED, now)
        command.save()
    return command


def command_claim(
    *,
    owner: str,
    device_ids: Iterable[str] | None = None,
    exclude: Iterable[uuid.UUID] = (),
    limit: int = 200,
    lease: float = COMMAND_LEASE_SECONDS,
) -> list[Command]:
    """Lease queued, unexpired commands of online devices to one bridge for publishing.

    Rows another bridge is locking are skipped, and so are live leases of other bridges:
    each command is published by one bridge at a time. The owner's own stale leases
    (from before a restart) are taken back, minus `exclude` (its publishes in flight).
    """
    now = timezone.now()
    free = Q(lease_until__isnull=True) | Q(lease_until__lt=now) | Q(lease_owner=owner)
    with transaction.atomic():
        qs = (
            Command.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(free, status=Command.QUEUED, expires_at__gt=now, device__online=True, device__enabled=True)
            .exclude(pk__in=list(exclude))
        )
        if device_ids is not None:
            qs = qs.filter(device_id__in=list(device_ids))
        commands = list(qs.order_by("created_at")[:limit])
        if commands:
            until = now + timedelta(seconds=lease)
            Command.objects.filter(pk__in=[c.pk for c in commands]).update(lease_owner=owner, lease_until=until)
    return commands


def command_lease_renew(*, owner: str, command_ids: Iterable[uuid.UUID], lease: float = COMMAND_LEASE_SECONDS) -> int:
    """Extend a bridge's leases on commands whose publish it still awaits."""
    until = timezone.now() + timedelta(seconds=lease)
    return Command.objects.filter(pk__in=list(command_ids), lease_owner=owner, status=Command.QUEUED).update(
        lease_until=until
    )


def command_mark_sent(*, command_id: uuid.UUID) -> Command | None:
    """`queued` → `sent` once the broker acknowledged the publish; None when it had moved on already."""
    with transaction.atomic():
        command = Command.objects.select_for_update().filter(pk=command_id).first()
        if command is None or command.status != Command.QUEUED:
            return None
        _transition(command, Command.SENT, timezone.now())
        command.save()
    return command


def command_resolve(
    *, device_id: str, command_id: uuid.UUID, ok: bool, result: object = None, error: str = ""
) -> tuple[Command | None, str | None]:
    """Apply a device's response: (the command if it changed, the reason the response was ignored)."""
    now = timezone.now()
    changed: Command | None = None
    with transaction.atomic():
        command = Command.objects.select_for_update().filter(pk=command_id).first()
        # A queued command never leased was never published: the device cannot know its id.
        if command is None or (command.status == Command.QUEUED and command.lease_until is None):
            return None, "response_unknown"
        if command.device_id != device_id:
            return None, "response_wrong_device"
        if command.status == Command.QUEUED:
            # The device answered before the broker's PUBACK was recorded: it was sent.
            _transition(command, Command.SENT, now)
            changed = command
        if command.status == Command.SENT and not command.oneway:
            _transition(command, Command.SUCCEEDED if ok else Command.FAILED, now)
            command.result, command.error = result, error
            changed = command
        if changed is None:
            return None, "response_finished"
        command.save()
    # A one-way command answered before its PUBACK was recorded is now `sent`; the answer itself is ignored.
    return command, (None if command.status in COMMAND_FINAL else "response_finished")


def command_time_out_due(*, limit: int = 500) -> list[Command]:
    """`sent` → `timed_out` for two-way commands past their deadline; rows locked elsewhere wait."""
    return _finish_due(Q(status=Command.SENT, oneway=False, deadline__lte=timezone.now()), Command.TIMED_OUT,
                       "no response within the timeout", limit)


def command_expire_due(*, limit: int = 500) -> list[Command]:
    """`queued` → `expired` for commands still unsent at expires_at."""
    return _finish_due(Q(status=Command.QUEUED, expires_at__lte=timezone.now()), Command.EXPIRED,
                       "not delivered before it expired", limit)


def _finish_due(due: Q, status: str, error: str, limit: int) -> list[Command]:
    now = timezone.now()
    with transaction.atomic():
        commands = list(Command.objects.select_for_update(skip_locked=True).filter(due).order_by("pk")[:limit])
        for command in commands:
            _transition(command, status, now)
            command.error = error
            command.lease_owner, command.lease_until = "", None
        if commands:
            Command.objects.bulk_update(
                commands, ["status", "updated_at", "history", "finished_at", "error", "lease_owner", "lease_until"]
            )
    return commands
