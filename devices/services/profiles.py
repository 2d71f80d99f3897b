"""Writes of device profiles (docs/profiles.md): validated when saved, the built-ins installed, devices assigned."""

from __future__ import annotations

import re
from typing import Any

from django.db import IntegrityError, transaction

from core.errors import Conflict, DeviceUnknown, PayloadInvalid, ProfileUnknown
from core.ids import child_device_id
from core.payloads import storable_text
from core.profiles import IOTGW, ProfileDef, compile_profile
from devices import signals
from devices.builtin_profiles import BUILTIN
from devices.models import Device, DeviceProfile
from devices.services.devices import device_register

NAME_RE = r"^[a-z0-9][a-z0-9_-]{0,63}$"


def profile_check(*, name: str, kind: str, spec: Any) -> None:
    """Compile a profile as the bridge would; PayloadInvalid (`bad_profile`) says what is wrong."""
    if not isinstance(name, str) or not re.fullmatch(NAME_RE, name):
        raise PayloadInvalid("bad_profile", f"profile name must match {NAME_RE}")
    if not isinstance(spec, dict):
        raise PayloadInvalid("bad_profile", "a profile's spec is a JSON object")
    compile_profile(ProfileDef(name=name, kind=kind, spec=spec))


def profile_save(*, name: str, kind: str = "rules", spec: dict[str, Any], description: str = "",
                 create: bool = True) -> DeviceProfile:
    """Create (or, with create=False, replace) a custom profile; built-ins are not changed here."""
    profile_check(name=name, kind=kind, spec=spec)
    existing = DeviceProfile.objects.filter(name=name).first()
    if existing is not None and (create or existing.builtin):
        raise Conflict(f"profile {name!r} exists" + (" and is built in" if existing.builtin else ""))
    if existing is None and not create:
        raise ProfileUnknown(f"profile {name!r} does not exist")
    profile = existing or DeviceProfile(name=name)
    profile.kind, profile.spec, profile.description = kind, spec, description
    try:
        profile.save()
    except IntegrityError:
        raise Conflict(f"profile {name!r} exists") from None
    return profile


def profile_delete(*, name: str) -> None:
    """Delete a custom profile no device uses."""
    profile = DeviceProfile.objects.filter(name=name).first()
    if profile is None:
        raise ProfileUnknown(f"profile {name!r} does not exist")
    if profile.builtin:
        raise Conflict(f"profile {name!r} is built in")
    if profile.devices.exists():
        raise Conflict(f"profile {name!r} is used by devices")
    profile.delete()


def profiles_install_builtin() -> int:
    """Create or refresh the built-in profiles from devices/builtin_profiles.py; how many changed."""
    changed = 0
    with transaction.atomic():
        for name, (kind, description, spec) in BUILTIN.items():
            row = DeviceProfile.objects.filter(name=name).first()
            if row is not None and (row.kind, row.description, row.spec, row.builtin) == (kind, description, spec,
                                                                                          True):
                continue
            DeviceProfile.objects.update_or_create(
                name=name, defaults={"kind": kind, "description": description, "spec": spec, "builtin": True})
            changed += 1
    return changed


def device_set_profile(*, device_id: str, profile: str) -> Device:
    """Put a device on a profile (`iotgw`: the default); the bridges follow within IOTGW_PROFILE_REFRESH."""
    device = Device.objects.filter(pk=device_id).first()
    if device is None:
        raise DeviceUnknown(f"device {device_id!r} is not registered")
    if profile != IOTGW and not DeviceProfile.objects.filter(name=profile).exists():
        if profile in BUILTIN:
            profiles_install_builtin()
        else:
            raise PayloadInvalid("bad_request", f"profile {profile!r} does not exist")
    with transaction.atomic():
        device.profile_id = None if profile == IOTGW else profile
        device.save(update_fields=["profile"])
        device.children.update(profile_id=device.profile_id)  # a gateway's children speak its dialect
        signals.send_on_commit(signals.device_profile_changed, device_id=device_id)
    return device


def device_register_child(*, gateway_id: str, child_name: str, name: str = "") -> Device:
    """Register a gateway's child (docs/profiles.md): its id derived from the gateway's and its own name."""
    gateway = Device.objects.filter(pk=gateway_id).first()
    if gateway is None:
        raise DeviceUnknown(f"device {gateway_id!r} is not registered")
    if gateway.gateway_id is not None:
        raise PayloadInvalid("bad_request", f"device {gateway_id!r} is a child itself")
    if not isinstance(child_name, str) or not child_name or len(child_name) > 200 or not storable_text(child_name):
        raise PayloadInvalid("bad_request", "a child's name is 1..200 characters")
    child_id = child_device_id(gateway_id, child_name)
    with transaction.atomic():
        device, _ = device_register(device_id=child_id, name=name or child_name, owner=gateway.owner,
                                    groups=list(gateway.groups.values_list("name", flat=True)))
        device.gateway, device.child_name, device.profile_id = gateway, child_name, gateway.profile_id
        device.save(update_fields=["gateway", "child_name", "profile"])
    return device
