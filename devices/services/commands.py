"""Writes of the command lifecycle (SPEC §6): issue, cancel, claim and lease, sent, resolve, time out, expire."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from django.contrib.auth.models import User
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from core.errors import Conflict, DeviceDisabled, DeviceUnknown
from core.ids import DEVICE_ID_RE
from core.times import format_ts
from core.wire import CommandResponse, command_fields
from devices.commands_sql import answers_expected, commands_claim, commands_insert, commands_write
from devices.models import Command, Device

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
    user: User,
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
    command = _queued(user, device_id, fields, timezone.now())
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


def command_issue_many(
    *,
    user: User,
    device_ids: Sequence[str],
    name: str,
    params: dict | None = None,
    timeout: float | None = None,
    expires_in: float | None = None,
    oneway: bool = False,
    idempotency_key: str | None = None,
    ref: str | int | None = None,
) -> tuple[list[Command], dict[str, str]]:
    """One command per device, stored in one transaction: (the commands, in `device_ids` order; refused ids).

    A refused id maps to its reason: `unknown_device` (missing, malformed or not the user's to
    see) or `device_disabled`. With an `idempotency_key`, a device that already has a command under
    that key gets it back unchanged, as command_issue does, so a retried fleet command stores nothing twice.
    """
    from devices.selectors import devices_visible_to  # selectors imports this module

    fields = command_fields(name=name, params=params, timeout=timeout, expires_in=expires_in, oneway=oneway,
                            idempotency_key=idempotency_key, ref=ref)
    wanted = list(dict.fromkeys(d for d in device_ids if isinstance(d, str) and DEVICE_ID_RE.fullmatch(d)))
    enabled = dict(devices_visible_to(user).filter(pk__in=wanted).values_list("id", "enabled"))
    refused = {str(d)[:80]: "unknown_device" for d in device_ids if d not in enabled}
    refused.update({d: "device_disabled" for d, on in enabled.items() if not on})
    targets = [d for d in wanted if enabled.get(d)]
    key = fields["idempotency_key"]
    for attempt in range(2):
        existing = ({c.device_id: c for c in Command.objects.filter(device_id__in=targets, idempotency_key=key)}
                    if key is not None else {})
        now = timezone.now()
        new = [_queued(user, device_id, fields, now) for device_id in targets if device_id not in existing]
        try:
            with transaction.atomic():
                commands_insert(new)
        except IntegrityError:
            if key is None or attempt:
                raise
            continue  # another issue with this key stored some first: take theirs, store the rest
        created = {c.device_id: c for c in new}
        return [existing.get(d) or created[d] for d in targets], refused
    raise AssertionError("unreachable")


def _queued(user: User, device_id: str, fields: dict, now: datetime) -> Command:
    """A new `queued` command from checked fields (core.wire.command_fields), not yet saved."""
    return Command(
        id=uuid.uuid4(), device_id=device_id, issued_by=user, name=fields["name"], params=fields["params"],
        oneway=fields["oneway"], timeout=fields["timeout"], idempotency_key=fields["idempotency_key"],
        ref=fields["ref"], status=Command.QUEUED, created_at=now, updated_at=now,
        expires_at=now + timedelta(seconds=fields["expires_in"]),
        history=[{"status": Command.QUEUED, "at": format_ts(now)}],
    )


def command_cancel(*, user: User, command_id: uuid.UUID | str) -> Command:
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
    transports: Iterable[str] | None = None,
) -> list[Command]:
    """Lease queued, unexpired commands of online devices to one bridge for publishing.

    Rows another bridge is locking are skipped, and so are live leases of other bridges:
    each command is published by one bridge at a time. The owner's own stale leases
    (from before a restart) are taken back, minus `exclude` (its publishes in flight).
    With `transports`, only devices last seen on one of them (`Device.transport`; "" is a device
    never seen yet) are claimed: a command goes out on the transport its device was last heard on.
    """
    now = timezone.now()
    if connection.vendor == "postgresql":
        until = now + timedelta(seconds=lease)
        with transaction.atomic():
            commands = commands_claim(owner=owner, now=now, until=until,
                                      device_ids=None if device_ids is None else list(device_ids),
                                      exclude=list(exclude), limit=limit,
                                      transports=None if transports is None else list(transports))
            _expect_answers(commands, until)
        return commands
    free = Q(lease_until__isnull=True) | Q(lease_until__lt=now) | Q(lease_owner=owner)
    with transaction.atomic():
        qs = (
            Command.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(free, status=Command.QUEUED, expires_at__gt=now, device__online=True, device__enabled=True)
            .exclude(pk__in=list(exclude))
        )
        if device_ids is not None:
            qs = qs.filter(device_id__in=list(device_ids))
        if transports is not None:
            qs = qs.filter(device__transport__in=list(transports))
        commands = list(qs.order_by("created_at")[:limit])
        if commands:
            until = now + timedelta(seconds=lease)
            Command.objects.filter(pk__in=[c.pk for c in commands]).update(lease_owner=owner, lease_until=until)
            for command in commands:
                command.lease_owner, command.lease_until = owner, until
            _expect_answers(commands, until)
    return commands


def _expect_answers(commands: Iterable[Command], until: datetime) -> None:
    """Tell ingest, before any of these is published, until when their devices' id-less answers may be for them.

    The device rows are locked in id order, as ingest locks them: a claim and a batch of two bridges
    cannot deadlock. The horizon only grows; past it, no answer can find one of these commands sent.
    """
    horizon: dict[str, datetime] = {}
    for command in commands:
        if not command.oneway:
            at = until + timedelta(seconds=command.timeout)
            horizon[command.device_id] = max(at, horizon.get(command.device_id, at))
    if not horizon:
        return
    if connection.vendor == "postgresql":
        answers_expected(horizon)
        return
    devices = Device.objects.select_for_update().filter(pk__in=sorted(horizon)).order_by("pk").only("answer_until")
    later: dict[datetime, list[str]] = {}  # one statement per horizon (a fleet-wide command has one)
    for device in devices:
        if device.answer_until is None or device.answer_until < horizon[device.pk]:
            later.setdefault(horizon[device.pk], []).append(device.pk)
    for at, ids in later.items():
        Device.objects.filter(pk__in=ids).update(answer_until=at)


def command_lease_renew(*, owner: str, command_ids: Iterable[uuid.UUID], lease: float = COMMAND_LEASE_SECONDS) -> int:
    """Extend a bridge's leases on commands whose publish it still awaits."""
    until = timezone.now() + timedelta(seconds=lease)
    with transaction.atomic():
        renewed = list(Command.objects.select_for_update().filter(pk__in=list(command_ids), lease_owner=owner,
                                                                  status=Command.QUEUED).order_by("pk"))
        Command.objects.filter(pk__in=[c.pk for c in renewed]).update(lease_until=until)
        _expect_answers(renewed, until)
    return len(renewed)


def command_mark_sent(*, command_id: uuid.UUID) -> Command | None:
    """`queued` → `sent` once the broker acknowledged the publish; None when it had moved on already."""
    return command_mark_sent_many(command_ids=[command_id]).get(command_id)


# What a transition changes, for bulk_update.
TRANSITION_FIELDS = ["status", "updated_at", "history", "sent_at", "deadline", "finished_at", "lease_owner",
                     "lease_until"]


def command_mark_sent_many(*, command_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, Command]:
    """`queued` → `sent` for each of these still queued, in one transaction: the dispatcher's group commit."""
    now = timezone.now()
    with transaction.atomic():
        commands = list(Command.objects.select_for_update().filter(pk__in=list(command_ids), status=Command.QUEUED)
                        .order_by("pk"))  # one lock order for every batch: two bridges cannot deadlock
        for command in commands:
            _transition(command, Command.SENT, now)
        commands_write(commands, TRANSITION_FIELDS)
    return {command.id: command for command in commands}


def command_resolve(
    *, device_id: str, command_id: uuid.UUID | None, ok: bool, result: object = None, error: str = ""
) -> tuple[Command | None, str | None]:
    """Apply a device's response: (the command if it changed, the reason the response was ignored).

    Without a command id (a firmware that echoes none, docs/profiles.md) it answers the device's oldest
    two-way command that is `sent`; with none such it changes nothing (`response_unmatched`).
    """
    return command_resolve_many([(device_id, CommandResponse(command_id, ok, result, error))])[0]


def command_resolve_many(
    responses: Sequence[tuple[str, CommandResponse]],
) -> list[tuple[Command | None, str | None]]:
    """Apply a batch's responses in order, in one transaction; per response what command_resolve returns.

    Id-less answers of one device take its waiting commands oldest first, one each.
    """
    now = timezone.now()
    outcomes: list[tuple[Command | None, str | None]] = []
    with transaction.atomic():
        ids = sorted({r.command_id for _, r in responses if r.command_id is not None})
        locked = {c.id: c for c in Command.objects.select_for_update().filter(pk__in=ids).order_by("pk")}
        waiting = {device_id: [locked.get(c.id, c) for c in commands]  # one object per row
                   for device_id, commands in _waiting_oldest_first(
                       {device_id for device_id, r in responses if r.command_id is None}).items()}
        changed: dict[uuid.UUID, Command] = {}
        for device_id, response in responses:
            if response.command_id is None:
                command = next((c for c in waiting.get(device_id, ()) if c.status in (Command.QUEUED, Command.SENT)),
                               None)
                if command is None:
                    outcomes.append((None, "response_unmatched"))
                    continue
            else:
                command = locked.get(response.command_id)
            outcome = _apply(command, device_id, response, now)
            if outcome[0] is not None:
                changed[outcome[0].id] = outcome[0]
            outcomes.append(outcome)
        commands_write(list(changed.values()), [*TRANSITION_FIELDS, "result", "error"])
    return outcomes


def _waiting_oldest_first(device_ids: set[str]) -> dict[str, list[Command]]:
    """Two-way commands an id-less answer may be for, per device, locked, oldest first."""
    if not device_ids:
        return {}
    # `sent`, or being delivered (leased): the device may answer before the broker's PUBACK is recorded.
    waiting = Q(status=Command.SENT) | Q(status=Command.QUEUED, lease_until__isnull=False)
    found: dict[str, list[Command]] = {}
    for command in (Command.objects.select_for_update().filter(waiting, device_id__in=sorted(device_ids),
                                                               oneway=False).order_by("created_at", "pk")):
        found.setdefault(command.device_id, []).append(command)
    return found


def _apply(command: Command | None, device_id: str, response: CommandResponse,
           now: datetime) -> tuple[Command | None, str | None]:
    """One response on a locked command (changed in memory); the caller saves what changed."""
    # A queued command never leased was never published: the device cannot know its id.
    if command is None or (command.status == Command.QUEUED and command.lease_until is None):
        return None, "response_unknown"
    if command.device_id != device_id:
        return None, "response_wrong_device"
    changed = False
    if command.status == Command.QUEUED:
        # The device answered before the broker's PUBACK was recorded: it was sent.
        _transition(command, Command.SENT, now)
        changed = True
    if command.status == Command.SENT and not command.oneway:
        _transition(command, Command.SUCCEEDED if response.ok else Command.FAILED, now)
        command.result, command.error = response.result, response.error
        changed = True
    if not changed:
        return None, "response_finished"
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
        commands_write(commands, ["status", "updated_at", "history", "finished_at", "error", "lease_owner",
                                  "lease_until"])
    return commands
