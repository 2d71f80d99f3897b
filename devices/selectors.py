"""The domain's reads: who may see what, device snapshots, tokens and sockets, history, commands, bridges."""

from __future__ import annotations

import hmac
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import import_module
from typing import Any

from django.conf import settings
from django.contrib.auth import SESSION_KEY, get_user_model
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db.models import Q, QuerySet
from django.utils import timezone

from core.errors import CommandUnknown, NotAuthorized, PayloadInvalid
from core.ids import DEVICE_ID_RE
from core.profiles import IOTGW, Codec, Directory, Grants, IotgwCodec, Limits, Member, ProfileDef, compile_profile
from core.profilespec import parse_spec
from core.times import format_ts
from devices.models import ApiToken, BridgeHeartbeat, Command, Device, DeviceMetric, DeviceProfile, Telemetry
from devices.secrets import TOKEN_PREFIX, secret_hash


def devices_visible_to(user: User) -> QuerySet[Device]:
    """Devices a user may see and command: owned, sharing a group, or all for staff."""
    if not user.is_authenticated or not user.is_active:
        return Device.objects.none()
    if user.is_staff:
        return Device.objects.all()
    return Device.objects.filter(Q(owner=user) | Q(groups__in=user.groups.all())).distinct()


def devices_page(*, user: User, after: str | None, limit: int) -> list[Device]:
    """Up to `limit` + 1 visible devices ordered by id, after `after` (the one extra says a next page exists)."""
    qs = devices_visible_to(user).order_by("pk")
    if after is not None:
        qs = qs.filter(pk__gt=after)
    return list(qs[: limit + 1])


def device_ids_visible_to(user: User, wanted: Iterable[str] | None = None) -> set[str]:
    """The ids among `wanted` (or all) that the user may see."""
    qs = devices_visible_to(user)
    if wanted is not None:
        qs = qs.filter(pk__in=list(wanted))
    return set(qs.values_list("pk", flat=True))


def device_subscription(user: User, wanted: list[str] | str) -> tuple[set[str], bool, list[str]]:
    """For a subscribe request: (visible ids, everything?, the other ids, in the order asked).

    A device the user may not see is reported exactly like one that does not exist.
    """
    if wanted == "*":
        return device_ids_visible_to(user), bool(user.is_staff), []
    visible = device_ids_visible_to(user, wanted)
    return visible, False, [d for d in wanted if d not in visible]


def device_snapshots_visible_to(user: User) -> list[dict[str, Any]]:
    """The snapshot of every device a user may see."""
    return device_snapshots(device_ids_visible_to(user))


def device_snapshots(device_ids: Iterable[str]) -> list[dict[str, Any]]:
    """Current state of devices as the snapshot frame shows them."""
    rows = Device.objects.filter(pk__in=list(device_ids)).order_by("pk")
    return [device_state(d) for d in rows]


def device_state(device: Device) -> dict[str, Any]:
    """One device's public state: id, name, online, last_seen, the transport it was last seen on, latest values."""
    return {
        "id": device.id,
        "name": device.name,
        "online": device.online,
        "last_seen": format_ts(device.last_seen) if device.last_seen else None,
        "transport": device.transport or None,
        "latest": {name: m["value"] for name, m in device.latest.items()},
        "latest_ts": {name: m["ts"] for name, m in device.latest.items()},
    }


def device_metrics(device: Device) -> dict[str, dict[str, str]]:
    """Label, unit, device class and source of the device's metrics: its profile's declarations for the metrics it
    sends, overridden by its own rows (discovery, or set by hand)."""
    out: dict[str, dict[str, str]] = {}
    profile = DeviceProfile.objects.filter(name=device.profile_id).first() if device.profile_id else None
    if profile is not None and profile.kind == "rules" and profile.spec.get("metrics"):
        try:
            declared = parse_spec(profile.spec).metric_specs(device.latest)
        except PayloadInvalid:
            declared = {}
        for name, spec in declared.items():
            out[name] = {"label": spec.label, "unit": spec.unit, "device_class": "", "source": DeviceMetric.PROFILE}
    for row in DeviceMetric.objects.filter(device=device):
        out[row.name] = {"label": row.label, "unit": row.unit, "device_class": row.device_class, "source": row.source}
    return out


def token_lookup(key: str) -> ApiToken | None:
    """The unrevoked API token of an active user with that key, or None."""
    if not key.startswith(TOKEN_PREFIX):
        return None
    token = (
        ApiToken.objects.select_related("user")
        .filter(key_hash=secret_hash(key), revoked_at__isnull=True)
        .first()
    )
    if token is None or not token.user.is_active:
        return None
    return token


def token_user(key: str) -> User | None:
    """The active user behind an unrevoked API token, or None."""
    token = token_lookup(key)
    return token.user if token is not None else None


def socket_credentials_valid(*, user_id: int, token_id: int | None, session_key: str | None) -> bool:
    """Whether an open socket's credentials still hold: user active, and token unrevoked or session alive."""
    if not get_user_model().objects.filter(pk=user_id, is_active=True).exists():
        return False
    if token_id is not None:
        return ApiToken.objects.filter(pk=token_id, user_id=user_id, revoked_at__isnull=True).exists()
    if not session_key:
        return False
    session = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    return str(session.get(SESSION_KEY, "")) == str(user_id)


def device_secret_ok(device_id: str, secret: str) -> bool:
    """True when the device exists, is enabled and the secret matches."""
    if not DEVICE_ID_RE.fullmatch(device_id):  # cannot exist, and a NUL would reach PostgreSQL
        return False
    device = Device.objects.filter(pk=device_id, enabled=True).only("secret_hash").first()
    return device is not None and hmac.compare_digest(device.secret_hash, secret_hash(secret))


def device_offline_after(device_id: str) -> int | None:
    """The device's own seconds of silence before it is marked offline (None: the gateway's default)."""
    return Device.objects.filter(pk=device_id).values_list("offline_after", flat=True).first()


def device_secret_hashes(device_ids: Iterable[str]) -> dict[str, str]:
    """The stored secret hashes of those devices that exist and are enabled (the CoAP edge checks secrets,
    and derives OSCORE keys, from them)."""
    ids = [d for d in device_ids if DEVICE_ID_RE.fullmatch(d)]
    return dict(Device.objects.filter(pk__in=ids, enabled=True).values_list("pk", "secret_hash"))


def command_status_of(*, device_id: str, command_id: uuid.UUID) -> str | None:
    """A command's status, if it is this device's (None: no such command of this device)."""
    return Command.objects.filter(pk=command_id, device_id=device_id).values_list("status", flat=True).first()


def telemetry_history(
    *,
    device_id: str,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 1000,
    after: datetime | None = None,
    metric: str | None = None,
) -> QuerySet[Telemetry]:
    """A device's samples ordered by ts, optionally bounded in time (`after` is exclusive, for paging)."""
    qs = Telemetry.objects.filter(device_id=device_id)
    if metric is not None:
        qs = qs.filter(data__has_key=metric)
    if after is not None:
        qs = qs.filter(ts__gt=after)
    if since is not None:
        qs = qs.filter(ts__gte=since)
    if until is not None:
        qs = qs.filter(ts__lt=until)
    return qs.order_by("ts")[:limit]


def command_get(*, user: User, command_id: uuid.UUID | str) -> Command:
    """A command on a device the user may see; CommandUnknown or NotAuthorized otherwise."""
    try:
        command = Command.objects.filter(pk=command_id).first()
    except ValidationError:
        command = None
    if command is None:
        raise CommandUnknown(f"no such command: {str(command_id)[:80]}")
    if not devices_visible_to(user).filter(pk=command.device_id).exists():
        raise NotAuthorized("not yours to see: that command's device")
    return command


def command_state(command: Command) -> dict[str, Any]:
    """A command as the API and the `command` frame show it (no queries)."""
    def ts(value: datetime | None) -> str | None:
        return format_ts(value) if value else None

    return {
        "id": str(command.id),
        "device": command.device_id,
        "name": command.name,
        "params": command.params,
        "status": command.status,
        "result": command.result,
        "error": command.error or None,
        "ref": command.ref,
        "oneway": command.oneway,
        "timeout": command.timeout,
        "idempotency_key": command.idempotency_key,
        "created_at": ts(command.created_at),
        "updated_at": ts(command.updated_at),
        "expires_at": ts(command.expires_at),
        "sent_at": ts(command.sent_at),
        "finished_at": ts(command.finished_at),
        "history": command.history,
    }


# --- bridges ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BridgeStatus:
    """A bridge as its heartbeat shows it; `live` while the heartbeat is fresh."""

    client_id: str
    beat_at: datetime
    connected: bool
    counters: dict[str, Any]
    live: bool


def bridge_fresh_after(now: datetime, *, heartbeat_seconds: float) -> datetime:
    """The one definition of a live bridge: a heartbeat newer than three beats ago (and 10 s at least)."""
    return now - timedelta(seconds=max(3 * heartbeat_seconds, 10))


def bridges_known(*, heartbeat_seconds: float, session_expiry: float) -> list[BridgeStatus]:
    """Every bridge whose broker session may still hold or collect messages, live or silent.

    A bridge that stopped beating keeps its persistent session until MQTT_SESSION_EXPIRY: the
    broker goes on queueing its share for it, stored by nobody until it returns or is retired
    (`manage.py dropsession`, which drains it and removes its heartbeat). `heartbeat_seconds` and
    `session_expiry` are IOTGW_HEARTBEAT_SECONDS and MQTT_SESSION_EXPIRY.
    """
    now = timezone.now()
    fresh = bridge_fresh_after(now, heartbeat_seconds=heartbeat_seconds)
    since = now - timedelta(seconds=session_expiry) - (now - fresh)
    return [BridgeStatus(b.client_id, b.beat_at, b.connected, b.counters, b.beat_at >= fresh)
            for b in BridgeHeartbeat.objects.filter(beat_at__gte=since).order_by("client_id")]


def profiles_snapshot() -> tuple[list[ProfileDef], Directory]:
    """Every profile, and which devices are on a profile other than the default (the bridge's routing table)."""
    profiles = [ProfileDef(name=p.name, kind=p.kind, spec=p.spec) for p in DeviceProfile.objects.all()]
    # profile_id holds the profile's name (to_field): no join.
    rows = (Device.objects.filter(profile__isnull=False).exclude(profile_id=IOTGW)  # type: ignore[misc]
            .values_list("id", "profile_id", "gateway_id", "child_name"))
    members = {device_id: Member(profile=str(profile), gateway=gateway, child=child or None)
               for device_id, profile, gateway, child in rows}
    return profiles, Directory.of(members)


def telemetry_samples(
    *,
    device_ids: Iterable[str],
    metrics: Iterable[str] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    page: int = 5000,
) -> Iterator[tuple[str, datetime, dict[str, Any]]]:
    """(device id, ts, data) of the devices' samples in (device, ts) order, only `metrics` when given.

    Read in keyset pages of `page` rows on the (device, ts) index, one query per page: memory stays
    flat however long the history, and no cursor or transaction stays open between pages (a
    server-side cursor held across a slow HTTP client would hold its snapshot for as long).
    """
    wanted = set(metrics) if metrics else None
    for device_id in sorted(set(device_ids)):
        qs = Telemetry.objects.filter(device_id=device_id)
        if since is not None:
            qs = qs.filter(ts__gte=since)
        if until is not None:
            qs = qs.filter(ts__lt=until)
        if wanted:
            qs = qs.filter(data__has_any_keys=sorted(wanted))
        after: datetime | None = None
        while True:
            pages = qs if after is None else qs.filter(ts__gt=after)
            rows = list(pages.order_by("ts").values_list("ts", "data")[:page])
            for ts, data in rows:
                yield device_id, ts, data if wanted is None else {k: v for k, v in data.items() if k in wanted}
            if len(rows) < page:
                break
            after = rows[-1][0]


_codecs: dict[tuple[str, str, str], Codec] = {}  # (name, kind, updated_at) → the compiled profile, for the broker hooks
_CODECS_KEPT = 256


def device_grants(device_id: str) -> Grants | None:
    """What an enabled device may do on the broker, by its profile (docs/profiles.md); None: unknown or disabled."""
    device = (Device.objects.filter(pk=device_id, enabled=True).select_related("profile")
              .only("id", "gateway_id", "child_name", "profile").first())
    if device is None:
        return None
    member = Member(profile=device.profile_id or IOTGW, gateway=device.gateway_id,
                    child=device.child_name or None)
    profile = device.profile
    if profile is None:
        return IotgwCodec(ProfileDef(IOTGW, IOTGW, {}), Limits()).grants(device_id, member)
    key = (profile.name, profile.kind, profile.updated_at.isoformat())
    codec = _codecs.get(key)
    if codec is None:
        try:
            codec = compile_profile(ProfileDef(profile.name, profile.kind, profile.spec))
        except PayloadInvalid:
            return Grants()  # a profile that does not compile grants nothing
        if len(_codecs) >= _CODECS_KEPT:
            _codecs.clear()
        _codecs[key] = codec
    return codec.grants(device_id, member)
