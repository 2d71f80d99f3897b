"""Creating channels and subscriptions, validated: what the admin, the API and the shell may store."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit

import apprise
from django.contrib.auth.models import Group, User
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction

from core.errors import Conflict, PayloadInvalid
from core.payloads import storable_text
from devices.models import Device
from notify.models import KINDS, SEVERITIES, Channel, Subscription
from notify.signing import new_secret

MAX_TARGET = 2000
MAX_ADDRESSES = 50
MAX_REPEAT = 7 * 86400
MAX_QUIET = 86400  # closed keys are forgotten after a day (services.reminders_sweep)
# With an allow-list of hosts, only Apprise's generic webhook plugins may be used: their host is the URL's.
GENERIC_APPRISE = ("json", "jsons", "xml", "xmls", "form", "forms")


def _bad(message: str) -> PayloadInvalid:
    return PayloadInvalid("bad_request", message)


def _text(what: str, value: str, most: int, *, required: bool = True) -> str:
    if not isinstance(value, str) or not storable_text(value) or len(value) > most or (required and not value.strip()):
        raise _bad(f"{what} must be text of 1 to {most} characters without NUL")
    return value.strip()


def host_allowed(host: str, allowed: Sequence[str]) -> bool:
    """Whether a target host is in the allow-list (glob patterns, e.g. `*.example.com`); an empty list allows all."""
    return not allowed or any(fnmatch.fnmatchcase(host.lower(), pattern.lower()) for pattern in allowed)


def target_refusal(kind: str, target: str, *, allowed_hosts: Sequence[str] = ()) -> str | None:
    """Why this channel target cannot be used, or None."""
    try:
        return _target_refusal(kind, target, allowed_hosts)
    except ValueError:  # urlsplit: e.g. an unclosed IPv6 bracket
        return "not a URL"


def _target_refusal(kind: str, target: str, allowed_hosts: Sequence[str]) -> str | None:
    if kind == Channel.WEBHOOK:
        parts = urlsplit(target)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return "a webhook target is an http:// or https:// URL"
        return None if host_allowed(parts.hostname, allowed_hosts) else f"host {parts.hostname} is not allowed"
    if kind == Channel.EMAIL:
        addresses = [a.strip() for a in target.split(",") if a.strip()]
        if not addresses or len(addresses) > MAX_ADDRESSES:
            return f"an e-mail target is 1 to {MAX_ADDRESSES} comma-separated addresses"
        for address in addresses:
            try:
                validate_email(address)
            except ValidationError:
                return f"not an e-mail address: {address[:100]}"
        return None
    if not apprise.Apprise().add(target):  # parses the URL only, no network
        return "Apprise does not understand this URL (see its wiki for each service's form)"
    if allowed_hosts:
        parts = urlsplit(target)
        if parts.scheme.lower() not in GENERIC_APPRISE or not host_allowed(parts.hostname or "", allowed_hosts):
            return "with IOTGW_NOTIFY_HOSTS set, only json://, xml:// or form:// to an allowed host"
    return None


def channel_create(*, name: str, kind: str, target: str, secret: str | None = None, enabled: bool = True,
                   allowed_hosts: Sequence[str] = ()) -> Channel:
    """A new channel; a webhook without a secret gets a random one (the caller shows it once)."""
    name = _text("name", name, 100)
    if kind not in dict(Channel.KINDS):
        raise _bad("kind must be webhook, email or apprise")
    target = _text("target", target, MAX_TARGET)
    if why := target_refusal(kind, target, allowed_hosts=allowed_hosts):
        raise _bad(why)
    if kind == Channel.WEBHOOK:
        secret = _text("secret", secret, 128) if secret else new_secret()
    elif secret:
        raise _bad("only a webhook has a secret")
    try:
        with transaction.atomic():
            return Channel.objects.create(name=name, kind=kind, target=target, secret=secret or "", enabled=enabled)
    except IntegrityError:
        raise Conflict(f"a channel named {name!r} exists already") from None


def subscription_create(*, channel_id: int, user: str | None = None, group: str | None = None,
                        min_severity: str = "warning", scope: str = Subscription.ALL, devices: Iterable[str] = (),
                        device_group: str | None = None, kinds: Iterable[str] = (), repeat_every: int | None = None,
                        quiet_period: int = 0, enabled: bool = True) -> Subscription:
    """A user's or a group's subscription to one channel."""
    channel = Channel.objects.filter(pk=channel_id).first() if 0 < channel_id < 2**63 else None
    if channel is None:
        raise _bad(f"no channel {channel_id}")
    if (user is None) == (group is None):
        raise _bad("a subscription is a user's or a group's: give exactly one of user and group")
    owner = _user(user) if user is not None else None
    owner_group = _group(group, "group") if group is not None else None
    if min_severity not in SEVERITIES:
        raise _bad(f"min_severity must be one of {', '.join(SEVERITIES)}")
    kinds = list(dict.fromkeys(kinds))
    if not set(kinds) <= set(KINDS) - {"test"}:
        raise _bad("kinds are among raised, acknowledged, cleared, retriggered, reminder")
    if repeat_every is not None and not 1 <= repeat_every <= MAX_REPEAT:
        raise _bad(f"repeat_every is 1 to {MAX_REPEAT} seconds, or null")
    if not 0 <= quiet_period <= MAX_QUIET:
        raise _bad(f"quiet_period is 0 to {MAX_QUIET} seconds")
    listed, by_group = _device_set(scope, list(devices), device_group)
    with transaction.atomic():
        sub = Subscription.objects.create(channel=channel, user=owner, group=owner_group, min_severity=min_severity,
                                          scope=scope, device_group=by_group, kinds=kinds,
                                          repeat_every=repeat_every, quiet_period=quiet_period, enabled=enabled)
        sub.devices.set(listed)
    return sub


def _device_set(scope: str, devices: list[str], device_group: str | None) -> tuple[list[Device], Group | None]:
    if scope not in dict(Subscription.SCOPES):
        raise _bad("scope is all, devices or group")
    if (scope == Subscription.DEVICES) != bool(devices) or (scope == Subscription.GROUP) != (device_group is not None):
        raise _bad("scope `devices` takes a list of devices, scope `group` a device_group, scope `all` neither")
    listed = []
    if devices:
        if len(devices) > 10_000 or not all(isinstance(d, str) and storable_text(d) for d in devices):
            raise _bad("devices is a list of at most 10000 device ids")
        listed = list(Device.objects.filter(pk__in=devices))
        if missing := set(devices) - {d.pk for d in listed}:
            raise _bad(f"no such device: {sorted(missing)[0][:80]}")
    return listed, _group(device_group, "device_group") if device_group is not None else None


def _findable(value: str) -> bool:
    return isinstance(value, str) and storable_text(value) and len(value) <= 150


def _user(name: str) -> User:
    found = User.objects.filter(username=name).first() if _findable(name) else None
    if found is None:
        raise _bad(f"no user named {name[:80]!r}")
    return found


def _group(name: str, what: str) -> Group:
    found = Group.objects.filter(name=name).first() if _findable(name) else None
    if found is None:
        raise _bad(f"no {what} named {name[:80]!r}")
    return found
